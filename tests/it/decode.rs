//! The in-process libavcodec decoder against GStreamer's avdec on real
//! footage: same pictures, named errors, and hand-over of what it does not
//! take (non-4:2:0) to the next decoder in the ranking.

use crate::common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use ioc_agent::decode::{self, Codec, DecodePipeline, Frame, FrameCounters};

/// Decodes every access unit of `path` with `decoder` at `fps`; returns the
/// frames handed on and the decoder's counters.
fn decode_with(
    path: &Path,
    codec: Codec,
    decoder: &str,
    fps: f64,
) -> (Vec<Frame>, Arc<FrameCounters>, Option<String>) {
    let aus = access_units(path);
    let counters = Arc::new(FrameCounters::default());
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let pipe = DecodePipeline::start(codec, decoder, fps, 1, counters.clone(), move |f| {
        sink.lock().unwrap().push(f)
    })
    .unwrap_or_else(|e| panic!("{decoder} does not start: {e}"));
    let mut error = None;
    for au in &aus {
        if let Err(e) = pipe.push(&au.data, au.pts_ns, SystemTime::now()) {
            error = Some(e.to_string());
            break;
        }
    }
    // Wait until every unit has come out (or the decoder stopped).
    let t0 = Instant::now();
    let mut last = (0, Instant::now());
    while t0.elapsed() < Duration::from_secs(60) && error.is_none() {
        if let Some(e) = pipe.poll_error() {
            error = Some(e.to_string());
            break;
        }
        let n = counters.decoded.load(std::sync::atomic::Ordering::Relaxed);
        if n != last.0 {
            last = (n, Instant::now());
        }
        if n as usize >= aus.len() || (n > 0 && last.1.elapsed() > Duration::from_secs(2)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(pipe);
    let frames = std::mem::take(&mut *got.lock().unwrap());
    (frames, counters, error)
}

/// Compares libavcodec with `other` on `path`; libavcodec's count of
/// pictures decoded.
fn same_pictures(path: &Path, codec: Codec, other: &str) -> usize {
    let n_aus = access_units(path).len();
    let (lav, lc, le) = decode_with(path, codec, "libavcodec", 5.0);
    let (gst, gc, ge) = decode_with(path, codec, other, 5.0);
    assert!(le.is_none() && ge.is_none(), "errors: {le:?} {ge:?}");
    let decoded = lc.decoded.load(std::sync::atomic::Ordering::Relaxed) as usize;
    // Non-reference pictures not due are not decoded (below: none of
    // those due is missing).
    assert!(
        decoded <= n_aus,
        "libavcodec decoded {decoded} of {n_aus} access units"
    );
    println!(
        "{}: {n_aus} units; libavcodec decoded {decoded}, handed on {}; {other} decoded {}, handed on {}",
        path.display(),
        lav.len(),
        gc.decoded.load(std::sync::atomic::Ordering::Relaxed),
        gst.len()
    );
    assert!(lav.len() >= 20, "only {} frames due at 5/s", lav.len());
    // Skipped for rate + handed on = decoded.
    assert_eq!(
        lc.skipped_rate.load(std::sync::atomic::Ordering::Relaxed) as usize + lav.len(),
        decoded
    );
    let mut compared = 0;
    for f in &lav {
        let Some(g) = gst.iter().find(|g| (g.pts - f.pts).abs() < 1e-6) else {
            continue;
        };
        assert_eq!((f.width, f.height), (g.width, g.height));
        assert!(
            f.y() == g.y() && f.u() == g.u() && f.v() == g.v(),
            "picture at {:.3}s differs between libavcodec and {other}",
            f.pts
        );
        compared += 1;
    }
    assert!(
        compared + 2 >= lav.len().min(gst.len()),
        "only {compared} of {} pictures had a counterpart",
        lav.len()
    );
    // Skipping pictures never costs one that was due.
    assert!(
        lav.len() + 1 >= gst.len(),
        "libavcodec handed on {} frames, {other} {}",
        lav.len(),
        gst.len()
    );
    decoded
}

#[test]
fn libavcodec_gives_the_same_h264_pictures_as_avdec() {
    same_pictures(&traffic_clip(), Codec::H264, "avdec_h264");
}

/// The traffic clip is I B B B P: at 5 of its 24 frames a second, the
/// non-reference B pictures not due are not decoded at all (libavcodec's
/// `skip_frame`), and the frames handed on are the same.
#[test]
fn libavcodec_skips_non_reference_pictures_that_are_not_due() {
    let n_aus = access_units(&traffic_clip()).len();
    let decoded = same_pictures(&traffic_clip(), Codec::H264, "avdec_h264");
    println!(
        "traffic clip: {decoded} of {n_aus} pictures decoded ({:.0}%)",
        100.0 * decoded as f64 / n_aus as f64
    );
    assert!(
        (decoded as f64) < 0.8 * n_aus as f64,
        "{decoded} of {n_aus} pictures decoded: non-reference pictures not due are decoded all the same"
    );
}

#[test]
fn libavcodec_gives_the_same_h265_pictures_as_avdec() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("traffic_h265.mp4");
    transcode(
        &clip,
        &["x265enc", "key-int-max=24", "speed-preset=ultrafast"],
        "h265parse",
    );
    same_pictures(&clip, Codec::H265, "avdec_h265");
}

#[test]
fn libavcodec_is_the_software_choice_and_avdec_its_fallback() {
    decode::init().unwrap();
    // No hardware decoder on this machine: the in-process decoder is chosen…
    let first = decode::choose_decoder(Codec::H264, None, &[]).unwrap();
    assert_eq!(first, "libavcodec");
    // …and once it has failed for a camera, GStreamer's avdec is next.
    let next = decode::choose_decoder(Codec::H264, None, &["libavcodec".to_string()]).unwrap();
    assert_eq!(next, "avdec_h264");
    assert_eq!(
        decode::choose_decoder(Codec::H265, None, &[]).unwrap(),
        "libavcodec"
    );
}

#[test]
fn libavcodec_names_damaged_input() {
    let counters = Arc::new(FrameCounters::default());
    let pipe = DecodePipeline::start(Codec::H264, "libavcodec", 5.0, 1, counters, |_| {}).unwrap();
    // Annex B units whose slices reference parameter sets that never came.
    let mut junk = vec![0, 0, 0, 1, 0x65];
    junk.extend((0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    let t0 = Instant::now();
    let mut err = None;
    while t0.elapsed() < Duration::from_secs(20) && err.is_none() {
        if let Err(e) = pipe.push(&junk, 0, SystemTime::now()) {
            err = Some(e.to_string());
        }
        err = err.or_else(|| pipe.poll_error().map(|e| e.to_string()));
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = err.expect("damaged input is reported");
    assert!(
        err.contains("libavcodec") && err.contains("could not be decoded"),
        "{err}"
    );
}

#[test]
fn non_420_pictures_are_left_to_avdec() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("y42b.mp4");
    let st = std::process::Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            "num-buffers=30",
            "!",
            "video/x-raw,format=Y42B,width=320,height=240,framerate=10/1",
            "!",
            "x264enc",
            "!",
            "h264parse",
            "!",
            "mp4mux",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", clip.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let (frames, _, err) = decode_with(&clip, Codec::H264, "libavcodec", 10.0);
    assert!(frames.is_empty());
    let err = err.expect("4:2:2 is refused with a reason");
    assert!(
        err.contains("yuv422p") && err.contains("avdec"),
        "message names the format and the way out: {err}"
    );
    // The next decoder in the ranking converts it and hands frames on.
    let (frames, _, err) = decode_with(&clip, Codec::H264, "avdec_h264", 10.0);
    assert!(err.is_none(), "{err:?}");
    assert!(frames.len() >= 20, "avdec handed on {}", frames.len());
    assert_eq!((frames[0].width, frames[0].height), (320, 240));
}
