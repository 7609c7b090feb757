//! The codec description of a clip, from GStreamer: appsrc (the first Annex
//! B access unit) → h264parse/h265parse → mp4mux (fragmented) → filesink.
//! The parser reads the parameter sets into the sample description
//! (avcC/hvcC, picture size); the samples themselves are written by
//! [`super::fmp4`], byte for byte the camera's.

use std::path::Path;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::ring::Span;
use crate::decode::Codec;

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("cannot write clip {path}: {message}")]
    Write { path: String, message: String },
    #[error("clip has no frames")]
    Empty,
}

/// The `ftyp` + `moov` (fragmented, no samples) that GStreamer's parser and
/// muxer write for the span's codec and parameter sets: the parser builds the
/// codec description (avcC/hvcC, size) from the first frame. Written through
/// `scratch` (a `.part` file, removed).
pub fn fragmented_header(span: &Span, scratch: &Path) -> Result<Vec<u8>, ClipError> {
    let Some(first) = span.frames.first() else {
        return Err(ClipError::Empty);
    };
    let dest = scratch;
    let part = dest.with_extension("hdr.part");
    let err = |m: String| ClipError::Write {
        path: dest.display().to_string(),
        message: m,
    };
    crate::decode::init().map_err(|e| err(e.to_string()))?;
    let (caps, parser) = match span.codec {
        Codec::H264 => (
            "video/x-h264,stream-format=byte-stream,alignment=au",
            "h264parse",
        ),
        Codec::H265 => (
            "video/x-h265,stream-format=byte-stream,alignment=au",
            "h265parse",
        ),
    };
    let desc = format!(
        "appsrc name=src format=time caps={caps} ! {parser} ! mp4mux name=mux fragment-duration=3600000 streamable=true trak-timescale={} ! filesink name=sink",
        super::fmp4::TIMESCALE
    );
    let pipeline = gst::parse::launch(&desc)
        .map_err(|e| err(e.to_string()))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| err("not a pipeline".into()))?;
    let result = (|| {
        let sink = pipeline
            .by_name("sink")
            .ok_or_else(|| err("no sink".into()))?;
        sink.set_property("location", part.to_string_lossy().to_string());
        let src = pipeline
            .by_name("src")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| err("no appsrc".into()))?;
        src.set_property("block", true);
        src.set_property("max-bytes", 64u64 << 20);
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| err(e.to_string()))?;
        // The first frame, with the parameter sets (SPS/PPS/VPS) if the
        // camera sent them only with an earlier keyframe.
        let data = if super::ring::parameter_sets(span.codec, &first.data).is_empty() {
            [span.params.as_slice(), first.data.as_slice()].concat()
        } else {
            first.data.clone()
        };
        let mut b = gst::Buffer::from_slice(data);
        {
            let bm = b.get_mut().ok_or_else(|| err("buffer".into()))?;
            bm.set_pts(gst::ClockTime::ZERO);
            bm.set_dts(gst::ClockTime::ZERO);
            bm.set_duration(gst::ClockTime::from_mseconds(40));
        }
        src.push_buffer(b).map_err(|e| err(format!("{e:?}")))?;
        src.end_of_stream().map_err(|e| err(format!("{e:?}")))?;
        let bus = pipeline.bus().ok_or_else(|| err("no bus".into()))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(err("muxing did not finish in 30 s".into()));
            }
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(left.as_millis() as u64))
            else {
                continue;
            };
            match msg.view() {
                gst::MessageView::Eos(_) => break,
                gst::MessageView::Error(e) => {
                    return Err(err(format!(
                        "{} ({})",
                        e.error(),
                        e.debug().map(|d| d.to_string()).unwrap_or_default()
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    })();
    let _ = pipeline.set_state(gst::State::Null);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    let bytes = std::fs::read(&part).map_err(|e| err(e.to_string()));
    let _ = std::fs::remove_file(&part);
    bytes
}
