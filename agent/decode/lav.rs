//! In-process software decoding with libavcodec (`decoder = "libavcodec"`).
//!
//! The GStreamer software path (`avdec_*`) keeps two pools of whole frames per
//! stream — libav's reference pictures, and a second pool it copies every
//! decoded picture into for downstream — ~11 frames of a 720p stream in all.
//! Here libavcodec keeps only its reference pictures; the decode thread looks
//! at each picture in place, and only the frames due at the camera's
//! `detect_fps` are copied out. Measured on 720p25 H.264: see README, bench.
//!
//! One thread per camera session, fed through a byte-counted queue so the
//! ingest side sees how far behind the decoder is, like `appsrc`.

use std::collections::VecDeque;
use std::ffi::{CStr, c_char, c_int};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::SystemTime;

use super::{Codec, DecodeError, Frame, FrameCounters, FrameSelector};

/// The name this decoder has in `decoder` / `decoders` and in logs.
pub const NAME: &str = "libavcodec";

#[repr(C)]
struct RawDecoder {
    _private: [u8; 0],
}

#[repr(C)]
struct RawFrame {
    width: c_int,
    height: c_int,
    format: c_int,
    format_name: *const c_char,
    data: [*const u8; 3],
    linesize: [c_int; 3],
    pts: i64,
    corrupt: c_int,
}

unsafe extern "C" {
    fn ioc_lav_open(hevc: c_int, threads: c_int, err: *mut c_char, len: c_int) -> *mut RawDecoder;
    fn ioc_lav_send(d: *mut RawDecoder, data: *const u8, len: c_int, pts: i64) -> c_int;
    fn ioc_lav_skip_nonref(d: *mut RawDecoder, on: c_int);
    fn ioc_lav_receive(d: *mut RawDecoder, out: *mut RawFrame) -> c_int;
    fn ioc_lav_strerror(code: c_int, buf: *mut c_char, len: c_int);
    fn ioc_lav_is_invalid_data(code: c_int) -> c_int;
    fn ioc_lav_is_again(code: c_int) -> c_int;
    fn ioc_lav_close(d: *mut RawDecoder);
}

fn av_error(code: c_int) -> String {
    let mut buf = [0 as c_char; 128];
    // SAFETY: the buffer is writable for its length; the C side NUL-terminates.
    unsafe {
        ioc_lav_strerror(code, buf.as_mut_ptr(), buf.len() as c_int);
        CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
    }
}

/// One libavcodec decoder context; only ever used by one thread at a time.
struct Context(*mut RawDecoder);

// SAFETY: an AVCodecContext may move between threads; it is never shared.
unsafe impl Send for Context {}

impl Context {
    fn open(codec: Codec, threads: u32) -> Result<Context, String> {
        let mut err = [0 as c_char; 256];
        // SAFETY: plain constructor; `err` is writable for its length.
        let d = unsafe {
            ioc_lav_open(
                (codec == Codec::H265) as c_int,
                threads.clamp(1, 16) as c_int,
                err.as_mut_ptr(),
                err.len() as c_int,
            )
        };
        if d.is_null() {
            // SAFETY: the C side wrote a NUL-terminated message.
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) };
            return Err(msg.to_string_lossy().into_owned());
        }
        Ok(Context(d))
    }

    /// Whether the next access units' non-reference pictures are decoded.
    fn skip_nonref(&mut self, on: bool) {
        // SAFETY: the context is open; the call sets one field.
        unsafe { ioc_lav_skip_nonref(self.0, c_int::from(on)) }
    }

    /// Sends one access unit; `Ok(false)` when libavcodec wants frames taken first.
    fn send(&mut self, data: &[u8], pts: i64) -> Result<bool, c_int> {
        let len = c_int::try_from(data.len()).map_err(|_| -22)?;
        // SAFETY: `data` is valid for `len` bytes; the C side copies it.
        let r = unsafe { ioc_lav_send(self.0, data.as_ptr(), len, pts) };
        match r {
            0 => Ok(true),
            // SAFETY: pure function of the code.
            r if unsafe { ioc_lav_is_again(r) } != 0 => Ok(false),
            r => Err(r),
        }
    }

    /// The next decoded picture, borrowed until the next call.
    fn receive(&mut self) -> Result<Option<Picture<'_>>, c_int> {
        let mut f = RawFrame {
            width: 0,
            height: 0,
            format: -1,
            format_name: std::ptr::null(),
            data: [std::ptr::null(); 3],
            linesize: [0; 3],
            pts: 0,
            corrupt: 0,
        };
        // SAFETY: `f` is a valid out-parameter; the views in it stay valid
        // until the next call on this context, which `&mut self` prevents.
        match unsafe { ioc_lav_receive(self.0, &mut f) } {
            1 => Ok(Some(Picture {
                raw: f,
                _ctx: std::marker::PhantomData,
            })),
            0 => Ok(None),
            r => Err(r),
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the pointer came from ioc_lav_open and is closed once.
        unsafe { ioc_lav_close(self.0) }
    }
}

/// A decoded picture owned by libavcodec.
struct Picture<'a> {
    raw: RawFrame,
    _ctx: std::marker::PhantomData<&'a mut Context>,
}

impl Picture<'_> {
    fn format_name(&self) -> String {
        if self.raw.format_name.is_null() {
            return "unknown".into();
        }
        // SAFETY: libavutil returns a static NUL-terminated name.
        unsafe { CStr::from_ptr(self.raw.format_name) }
            .to_string_lossy()
            .into_owned()
    }

    /// Copies the picture into a packed I420 frame (None unless 8-bit 4:2:0).
    fn to_frame(&self, pts: f64, wall: SystemTime) -> Option<Frame> {
        let r = &self.raw;
        if r.format != 0 || r.width <= 0 || r.height <= 0 {
            return None;
        }
        let (w, h) = (r.width as usize, r.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut planes: [&[u8]; 3] = [&[]; 3];
        let mut strides = [0usize; 3];
        for (p, rows) in [h, ch, ch].into_iter().enumerate() {
            let stride = usize::try_from(r.linesize[p]).ok()?;
            if r.data[p].is_null() || stride == 0 {
                return None;
            }
            let len = stride * (rows - 1) + if p == 0 { w } else { cw };
            // SAFETY: libavcodec's plane p holds `rows` rows of `stride`
            // bytes (the last at least the visible width), alive while self is.
            planes[p] = unsafe { std::slice::from_raw_parts(r.data[p], len) };
            strides[p] = stride;
        }
        Frame::from_planes(
            r.width as u32,
            r.height as u32,
            [
                (planes[0], strides[0]),
                (planes[1], strides[1]),
                (planes[2], strides[2]),
            ],
            pts,
            wall,
        )
    }
}

struct Unit {
    data: Vec<u8>,
    pts_ns: u64,
    wall: SystemTime,
}

#[derive(Default)]
struct Queue {
    units: VecDeque<Unit>,
    bytes: u64,
    closed: bool,
    error: Option<String>,
}

struct Shared {
    q: Mutex<Queue>,
    cv: Condvar,
}

/// A running libavcodec decoder for one camera session.
pub struct LavDecoder {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Consecutive undecodable access units after which the session restarts
/// (the next decoder in the ranking is tried).
const MAX_BAD_UNITS: u32 = 50;

impl LavDecoder {
    /// Opens the decoder and starts its thread; `on_frame` gets the frames due
    /// at `fps`, on that thread.
    pub fn start(
        codec: Codec,
        fps: f64,
        threads: u32,
        counters: Arc<FrameCounters>,
        mut on_frame: impl FnMut(Frame) + Send + 'static,
    ) -> Result<LavDecoder, DecodeError> {
        // IOC_LAV_SKIP_NONREF=0 decodes every picture: only to measure what
        // skipping saves (docs: Performance).
        let skip = std::env::var("IOC_LAV_SKIP_NONREF").as_deref() != Ok("0");
        let mut ctx = Context::open(codec, threads).map_err(|message| DecodeError::Runtime {
            decoder: NAME.into(),
            message,
        })?;
        let shared = Arc::new(Shared {
            q: Mutex::new(Queue::default()),
            cv: Condvar::new(),
        });
        let sh = shared.clone();
        let nice = super::decode_nice();
        // The camera's span, so the thread's warnings name the camera.
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new()
            .name("libavcodec".into())
            .spawn(move || {
                let _camera = span.enter();
                if nice > 0 {
                    super::lower_thread_priority(nice);
                }
                let mut selector = FrameSelector::new(fps);
                let mut walls: VecDeque<(i64, SystemTime)> = VecDeque::new();
                let mut bad = 0u32;
                let fail = |msg: String| {
                    if let Ok(mut q) = sh.q.lock() {
                        q.error.get_or_insert(msg);
                    }
                };
                loop {
                    let unit = {
                        let Ok(mut q) = sh.q.lock() else { return };
                        loop {
                            if q.closed {
                                return;
                            }
                            if let Some(u) = q.units.pop_front() {
                                q.bytes -= u.data.len() as u64;
                                break u;
                            }
                            q = match sh.cv.wait(q) {
                                Ok(q) => q,
                                Err(_) => return,
                            };
                        }
                    };
                    let pts = unit.pts_ns as i64;
                    walls.push_back((pts, unit.wall));
                    while walls.len() > 64 {
                        walls.pop_front();
                    }
                    // A picture presented before the next frame due is
                    // never handed on: if nothing refers to it either,
                    // libavcodec need not decode it (B pictures of IP
                    // cameras and encoders: most of the frames of a stream
                    // watched at a few frames a second).
                    ctx.skip_nonref(skip && selector.not_due(pts.max(0) as f64 / 1e9));
                    let mut sent = false;
                    while !sent {
                        sent = match ctx.send(&unit.data, pts) {
                            Ok(true) => {
                                bad = 0;
                                true
                            }
                            Ok(false) => false,
                            // Damaged data (lost packets): skipped, as avdec does,
                            // unless nothing decodes any more.
                            // SAFETY: pure function of the code.
                            Err(r) if unsafe { ioc_lav_is_invalid_data(r) } != 0 => {
                                bad += 1;
                                counters.corrupt.fetch_add(1, Ordering::Relaxed);
                                if bad >= MAX_BAD_UNITS {
                                    return fail(format!(
                                        "{bad} access units in a row could not be decoded: {}",
                                        av_error(r)
                                    ));
                                }
                                true
                            }
                            Err(r) => return fail(av_error(r)),
                        };
                        loop {
                            let pic = match ctx.receive() {
                                Ok(Some(p)) => p,
                                Ok(None) => break,
                                // SAFETY: pure function of the code.
                                Err(r) if unsafe { ioc_lav_is_invalid_data(r) } != 0 => break,
                                Err(r) => return fail(av_error(r)),
                            };
                            counters.decoded.fetch_add(1, Ordering::Relaxed);
                            if pic.raw.corrupt != 0 {
                                let n = counters.corrupt.fetch_add(1, Ordering::Relaxed) + 1;
                                if n.is_power_of_two() {
                                    tracing::warn!(corrupt_total = n, "damaged video: the decoder concealed errors in a picture (lost packets or a corrupt stream)");
                                }
                            }
                            let p_ns = pic.raw.pts;
                            let secs = p_ns.max(0) as f64 / 1e9;
                            if !selector.due(secs) {
                                counters.skipped_rate.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            let wall = walls
                                .iter()
                                .position(|(p, _)| *p == p_ns)
                                .and_then(|i| walls.remove(i))
                                .map(|(_, w)| w)
                                .unwrap_or_else(SystemTime::now);
                            match pic.to_frame(secs, wall) {
                                Some(f) => on_frame(f),
                                None => {
                                    return fail(format!(
                                        "pictures are {} {}x{}; libavcodec here hands on 8-bit 4:2:0 only \
                                         — the next decoder in the ranking (avdec_*) converts the rest",
                                        pic.format_name(),
                                        pic.raw.width,
                                        pic.raw.height
                                    ));
                                }
                            }
                        }
                    }
                }
            })
            .map_err(|e| DecodeError::Pipeline(format!("cannot start the decode thread: {e}")))?;
        Ok(LavDecoder {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues one encoded access unit (Annex B).
    pub fn push(&self, data: &[u8], pts_ns: u64, wall: SystemTime) -> Result<(), DecodeError> {
        let mut q = self
            .shared
            .q
            .lock()
            .map_err(|_| DecodeError::Pipeline("decode queue poisoned".into()))?;
        if let Some(e) = &q.error {
            return Err(DecodeError::Runtime {
                decoder: NAME.into(),
                message: e.clone(),
            });
        }
        q.bytes += data.len() as u64;
        q.units.push_back(Unit {
            data: data.to_vec(),
            pts_ns,
            wall,
        });
        drop(q);
        self.shared.cv.notify_one();
        Ok(())
    }

    /// Seconds of video waiting in front of the decoder.
    pub fn backlog_secs(&self) -> f64 {
        let Ok(q) = self.shared.q.lock() else {
            return 0.0;
        };
        match (q.units.front(), q.units.back()) {
            (Some(a), Some(b)) => b.pts_ns.saturating_sub(a.pts_ns) as f64 / 1e9,
            _ => 0.0,
        }
    }

    /// Bytes waiting in front of the decoder.
    pub fn backlog_bytes(&self) -> u64 {
        self.shared.q.lock().map(|q| q.bytes).unwrap_or(0)
    }

    /// The error that stopped the decoder, if any.
    pub fn poll_error(&self) -> Option<DecodeError> {
        let q = self.shared.q.lock().ok()?;
        q.error.as_ref().map(|e| DecodeError::Runtime {
            decoder: NAME.into(),
            message: e.clone(),
        })
    }
}

impl Drop for LavDecoder {
    fn drop(&mut self) {
        if let Ok(mut q) = self.shared.q.lock() {
            q.closed = true;
            q.units.clear();
        }
        self.shared.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Decodes access units flat out without copying any picture; returns how
/// many pictures came out. The bench's decode floor for this decoder.
pub fn decode_all(
    codec: Codec,
    threads: u32,
    each: impl FnOnce(&mut dyn FnMut(&[u8], u64)),
) -> Result<u64, String> {
    let mut ctx = Context::open(codec, threads)?;
    let mut frames = 0u64;
    let mut err = None;
    let drain = |ctx: &mut Context, frames: &mut u64| -> Result<(), c_int> {
        while ctx.receive()?.is_some() {
            *frames += 1;
        }
        Ok(())
    };
    each(&mut |data, pts| {
        if err.is_some() {
            return;
        }
        loop {
            match ctx.send(data, pts as i64) {
                Ok(true) => break,
                Ok(false) => {}
                // SAFETY: pure function of the code.
                Err(r) if unsafe { ioc_lav_is_invalid_data(r) } != 0 => break,
                Err(r) => {
                    err = Some(av_error(r));
                    return;
                }
            }
            if let Err(r) = drain(&mut ctx, &mut frames) {
                err = Some(av_error(r));
                return;
            }
        }
        if let Err(r) = drain(&mut ctx, &mut frames) {
            err = Some(av_error(r));
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(frames),
    }
}
