//! Decoding: a GStreamer pipeline (appsrc → parse → best available decoder →
//! I420 → appsink) for hardware decoders and `avdec_*`, or libavcodec
//! in-process (`lav`) as the lean software path.
//!
//! Encoded access units go in with their RTP presentation time; decoded frames
//! come out on the decode thread, where `FrameSelector` keeps only the frames
//! due at the camera's `detect_fps`; only those are copied.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

pub mod lav;
pub mod quiet;
pub mod shed;

/// Video codecs the agent ingests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    pub fn from_encoding(name: &str) -> Option<Codec> {
        match name.to_ascii_lowercase().as_str() {
            "h264" => Some(Codec::H264),
            "h265" | "hevc" => Some(Codec::H265),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
        }
    }
    /// Caps of one Annex B access unit of this codec.
    pub fn caps(self) -> &'static str {
        match self {
            Codec::H264 => "video/x-h264,stream-format=byte-stream,alignment=au",
            Codec::H265 => "video/x-h265,stream-format=byte-stream,alignment=au",
        }
    }
    /// The GStreamer parser element for this codec.
    pub fn parser(self) -> &'static str {
        match self {
            Codec::H264 => "h264parse",
            Codec::H265 => "h265parse",
        }
    }
    /// Decoders in order of preference: NVIDIA, VA-API, V4L2 (ARM boxes), then
    /// software: libavcodec in-process (fewest frames held), then GStreamer's
    /// `avdec_*` (any pixel format).
    pub fn ranked_decoders(self) -> &'static [&'static str] {
        match self {
            Codec::H264 => &[
                "nvh264dec",
                "nvv4l2decoder",
                "vah264dec",
                "vaapih264dec",
                "v4l2slh264dec",
                "v4l2h264dec",
                lav::NAME,
                "avdec_h264",
            ],
            Codec::H265 => &[
                "nvh265dec",
                "nvv4l2decoder",
                "vah265dec",
                "vaapih265dec",
                "v4l2slh265dec",
                "v4l2h265dec",
                lav::NAME,
                "avdec_h265",
            ],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("GStreamer could not start: {0} — install the GStreamer runtime (see README)")]
    Init(String),
    #[error("no {codec} decoder is available (tried {tried}) — install gstreamer1.0-libav")]
    NoDecoder { codec: &'static str, tried: String },
    #[error(
        "configured decoder '{0}' is not installed — remove `decoder` from the camera or install its plugin"
    )]
    MissingDecoder(String),
    #[error("cannot build the decode pipeline: {0}")]
    Pipeline(String),
    #[error("decoder {decoder} failed: {message}")]
    Runtime { decoder: String, message: String },
}

/// How a decoder named in a ranking runs: the one place a decoder name is
/// interpreted (the names themselves stay an open set: any GStreamer element).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DecoderKind {
    /// libavcodec in-process (`libavcodec`).
    Libavcodec,
    /// A GStreamer software decoder (`avdec_*`, `openh264dec`).
    GstSoftware,
    /// A GStreamer hardware decoder (NVDEC, VA-API, V4L2).
    GstHardware,
}

impl DecoderKind {
    pub fn of(name: &str) -> DecoderKind {
        if name == lav::NAME {
            DecoderKind::Libavcodec
        } else if name.starts_with("avdec_") || name.starts_with("openh264") {
            DecoderKind::GstSoftware
        } else {
            DecoderKind::GstHardware
        }
    }

    pub fn is_software(self) -> bool {
        self != DecoderKind::GstHardware
    }

    /// Whether the decoder can run on this box.
    pub fn available(name: &str) -> bool {
        DecoderKind::of(name) == DecoderKind::Libavcodec
            || gst::ElementFactory::find(name).is_some()
    }
}

/// Initialises GStreamer once; safe to call many times.
pub fn init() -> Result<(), DecodeError> {
    gst::init().map_err(|e| DecodeError::Init(e.to_string()))
}

/// The first decoder in the ranked list that is installed and not excluded.
pub fn choose_decoder(
    codec: Codec,
    forced: Option<&str>,
    exclude: &[String],
) -> Result<String, DecodeError> {
    choose_decoder_in(codec, &[], forced, exclude)
}

/// Like [`choose_decoder`], from the camera's own ranking when `ranked` is
/// not empty (config `decoders`), else from the built-in one.
pub fn choose_decoder_in(
    codec: Codec,
    ranked: &[String],
    forced: Option<&str>,
    exclude: &[String],
) -> Result<String, DecodeError> {
    let own: Vec<&str> = ranked.iter().map(String::as_str).collect();
    let list: &[&str] = if own.is_empty() {
        codec.ranked_decoders()
    } else {
        &own
    };
    choose_from(list, forced, exclude, DecoderKind::available).map_err(|e| match e {
        None => DecodeError::NoDecoder {
            codec: codec.as_str(),
            tried: list.join(", "),
        },
        Some(name) => DecodeError::MissingDecoder(name),
    })
}

/// Selection logic, separate from GStreamer so it can be tested with any
/// availability: `Err(None)` when nothing fits, `Err(Some(name))` when the
/// forced decoder is missing.
pub fn choose_from(
    ranked: &[&str],
    forced: Option<&str>,
    exclude: &[String],
    available: impl Fn(&str) -> bool,
) -> Result<String, Option<String>> {
    if let Some(f) = forced {
        return if available(f) {
            Ok(f.to_string())
        } else {
            Err(Some(f.to_string()))
        };
    }
    ranked
        .iter()
        .find(|n| !exclude.iter().any(|e| e == *n) && available(n))
        .map(|n| n.to_string())
        .ok_or(None)
}

/// One decoded picture in planar I420, packed without row padding.
#[derive(Clone)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    data: Vec<u8>,
    /// Presentation time in the stream, seconds.
    pub pts: f64,
    /// Wall-clock time at which the agent received the encoded frame.
    pub wall: SystemTime,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Frame({}x{} @ {:.3}s)",
            self.width, self.height, self.pts
        )
    }
}

impl Frame {
    pub fn blank(width: u32, height: u32) -> Frame {
        let (w, h) = (width as usize, height as usize);
        let c = w.div_ceil(2) * h.div_ceil(2);
        Frame {
            width,
            height,
            data: vec![0; w * h + 2 * c],
            pts: 0.0,
            wall: SystemTime::now(),
        }
    }
    pub fn chroma_width(&self) -> usize {
        (self.width as usize).div_ceil(2)
    }
    pub fn chroma_height(&self) -> usize {
        (self.height as usize).div_ceil(2)
    }
    fn luma_len(&self) -> usize {
        self.width as usize * self.height as usize
    }
    fn chroma_len(&self) -> usize {
        self.chroma_width() * self.chroma_height()
    }
    pub fn y(&self) -> &[u8] {
        &self.data[..self.luma_len()]
    }
    pub fn u(&self) -> &[u8] {
        let s = self.luma_len();
        &self.data[s..s + self.chroma_len()]
    }
    pub fn v(&self) -> &[u8] {
        let s = self.luma_len() + self.chroma_len();
        &self.data[s..s + self.chroma_len()]
    }
    pub fn y_mut(&mut self) -> &mut [u8] {
        let l = self.luma_len();
        &mut self.data[..l]
    }
    pub fn u_mut(&mut self) -> &mut [u8] {
        let (s, c) = (self.luma_len(), self.chroma_len());
        &mut self.data[s..s + c]
    }
    pub fn v_mut(&mut self) -> &mut [u8] {
        let (s, c) = (self.luma_len() + self.chroma_len(), self.chroma_len());
        &mut self.data[s..s + c]
    }

    /// Copies a mapped GStreamer I420 frame, removing row padding.
    pub fn from_video(
        vf: &gst_video::VideoFrameRef<&gst::BufferRef>,
        pts: f64,
        wall: SystemTime,
    ) -> Option<Frame> {
        let plane = |p: usize| -> Option<(&[u8], usize)> {
            let stride = usize::try_from(*vf.plane_stride().get(p)?).ok()?;
            Some((vf.plane_data(p as u32).ok()?, stride))
        };
        Frame::from_planes(
            vf.width(),
            vf.height(),
            [plane(0)?, plane(1)?, plane(2)?],
            pts,
            wall,
        )
    }

    /// Copies three I420 planes given with their row strides (bytes),
    /// removing row padding. None if a plane is shorter than the frame needs.
    pub fn from_planes(
        width: u32,
        height: u32,
        planes: [(&[u8], usize); 3],
        pts: f64,
        wall: SystemTime,
    ) -> Option<Frame> {
        let mut f = Frame::blank(width, height);
        f.pts = pts;
        f.wall = wall;
        let dims = [
            (f.width as usize, f.height as usize),
            (f.chroma_width(), f.chroma_height()),
            (f.chroma_width(), f.chroma_height()),
        ];
        let mut offset = 0;
        for ((src, stride), (w, h)) in planes.into_iter().zip(dims) {
            for row in 0..h {
                let s = row * stride;
                f.data[offset + row * w..offset + row * w + w].copy_from_slice(src.get(s..s + w)?);
            }
            offset += w * h;
        }
        Some(f)
    }
}

/// Picks frames at a target rate by presentation time: a frame is due when its
/// PTS reaches the next slot; slots advance by `1 / fps`. Robust to jitter and
/// to sources faster or slower than the target.
#[derive(Debug, Clone)]
pub struct FrameSelector {
    interval: f64,
    next: Option<f64>,
}

impl FrameSelector {
    pub fn new(fps: f64) -> Self {
        FrameSelector {
            interval: 1.0 / fps,
            next: None,
        }
    }
    /// Whether a frame at `pts` would be passed over by [`due`](Self::due)
    /// now and at any later call (the next slot only moves forward, short of
    /// a jump in time, which makes a frame due).
    pub fn not_due(&self, pts: f64) -> bool {
        match self.next {
            Some(n) => !(pts + 1.0 < n - self.interval || pts > n + 5.0) && pts + 1e-6 < n,
            None => false,
        }
    }

    pub fn due(&mut self, pts: f64) -> bool {
        match self.next {
            // A jump back in time (stream restart) or far ahead resets the slots.
            Some(n) if pts + 1.0 < n - self.interval || pts > n + 5.0 => {
                self.next = Some(pts + self.interval);
                true
            }
            Some(n) if pts + 1e-6 < n => false,
            Some(n) => {
                let mut next = n + self.interval;
                while next <= pts {
                    next += self.interval;
                }
                self.next = Some(next);
                true
            }
            None => {
                self.next = Some(pts + self.interval);
                true
            }
        }
    }
}

/// Per-camera frame counters, shared with status and stats.
#[derive(Debug, Default)]
pub struct FrameCounters {
    pub received: AtomicU64,
    pub decoded: AtomicU64,
    /// Not due at `detect_fps`.
    pub skipped_rate: AtomicU64,
    /// Replaced by a newer frame before the model was free (latest wins).
    pub skipped_busy: AtomicU64,
    /// Encoded frames dropped as whole GOPs because the decoder fell behind.
    pub skipped_backlog: AtomicU64,
    /// Encoded frames discarded while waiting for the first keyframe.
    pub skipped_no_keyframe: AtomicU64,
    pub inferred: AtomicU64,
    /// Due, but unchanged since the model last saw the camera: the model's
    /// last answer stands for them (`skip_quiet_frames`).
    pub skipped_quiet: AtomicU64,
    /// Access units the decoder refused as damaged (lost packets, a corrupt
    /// bitstream); skipped, the session goes on.
    pub corrupt: AtomicU64,
    /// Access units dropped for being larger than `MAX_ACCESS_UNIT_BYTES`.
    pub oversized: AtomicU64,
}

/// The largest access unit taken from a camera: a 4K keyframe is a few
/// MB; anything past this is a broken or hostile stream, and is dropped
/// (counted) before it reaches the ring or the decoder.
pub const MAX_ACCESS_UNIT_BYTES: usize = 16 << 20;

/// Software decoder threads for one stream. `configured` > 0 wins; 0 shares
/// the cores among the cameras: a box with fewer cameras than cores gives
/// each several (lower latency on big streams), a box with more cameras gives
/// each one, which costs least in total (no frame-thread hand-offs, no extra
/// frame buffers) because the cameras already keep every core busy.
pub fn decoder_threads(configured: u32, cameras: usize, cores: usize) -> u32 {
    if configured > 0 {
        return configured;
    }
    (cores / cameras.max(1)).clamp(1, 4) as u32
}

/// How much lower than the agent's other threads decoding runs (Linux nice
/// steps). Decoders have buffers in front of them and catch up; the model's
/// thread, which every camera waits on, should not wait for them.
/// `IOC_DECODE_NICE` overrides (0 = same priority).
pub fn decode_nice() -> i32 {
    std::env::var("IOC_DECODE_NICE")
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
        .map(|n| n.clamp(0, 19))
        .unwrap_or(5)
}

/// Lowers the calling thread's scheduling priority by `nice` steps (Linux
/// threads have their own nice value; threads it starts inherit it).
pub fn lower_thread_priority(nice: i32) {
    // SAFETY: plain syscalls on the calling thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let cur = libc::getpriority(libc::PRIO_PROCESS, tid);
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, (cur + nice).min(19));
    }
}

/// Keeps frame-sized allocations out of the malloc heaps. glibc raises its
/// mmap threshold to the size of the largest block freed (up to 32 MiB), so
/// after the first decoded frame is released every later frame copy and
/// tensor comes from the per-thread heaps, where freed blocks linger between
/// frames of many cameras; measured here, ~2.6 MB of RSS per 720p camera.
/// A fixed threshold maps each such block on its own and returns it to the
/// system when freed. `MALLOC_MMAP_THRESHOLD_` in the environment wins.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only changes allocator parameters; called at start,
        // before other threads exist.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

/// The machine's cores as the scheduler sees them (1 if unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A running decoder for one camera session: a GStreamer pipeline, or
/// libavcodec in-process (`libavcodec`, see `lav`).
pub struct DecodePipeline {
    inner: Inner,
    pub decoder: String,
}

enum Inner {
    Gst(GstDecode),
    Lav(lav::LavDecoder),
}

impl DecodePipeline {
    /// Starts `decoder` (a GStreamer element name or `libavcodec`). `on_frame`
    /// is called on the decode thread for every frame the selector marks due.
    pub fn start(
        codec: Codec,
        decoder: &str,
        fps: f64,
        threads: u32,
        counters: Arc<FrameCounters>,
        on_frame: impl FnMut(Frame) + Send + 'static,
    ) -> Result<DecodePipeline, DecodeError> {
        let inner = if DecoderKind::of(decoder) == DecoderKind::Libavcodec {
            Inner::Lav(lav::LavDecoder::start(
                codec, fps, threads, counters, on_frame,
            )?)
        } else {
            Inner::Gst(GstDecode::start(
                codec, decoder, fps, threads, counters, on_frame,
            )?)
        };
        Ok(DecodePipeline {
            inner,
            decoder: decoder.to_string(),
        })
    }

    /// Queues one encoded access unit (Annex B).
    pub fn push(&self, data: &[u8], pts_ns: u64, wall: SystemTime) -> Result<(), DecodeError> {
        match &self.inner {
            Inner::Gst(g) => g.push(data, pts_ns, wall),
            Inner::Lav(l) => l.push(data, pts_ns, wall),
        }
    }

    /// Seconds of video waiting in front of the decoder.
    pub fn backlog_secs(&self) -> f64 {
        match &self.inner {
            Inner::Gst(g) => g.backlog_secs(),
            Inner::Lav(l) => l.backlog_secs(),
        }
    }

    /// Bytes waiting in front of the decoder.
    pub fn backlog_bytes(&self) -> u64 {
        match &self.inner {
            Inner::Gst(g) => g.backlog_bytes(),
            Inner::Lav(l) => l.backlog_bytes(),
        }
    }

    /// Returns the first error the decoder reported, if any.
    pub fn poll_error(&self) -> Option<DecodeError> {
        match &self.inner {
            Inner::Gst(g) => g.poll_error(),
            Inner::Lav(l) => l.poll_error(),
        }
    }
}

/// `appsrc ! parse ! decoder ! videoconvert ! I420 ! appsink`.
struct GstDecode {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    decoder: String,
}

impl GstDecode {
    /// Builds and starts the pipeline.
    fn start(
        codec: Codec,
        decoder: &str,
        fps: f64,
        threads: u32,
        counters: Arc<FrameCounters>,
        mut on_frame: impl FnMut(Frame) + Send + 'static,
    ) -> Result<GstDecode, DecodeError> {
        init()?;
        let desc = format!(
            "appsrc name=src format=time is-live=true do-timestamp=false caps={caps} ! {parser} ! {decoder} name=dec ! videoconvert ! video/x-raw,format=I420 ! appsink name=sink sync=false max-buffers=4 drop=false enable-last-sample=false",
            caps = codec.caps(),
            parser = codec.parser(),
        );
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| DecodeError::Pipeline(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| DecodeError::Pipeline("not a pipeline".into()))?;
        let appsrc = pipeline
            .by_name("src")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| DecodeError::Pipeline("appsrc missing".into()))?;
        let appsink = pipeline
            .by_name("sink")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| DecodeError::Pipeline("appsink missing".into()))?;
        appsrc.set_max_bytes(16 * 1024 * 1024);
        if let Some(dec) = pipeline.by_name("dec")
            && dec.has_property("max-threads")
        {
            // libav: 0 = one thread per core; see `decoder_threads`.
            dec.set_property_from_str("max-threads", &threads.to_string());
        }

        if let Some(bus) = pipeline.bus() {
            let nice = decode_nice();
            if nice > 0 {
                bus.set_sync_handler(move |_, msg| {
                    if let gst::MessageView::StreamStatus(s) = msg.view()
                        && s.get().0 == gst::StreamStatusType::Enter
                    {
                        lower_thread_priority(nice);
                    }
                    gst::BusSyncReply::Pass
                });
            }
        }

        let mut selector = FrameSelector::new(fps);
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    counters.decoded.fetch_add(1, Ordering::Relaxed);
                    let Some(buffer) = sample.buffer() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let pts = buffer
                        .pts()
                        .map(|t| t.nseconds() as f64 / 1e9)
                        .unwrap_or(0.0);
                    if !selector.due(pts) {
                        counters.skipped_rate.fetch_add(1, Ordering::Relaxed);
                        return Ok(gst::FlowSuccess::Ok);
                    }
                    let Some(caps) = sample.caps() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let Ok(info) = gst_video::VideoInfo::from_caps(caps) else {
                        return Err(gst::FlowError::NotNegotiated);
                    };
                    let Ok(vf) = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
                    else {
                        return Err(gst::FlowError::Error);
                    };
                    // Wall-clock of receipt travels as the buffer's offset (ms since epoch).
                    // Decoders usually keep it; if one does not, the time of decode is
                    // within a frame or two of it.
                    let now = SystemTime::now();
                    let wall = match buffer.offset() {
                        o if o != u64::MAX && o > 0 => {
                            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(o);
                            match now.duration_since(t) {
                                Ok(d) if d < std::time::Duration::from_secs(10) => t,
                                _ => now,
                            }
                        }
                        _ => now,
                    };
                    if let Some(frame) = Frame::from_video(&vf, pts, wall) {
                        on_frame(frame);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| DecodeError::Runtime {
                decoder: decoder.to_string(),
                message: e.to_string(),
            })?;
        Ok(GstDecode {
            pipeline,
            appsrc,
            decoder: decoder.to_string(),
        })
    }

    /// Queues one encoded access unit (Annex B).
    pub fn push(&self, data: &[u8], pts_ns: u64, wall: SystemTime) -> Result<(), DecodeError> {
        let mut buf = gst::Buffer::from_slice(data.to_vec());
        if let Some(b) = buf.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds(pts_ns));
            let ms = wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            b.set_offset(ms);
        }
        self.appsrc
            .push_buffer(buf)
            .map_err(|e| DecodeError::Runtime {
                decoder: self.decoder.clone(),
                message: format!("push: {e:?}"),
            })?;
        Ok(())
    }

    /// Seconds of video waiting in front of the decoder.
    pub fn backlog_secs(&self) -> f64 {
        self.appsrc.current_level_time().nseconds() as f64 / 1e9
    }

    /// Bytes waiting in front of the decoder.
    pub fn backlog_bytes(&self) -> u64 {
        self.appsrc.current_level_bytes()
    }

    /// Returns the first error the pipeline reported, if any.
    pub fn poll_error(&self) -> Option<DecodeError> {
        let bus = self.pipeline.bus()?;
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    return Some(DecodeError::Runtime {
                        decoder: self.decoder.clone(),
                        message: e.error().to_string(),
                    });
                }
                gst::MessageView::Eos(_) => {
                    return Some(DecodeError::Runtime {
                        decoder: self.decoder.clone(),
                        message: "end of stream".into(),
                    });
                }
                _ => {}
            }
        }
        None
    }
}

impl Drop for GstDecode {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_picks_every_fifth_frame_of_25fps() {
        let mut s = FrameSelector::new(5.0);
        let picked: Vec<usize> = (0..50).filter(|i| s.due(*i as f64 / 25.0)).collect();
        assert_eq!(picked.len(), 10);
        assert_eq!(&picked[..3], &[0, 5, 10]);
    }

    #[test]
    fn selector_passes_everything_when_source_is_slower() {
        let mut s = FrameSelector::new(10.0);
        assert_eq!((0..20).filter(|i| s.due(*i as f64 / 4.0)).count(), 20);
    }

    #[test]
    fn selector_recovers_from_time_jump_back() {
        let mut s = FrameSelector::new(5.0);
        assert!(s.due(100.0));
        assert!(!s.due(100.1));
        assert!(s.due(0.0));
        assert!(!s.due(0.1));
        assert!(s.due(0.2));
    }

    #[test]
    fn a_frame_called_not_due_is_never_due() {
        // 25 fps in decode order I P B B B P B B B … (presentation times
        // jump back for the B frames), watched at 5/s: whatever `not_due`
        // rules out before sending, `due` rules out after decoding.
        let mut s = FrameSelector::new(5.0);
        let mut order = vec![0usize];
        for g in 0..25 {
            let p = 4 * g + 4;
            order.extend([p, p - 3, p - 2, p - 1]);
        }
        let mut ruled_out = 0;
        // Output in presentation order, four frames behind decode.
        let mut pending: Vec<usize> = Vec::new();
        let mut out = Vec::new();
        for i in order {
            if s.not_due(i as f64 / 25.0) {
                ruled_out += 1;
                assert!(!s.clone().due(i as f64 / 25.0), "frame {i}");
                out.push(i);
                continue;
            }
            pending.push(i);
            pending.sort_unstable();
            while pending.len() > 4 {
                let f = pending.remove(0);
                s.due(f as f64 / 25.0);
            }
        }
        // Output lags decode, so the selector rules out only what is behind
        // its next slot (the real count: decode::libavcodec_skips_…).
        assert!(ruled_out >= 10, "only {ruled_out} of 101 ruled out");
        // And none of them would have been due when its turn came.
        let mut full = FrameSelector::new(5.0);
        let due: Vec<usize> = (0..=100).filter(|i| full.due(*i as f64 / 25.0)).collect();
        assert!(out.iter().all(|i| !due.contains(i)), "{out:?} vs {due:?}");
    }

    #[test]
    fn decoder_threads_share_the_cores() {
        assert_eq!(decoder_threads(0, 1, 2), 2);
        assert_eq!(decoder_threads(0, 2, 2), 1);
        assert_eq!(decoder_threads(0, 15, 2), 1);
        assert_eq!(decoder_threads(0, 2, 16), 4, "capped at 4");
        assert_eq!(decoder_threads(0, 0, 8), 4);
        assert_eq!(decoder_threads(3, 15, 2), 3, "configured wins");
    }

    #[test]
    fn decoder_choice_follows_rank_and_exclusions() {
        let ranked = Codec::H264.ranked_decoders();
        let sw_only = |n: &str| n == "avdec_h264";
        assert_eq!(
            choose_from(ranked, None, &[], sw_only).unwrap(),
            "avdec_h264"
        );
        let with_vaapi = |n: &str| n == "avdec_h264" || n == "vah264dec";
        assert_eq!(
            choose_from(ranked, None, &[], with_vaapi).unwrap(),
            "vah264dec"
        );
        // A decoder that failed at run time is skipped: fall back to software.
        assert_eq!(
            choose_from(ranked, None, &["vah264dec".into()], with_vaapi).unwrap(),
            "avdec_h264"
        );
        assert_eq!(
            choose_from(ranked, Some("nvh264dec"), &[], sw_only),
            Err(Some("nvh264dec".into()))
        );
        assert_eq!(
            choose_from(ranked, None, &["avdec_h264".into()], sw_only),
            Err(None)
        );
    }
}
