//! Quiet frames (`skip_quiet_frames`): on a still picture the model rests
//! while the stationary vehicles stay tracked and their dwell rule fires.

use crate::common;

use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "quiet-metrics-token-0123456789";

/// The traffic clip's first picture held for 20 s (25 fps, H.264).
fn still_clip(dest: &std::path::Path) {
    transcode(
        dest,
        &[
            "imagefreeze",
            "num-buffers=500",
            "!",
            "video/x-raw,framerate=25/1",
            "!",
            "x264enc",
            "key-int-max=50",
        ],
        "h264parse",
    );
}

fn skipped(s: &prometheus_parse::Scrape, camera: &str, reason: &str) -> f64 {
    s.samples
        .iter()
        .find(|x| {
            x.metric == "ioc_frames_skipped_total"
                && x.labels.get("camera") == Some(camera)
                && x.labels.get("reason") == Some(reason)
        })
        .and_then(|x| match x.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
        .unwrap_or(0.0)
}

#[test]
fn a_still_picture_rests_the_model_and_its_parked_cars_still_fire() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("still.mp4");
    still_clip(&clip);
    let broker = Broker::start();
    let sim = Sim::start(&[("gated", &clip), ("ungated", &clip)]);
    let sub = Subscriber::start(&broker, "ioc/v1/+/events");
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg = config_head("ward-quiet", &broker, data.path())
        + &format!(
            "\n[[models]]\nname = \"yolox_nano\"\n[http]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n"
        );
    for (id, gate) in [("gated", true), ("ungated", false)] {
        cfg += &format!(
            r#"
[[cameras]]
id = "{id}"
url = "{url}"
skip_quiet_frames = {gate}
[[cameras.zones]]
name = "all"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
[[cameras.rules]]
kind = "illegal_stop"
zone = "all"
dwell_secs = 4.0
classes = ["car", "truck", "bus"]
"#,
            url = sim.url(id)
        );
    }
    let agent = Agent::start(&cfg);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(14));
    let m = loop {
        if let Some(m) = scrape_metrics(port, TOKEN) {
            break m;
        }
        assert!(t0.elapsed() < Duration::from_secs(40), "no /metrics");
        std::thread::sleep(Duration::from_millis(200));
    };
    let inferred = |c: &str| metric_value(&m, "ioc_frames_inferred_total", c).unwrap_or(0.0);
    let (gi, ui) = (inferred("gated"), inferred("ungated"));
    let quiet = skipped(&m, "gated", "quiet");
    let alerts = sub.alerts();
    let stops = |c: &str| {
        alerts
            .iter()
            .filter(|a| a["camera"] == c && a["type"] == "traffic.illegal_stop")
            .count()
    };
    let (ga, ua) = (stops("gated"), stops("ungated"));
    println!(
        "still picture, 14 s: model frames gated {gi} (quiet {quiet}) vs ungated {ui}; illegal_stop alerts gated {ga} vs ungated {ua}"
    );
    assert_eq!(skipped(&m, "ungated", "quiet"), 0.0);
    assert!(
        quiet > 0.0 && gi * 3.0 < ui,
        "gated {gi}, ungated {ui}, quiet {quiet}"
    );
    assert!(
        ua > 0,
        "no illegal_stop on the still picture:\n{}",
        agent.log_text()
    );
    assert_eq!(ga, ua, "gating changed the events");
    sub.shutdown();
}

/// The busy traffic clip, gated and not, side by side: the gate must not
/// cost events where things move.
#[test]
fn busy_traffic_raises_the_same_crossings_gated_or_not() {
    let broker = Broker::start();
    let clip = traffic_clip();
    let sim = Sim::start(&[("gated", &clip), ("ungated", &clip)]);
    let sub = Subscriber::start(&broker, "ioc/v1/+/events");
    let data = tempfile::tempdir().unwrap();
    let mut cfg =
        config_head("ward-busy", &broker, data.path()) + "\n[[models]]\nname = \"yolox_nano\"\n";
    for (id, gate) in [("gated", true), ("ungated", false)] {
        cfg += &format!(
            r#"
[[cameras]]
id = "{id}"
url = "{url}"
skip_quiet_frames = {gate}
[[cameras.lines]]
name = "mid"
points = [[0.5, 0.3], [0.5, 1.0]]
[[cameras.rules]]
name = "crossing"
kind = "line_cross"
line = "mid"
classes = ["car", "truck", "bus"]
"#,
            url = sim.url(id)
        );
    }
    let agent = Agent::start(&cfg);
    std::thread::sleep(Duration::from_secs(30));
    let alerts = sub.alerts();
    let n = |c: &str| alerts.iter().filter(|a| a["camera"] == c).count();
    let (g, u) = (n("gated"), n("ungated"));
    println!("busy traffic, 30 s: crossings gated {g} vs ungated {u}");
    assert!(
        u >= 5,
        "too few crossings to compare:\n{}",
        agent.log_text()
    );
    assert!(g * 100 >= u * 95, "gated {g} < 95% of ungated {u}");
    sub.shutdown();
}
