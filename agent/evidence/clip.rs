//! MP4 clips muxed from the original bitstream (no decode, no re-encode):
//! appsrc (Annex B access units) → h264parse/h265parse → mp4mux → filesink.
//! The parser only repackages start codes as length prefixes and moves the
//! parameter sets into the sample description; coded slices stay byte-identical.
//! A clip is written under a `.part` name and renamed when complete.

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

/// What was written.
#[derive(Debug, Clone)]
pub struct ClipInfo {
    pub frames: usize,
    /// From the first frame's presentation to the end of the last one.
    pub duration_ns: u64,
    pub bytes: u64,
    /// Presentation time of the first frame on the session clock.
    pub start_pts_ns: u64,
}

/// Decode timestamps for frames in decode order with presentation times
/// `pts`: the sorted presentation times, so DTS rises monotonically, and a
/// shift that keeps every DTS at or before its PTS when B-frames reorder.
fn timestamps(pts: &[u64]) -> (Vec<u64>, Vec<u64>, u64) {
    let mut sorted = pts.to_vec();
    sorted.sort_unstable();
    let base = sorted.first().copied().unwrap_or(0);
    let shift = pts
        .iter()
        .zip(&sorted)
        .map(|(p, s)| s.saturating_sub(*p))
        .max()
        .unwrap_or(0);
    let out_pts = pts.iter().map(|p| p - base + shift).collect();
    let out_dts = sorted.iter().map(|s| s - base).collect();
    (out_pts, out_dts, shift)
}

/// Typical frame interval of the span (median of presentation deltas).
fn frame_interval(pts: &[u64]) -> u64 {
    let mut sorted = pts.to_vec();
    sorted.sort_unstable();
    let mut d: Vec<u64> = sorted
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0)
        .collect();
    d.sort_unstable();
    d.get(d.len() / 2).copied().unwrap_or(40_000_000)
}

/// Writes `span` to `dest` (via `dest.part`, then rename).
pub fn write_mp4(span: &Span, dest: &Path) -> Result<ClipInfo, ClipError> {
    if span.frames.is_empty() {
        return Err(ClipError::Empty);
    }
    let part = dest.with_extension("mp4.part");
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
    let pts: Vec<u64> = span.frames.iter().map(|f| f.pts_ns).collect();
    let (out_pts, out_dts, _) = timestamps(&pts);
    let interval = frame_interval(&pts);
    let desc = format!(
        "appsrc name=src format=time caps={caps} ! {parser} ! mp4mux name=mux ! filesink name=sink"
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
        for (i, f) in span.frames.iter().enumerate() {
            // The first frame carries the parameter sets (SPS/PPS/VPS) if the
            // camera sent them only with an earlier keyframe.
            let data = if i == 0 && super::ring::parameter_sets(span.codec, &f.data).is_empty() {
                [span.params.as_slice(), f.data.as_slice()].concat()
            } else {
                f.data.clone()
            };
            let mut b = gst::Buffer::from_slice(data);
            {
                let bm = b.get_mut().ok_or_else(|| err("buffer".into()))?;
                bm.set_pts(gst::ClockTime::from_nseconds(out_pts[i]));
                bm.set_dts(gst::ClockTime::from_nseconds(out_dts[i]));
                bm.set_duration(gst::ClockTime::from_nseconds(interval));
                if !f.keyframe {
                    bm.set_flags(gst::BufferFlags::DELTA_UNIT);
                }
            }
            src.push_buffer(b).map_err(|e| err(format!("{e:?}")))?;
        }
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
    let file = std::fs::File::open(&part).map_err(|e| err(e.to_string()))?;
    file.sync_all().map_err(|e| err(e.to_string()))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    std::fs::rename(&part, dest).map_err(|e| err(e.to_string()))?;
    let first = pts.iter().min().copied().unwrap_or(0);
    let last = pts.iter().max().copied().unwrap_or(0);
    Ok(ClipInfo {
        frames: span.frames.len(),
        duration_ns: last - first + interval,
        bytes,
        start_pts_ns: first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_times_rise_and_never_pass_presentation() {
        // I P B B P B B (presentation order 0 3 1 2 6 4 5)
        let pts: Vec<u64> = [0, 3, 1, 2, 6, 4, 5].iter().map(|p| p * 40).collect();
        let (p, d, shift) = timestamps(&pts);
        assert!(d.windows(2).all(|w| w[0] < w[1]));
        assert!(p.iter().zip(&d).all(|(p, d)| d <= p));
        assert_eq!(shift, 40);
        assert_eq!(frame_interval(&pts), 40);
        // No reordering: no shift.
        let (p, d, shift) = timestamps(&[100, 140, 180]);
        assert_eq!((p, d, shift), (vec![0, 40, 80], vec![0, 40, 80], 0));
    }
}
