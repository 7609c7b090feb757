//! `ioc-agent simulate`: serves video files over RTSP as live cameras, looped
//! forever, without re-encoding. Each file's access units are read once into
//! memory; every client gets its own (non-shared) media fed from an appsrc,
//! with timestamps that keep growing across loops so it looks like a live
//! camera to the receiver.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

use crate::decode::Codec;

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("stream '{0}' must be written NAME=FILE (e.g. cam1=traffic.mp4)")]
    BadSpec(String),
    #[error("stream name '{0}' may use only letters, digits, '-' and '_'")]
    BadName(String),
    #[error("video file {0} does not exist")]
    Missing(PathBuf),
    #[error(
        "cannot read {path} as H.264 or H.265 in MP4/MKV/TS: {reason} — re-encode it, e.g. with `gst-launch-1.0 ... ! x264enc ! mp4mux`"
    )]
    Unreadable { path: PathBuf, reason: String },
    #[error("cannot start the RTSP server on {addr}: {reason} — is the port free?")]
    Listen { addr: String, reason: String },
    #[error("GStreamer: {0}")]
    Gst(String),
}

/// `NAME=FILE` from the command line.
pub fn parse_stream_spec(s: &str) -> Result<(String, PathBuf), SimulateError> {
    let (name, file) = s
        .split_once('=')
        .ok_or_else(|| SimulateError::BadSpec(s.to_string()))?;
    if name.is_empty() || file.is_empty() {
        return Err(SimulateError::BadSpec(s.to_string()));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(SimulateError::BadName(name.to_string()));
    }
    Ok((name.to_string(), PathBuf::from(file)))
}

/// One access unit of the file.
#[derive(Clone)]
struct Unit {
    buffer: gst::Buffer,
    pts: u64,
    dts: u64,
}

/// A file loaded into memory as parsed access units.
#[derive(Clone)]
pub struct Clip {
    pub codec: Codec,
    caps: gst::Caps,
    units: Arc<Vec<Unit>>,
    /// Length of one loop, nanoseconds.
    pub duration_ns: u64,
    pub frames: usize,
    /// Loops per client session, then the stream ends (0 = forever).
    pub loops: u32,
}

impl Clip {
    /// Calls `f` with every access unit (Annex B) and its PTS in nanoseconds,
    /// in decode order.
    pub fn for_each_unit(&self, mut f: impl FnMut(&[u8], u64)) {
        for u in self.units.iter() {
            if let Ok(m) = u.buffer.map_readable() {
                f(m.as_slice(), u.pts);
            }
        }
    }

    pub fn load(path: &Path) -> Result<Clip, SimulateError> {
        if !path.exists() {
            return Err(SimulateError::Missing(path.to_path_buf()));
        }
        crate::decode::init().map_err(|e| SimulateError::Gst(e.to_string()))?;
        let mut last = String::new();
        for codec in [Codec::H264, Codec::H265] {
            match load_as(path, codec) {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(SimulateError::Unreadable {
            path: path.to_path_buf(),
            reason: last,
        })
    }
}

fn demuxer_for(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("mkv") | Some("webm") => "matroskademux",
        Some("ts") | Some("m2ts") => "tsdemux",
        _ => "qtdemux",
    }
}

fn load_as(path: &Path, codec: Codec) -> Result<Clip, String> {
    let (parser, caps) = match codec {
        Codec::H264 => (
            "h264parse",
            "video/x-h264,stream-format=byte-stream,alignment=au",
        ),
        Codec::H265 => (
            "h265parse",
            "video/x-h265,stream-format=byte-stream,alignment=au",
        ),
    };
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("filesrc")
        .property("location", path.to_string_lossy().to_string())
        .build()
        .map_err(|e| e.to_string())?;
    let demux = gst::ElementFactory::make(demuxer_for(path))
        .build()
        .map_err(|e| e.to_string())?;
    let parse = gst::ElementFactory::make(parser)
        .property_from_str("config-interval", "-1")
        .build()
        .map_err(|e| e.to_string())?;
    let sink = gst_app::AppSink::builder()
        .caps(&caps.parse::<gst::Caps>().map_err(|e| e.to_string())?)
        .sync(false)
        .build();
    pipeline
        .add_many([&src, &demux, &parse, sink.upcast_ref()])
        .map_err(|e| e.to_string())?;
    src.link(&demux).map_err(|e| e.to_string())?;
    parse.link(&sink).map_err(|e| e.to_string())?;
    let parse_weak = parse.downgrade();
    demux.connect_pad_added(move |_, pad| {
        if let Some(parse) = parse_weak.upgrade()
            && let Some(sinkpad) = parse.static_pad("sink")
            && !sinkpad.is_linked()
        {
            let _ = pad.link(&sinkpad);
        }
    });
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let mut units = Vec::new();
    let mut out_caps = None;
    let res = loop {
        match sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
            Some(sample) => {
                if out_caps.is_none() {
                    out_caps = sample.caps().map(|c| c.to_owned());
                }
                if let Some(b) = sample.buffer_owned() {
                    let pts = b.pts().map(|t| t.nseconds()).unwrap_or(0);
                    let dts = b.dts().map(|t| t.nseconds()).unwrap_or(pts);
                    units.push(Unit {
                        buffer: b,
                        pts,
                        dts,
                    });
                }
            }
            None => {
                if sink.is_eos() {
                    break Ok(());
                }
                let err = pipeline
                    .bus()
                    .and_then(|b| b.pop_filtered(&[gst::MessageType::Error]))
                    .and_then(|m| match m.view() {
                        gst::MessageView::Error(e) => Some(e.error().to_string()),
                        _ => None,
                    });
                break Err(err.unwrap_or_else(|| "no video frames".into()));
            }
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    res?;
    if units.is_empty() {
        return Err(format!("no {} video frames", codec.as_str()));
    }
    let caps = out_caps.ok_or("no caps")?;
    // Normalise so the first frame decodes at 0.
    let base = units.iter().map(|u| u.dts.min(u.pts)).min().unwrap_or(0);
    for u in &mut units {
        u.pts -= base;
        u.dts -= base;
    }
    let frame_ns = if units.len() > 1 {
        let last = units.iter().map(|u| u.pts).max().unwrap_or(0);
        last / (units.len() as u64 - 1)
    } else {
        40_000_000
    };
    let duration_ns = units.iter().map(|u| u.pts).max().unwrap_or(0) + frame_ns;
    Ok(Clip {
        codec,
        caps,
        frames: units.len(),
        units: Arc::new(units),
        duration_ns,
        loops: 0,
    })
}

/// A running RTSP server.
pub struct Simulator {
    pub port: u16,
    _server: rtsp::RTSPServer,
    main_loop: gst::glib::MainLoop,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Simulator {
    /// Starts serving `streams` on `addr` (`host:port`, port 0 picks a free one).
    pub fn start(addr: &str, streams: &[(String, Clip)]) -> Result<Simulator, SimulateError> {
        Self::start_with(addr, streams, &[])
    }

    /// Like [`Simulator::start`], plus generated test streams: `(name, kind)`
    /// with kind `mjpeg` (a Motion-JPEG camera, which the agent refuses).
    pub fn start_with(
        addr: &str,
        streams: &[(String, Clip)],
        patterns: &[(String, String)],
    ) -> Result<Simulator, SimulateError> {
        crate::decode::init().map_err(|e| SimulateError::Gst(e.to_string()))?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| SimulateError::Listen {
            addr: addr.into(),
            reason: "write it as HOST:PORT".into(),
        })?;
        let server = rtsp::RTSPServer::new();
        server.set_address(host.trim_matches(|c| c == '[' || c == ']'));
        server.set_service(port);
        let mounts = server
            .mount_points()
            .ok_or_else(|| SimulateError::Gst("no mount points".into()))?;
        for (name, clip) in streams {
            let factory = rtsp::RTSPMediaFactory::new();
            let pay = match clip.codec {
                Codec::H264 => "rtph264pay",
                Codec::H265 => "rtph265pay",
            };
            factory.set_launch(&format!(
                "( appsrc name=src is-live=false format=time do-timestamp=false block=true max-bytes=4000000 ! {pay} name=pay0 pt=96 config-interval=-1 )"
            ));
            factory.set_shared(false);
            let clip = clip.clone();
            let stream_name = name.clone();
            factory.connect_media_configure(move |_, media| {
                let Some(bin) = media.element().downcast::<gst::Bin>().ok() else {
                    return;
                };
                let Some(appsrc) = bin
                    .by_name("src")
                    .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
                else {
                    return;
                };
                appsrc.set_caps(Some(&clip.caps));
                let clip = clip.clone();
                let name = stream_name.clone();
                let _ = std::thread::Builder::new()
                    .name(format!("sim-{name}"))
                    .spawn(move || feed(appsrc, clip));
            });
            mounts.add_factory(&format!("/{name}"), factory);
        }
        for (name, kind) in patterns {
            let launch = match kind.as_str() {
                "mjpeg" => {
                    "( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width=320,height=240,framerate=10/1 ! jpegenc ! rtpjpegpay name=pay0 pt=26 )"
                }
                other => {
                    return Err(SimulateError::Gst(format!(
                        "unknown test pattern '{other}' (known: mjpeg)"
                    )));
                }
            };
            let factory = rtsp::RTSPMediaFactory::new();
            factory.set_launch(launch);
            factory.set_shared(false);
            mounts.add_factory(&format!("/{name}"), factory);
        }
        let main_loop = gst::glib::MainLoop::new(None, false);
        let ctx = main_loop.context();
        let source = {
            let _guard = ctx
                .acquire()
                .map_err(|e| SimulateError::Gst(e.to_string()))?;
            server
                .attach(Some(&ctx))
                .map_err(|e| SimulateError::Listen {
                    addr: addr.into(),
                    reason: e.to_string(),
                })?
        };
        let _ = source;
        let bound = server.bound_port();
        if bound <= 0 {
            return Err(SimulateError::Listen {
                addr: addr.into(),
                reason: "the server did not bind".into(),
            });
        }
        let ml = main_loop.clone();
        let thread = std::thread::Builder::new()
            .name("rtsp-server".into())
            .spawn(move || ml.run())
            .map_err(|e| SimulateError::Gst(e.to_string()))?;
        Ok(Simulator {
            port: bound as u16,
            _server: server,
            main_loop,
            thread: Some(thread),
        })
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Pushes the clip's access units one loop after another (forever, or
/// `clip.loops` times and then ends the stream), paced to real time; returns
/// when the client's media is torn down.
fn feed(appsrc: gst_app::AppSrc, clip: Clip) {
    let start = std::time::Instant::now();
    let mut loop_offset = 0u64;
    let mut played = 0u32;
    loop {
        for u in clip.units.iter() {
            let dts = loop_offset + u.dts;
            let pts = loop_offset + u.pts;
            // Pace on decode time; the server's sinks also sync to the clock.
            let due = std::time::Duration::from_nanos(dts);
            let elapsed = start.elapsed();
            if due > elapsed + std::time::Duration::from_millis(200) {
                std::thread::sleep(due - elapsed - std::time::Duration::from_millis(200));
            }
            let mut b = u.buffer.copy();
            {
                let Some(bm) = b.get_mut() else { return };
                bm.set_pts(gst::ClockTime::from_nseconds(pts));
                bm.set_dts(gst::ClockTime::from_nseconds(dts));
            }
            if appsrc.push_buffer(b).is_err() {
                return;
            }
        }
        loop_offset += clip.duration_ns;
        played += 1;
        if clip.loops > 0 && played >= clip.loops {
            let _ = appsrc.end_of_stream();
            return;
        }
    }
}
