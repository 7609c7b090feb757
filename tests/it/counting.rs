//! Counting accuracy on real footage, frame-exact (no network timing): the
//! traffic clip decoded at 5 fps → YOLOX → tracker → a line across the near
//! lanes. Ground truth, counted by hand on a slit-scan of the clip at that
//! line (see the test): 9 vehicles in the upper near lane and 7 in the lower
//! one cross it during one pass of the clip, plus 1 cut off by the clip's end.

use crate::common;

use std::path::Path;

use common::*;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use ioc_agent::config::Config;
use ioc_agent::decode::Frame;
use ioc_agent::infer::manifest::Manifest;
use ioc_agent::infer::{Detector, init_runtime};
use ioc_agent::rules::RuleEngine;
use ioc_agent::track::{Tracker, TrackerConfig};

/// Every frame of a file at `fps`, as I420.
fn frames(path: &Path, fps: u32) -> Vec<Frame> {
    gst::init().unwrap();
    let desc = format!(
        "filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! videorate ! video/x-raw,framerate={fps}/1 ! videoconvert ! video/x-raw,format=I420 ! appsink name=sink sync=false",
        path.display()
    );
    let p = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = p
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut out = Vec::new();
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        let info = gst_video::VideoInfo::from_caps(s.caps().unwrap()).unwrap();
        let buf = s.buffer().unwrap();
        let pts = buf.pts().map(|t| t.nseconds() as f64 / 1e9).unwrap_or(0.0);
        let vf = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, &info).unwrap();
        out.push(Frame::from_video(&vf, pts, std::time::SystemTime::now()).unwrap());
    }
    p.set_state(gst::State::Null).unwrap();
    out
}

#[test]
fn near_lane_crossings_match_the_hand_count() {
    let frames = frames(&traffic_clip(), 5);
    assert!(frames.len() >= 95, "decoded {} frames", frames.len());
    let env = init_runtime(&ort_lib()).unwrap();
    let m = Manifest::load(&root().join("models/yolox_nano.toml")).unwrap();
    let labels = m.labels.clone();
    let mut det = Detector::load(env, m.clone(), &model_dir().join(&m.file), 1, None).unwrap();
    let cfg_text = format!(
        r#"agent_id = "count"
manifest_dir = "{}"
[mqtt]
url = "mqtt://127.0.0.1"
[[models]]
name = "yolox_nano"
[[cameras]]
id = "c"
url = "rtsp://x/y"
[[cameras.lines]]
name = "upper"
points = [[0.5, 0.45], [0.5, 0.72]]
[[cameras.lines]]
name = "lower"
points = [[0.5, 0.72], [0.5, 1.0]]
[[cameras.rules]]
kind = "line_cross"
line = "upper"
classes = ["car", "truck", "bus"]
[[cameras.rules]]
kind = "line_cross"
line = "lower"
classes = ["car", "truck", "bus"]
"#,
        root().join("models").display()
    );
    let cfg = Config::parse(&cfg_text, Path::new("count.toml"), Path::new(".")).unwrap();
    let mut engine = RuleEngine::new(&cfg.cameras[0].rule_setup(), &labels).unwrap();
    let mut tracker = Tracker::new(TrackerConfig::default());
    let (mut upper, mut lower) = (0, 0);
    for f in &frames {
        let dets = det.detect(f).unwrap();
        let tracks = tracker.update(&dets, f.pts).to_vec();
        for fire in engine.evaluate(&tracks, f.width, f.height, f.pts, f.wall) {
            match engine.rules[fire.rule].name.as_str() {
                "line_cross:upper" => upper += 1,
                _ => lower += 1,
            }
        }
    }
    println!(
        "one pass of the clip ({} frames at 5 fps): upper lane {upper} (hand count 9, +1 cut off), lower lane {lower} (hand count 7)",
        frames.len()
    );
    // A vehicle whose box straddles the lanes may be counted on either line.
    let total = upper + lower;
    assert!(
        (15..=18).contains(&total),
        "counted {total} crossings, hand count 16 (+1 cut off)"
    );
    assert!(
        (7..=11).contains(&upper) && (5..=9).contains(&lower),
        "upper {upper}, lower {lower}"
    );
}
