//! Rules through the whole pipeline on real footage (simulator → agent →
//! broker → subscriber).

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn people_clip() -> std::path::PathBuf {
    shared().join("videos/opencv4nodejs_people.mp4")
}

/// Near-lane traffic in the clip drives left to right. With that direction
/// configured nothing is wrong-way; with the lane reversed every vehicle that
/// crosses is, once.
#[test]
fn wrong_way_on_real_traffic() {
    let broker = Broker::start();
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let sub = Subscriber::start(&broker, "ioc/v1/+/events");
    let data = tempfile::tempdir().unwrap();
    let mut cfg =
        config_head("ward-lanes", &broker, data.path()) + "\n[[models]]\nname = \"yolox_nano\"\n";
    for (id, arrow) in [
        ("lawful", "[[0.1, 0.75], [0.9, 0.75]]"),
        ("reversed", "[[0.9, 0.75], [0.1, 0.75]]"),
    ] {
        cfg += &format!(
            r#"
[[cameras]]
id = "{id}"
url = "{url}"
[[cameras.lanes]]
name = "near"
polygon = [[0.0, 0.45], [1.0, 0.45], [1.0, 1.0], [0.0, 1.0]]
direction = {arrow}
[[cameras.rules]]
kind = "wrong_way"
lane = "near"
classes = ["car", "truck", "bus"]
"#,
            url = sim.url("traffic")
        );
    }
    let agent = Agent::start(&cfg);
    std::thread::sleep(Duration::from_secs(30));
    let alerts = sub.alerts();
    let by = |cam: &str| {
        alerts
            .iter()
            .filter(|a| a["camera"] == cam && a["type"] == "traffic.wrong_way")
            .collect::<Vec<_>>()
    };
    let (lawful, reversed) = (by("lawful"), by("reversed"));
    println!(
        "wrong_way in 30 s: lawful lane {}, reversed lane {}",
        lawful.len(),
        reversed.len()
    );
    assert!(
        lawful.is_empty(),
        "lawful traffic reported wrong-way: {lawful:?}"
    );
    assert!(
        reversed.len() >= 3,
        "reversed lane: {} events; log:\n{}",
        reversed.len(),
        agent.log_text()
    );
    let mut tracks = HashSet::new();
    for a in &reversed {
        assert_eq!(a["lane"], "near");
        assert!(
            tracks.insert(a["objects"][0]["track_id"].as_u64().unwrap()),
            "a track counted twice"
        );
    }
    sub.shutdown();
}

/// The people camera with two crowd rules over the whole picture: `low
/// limit` (more than 5, below the scene's head-count) and `high limit` (more
/// than 40, above it); `extra` adds camera keys.
fn crowd_camera(url: &str, extra: &str) -> String {
    format!(
        r#"
[[models]]
name = "yolox_nano"

[[cameras]]
id = "square"
url = "{url}"
{extra}[[cameras.zones]]
name = "all"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
[[cameras.rules]]
name = "low limit"
kind = "crowd"
zone = "all"
max_count = 5
min_secs = 2.0
[[cameras.rules]]
name = "high limit"
kind = "crowd"
zone = "all"
max_count = 40
min_secs = 2.0
"#
    )
}

/// The people clip has about 14 persons in view: a crowd limit below that
/// raises `order.crowd` once (and ends it when the head-count drops); a limit
/// above it stays silent.
#[test]
fn crowd_on_real_people() {
    let broker = Broker::start();
    let sim = Sim::start(&[("people", &people_clip())]);
    let sub = Subscriber::start(&broker, "ioc/v1/+/events");
    let data = tempfile::tempdir().unwrap();
    let cfg =
        config_head("ward-crowd", &broker, data.path()) + &crowd_camera(&sim.url("people"), "");
    let agent = Agent::start(&cfg);
    std::thread::sleep(Duration::from_secs(45));
    let alerts: Vec<Value> = sub.alerts();
    for a in &alerts {
        println!(
            "{} {} {} count {}",
            a["time"], a["rule"], a["phase"], a["count"]
        );
    }
    let low: Vec<&Value> = alerts.iter().filter(|a| a["rule"] == "low limit").collect();
    assert!(
        alerts.iter().all(|a| a["rule"] != "high limit"),
        "the high limit fired"
    );
    assert!(
        !low.is_empty(),
        "no crowd event; log:\n{}",
        agent.log_text()
    );
    assert_eq!(low[0]["phase"], "start");
    assert!(low[0]["count"].as_u64().unwrap() > 5);
    // Phases alternate: never two starts without an end between them.
    for w in low.windows(2) {
        assert_ne!(
            w[0]["phase"], w[1]["phase"],
            "two {} in a row",
            w[0]["phase"]
        );
    }
    // Stopping the agent with the crowd open ends it (`camera_stopped`):
    // published on the way out, or at the latest from the outbox when the
    // agent starts again.
    let open = low.last().is_some_and(|a| a["phase"] == "start");
    let mut agent = agent;
    agent.proc.terminate();
    let is_stop_end = |m: &Msg| {
        serde_json::from_slice::<Value>(&m.payload).is_ok_and(|a| {
            a["rule"] == "low limit" && a["phase"] == "end" && a["end_reason"] == "camera_stopped"
        })
    };
    let mut got = sub.wait_for(Duration::from_secs(5), is_stop_end);
    let log = agent.log_text();
    if got.is_none() && open {
        let _again = Agent::start(&cfg);
        got = sub.wait_for(Duration::from_secs(30), is_stop_end);
    }
    println!(
        "crowd open at stop: {open}; camera_stopped end: {:?}",
        got.as_ref()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
    );
    assert_eq!(
        got.is_some(),
        open,
        "an end with camera_stopped comes exactly when a crowd was open; log:\n{log}"
    );
    sub.shutdown();
}

/// The people clip served once per session, like a camera whose stream ends
/// and comes back: the crowd raised on the first pass is raised once, ended
/// when the stream ends (`end_reason: "stream_lost"`, pictured with the last
/// frame it was seen on), and raised afresh on the next pass.
#[test]
fn crowd_ends_when_the_clip_ends_and_starts_again() {
    let broker = Broker::start();
    let sim = Sim::start_looping(&[("square", &people_clip())], 1);
    let sub = Subscriber::start(&broker, "ioc/v1/+/events");
    let data = tempfile::tempdir().unwrap();
    let cfg = config_head("ward-crowd-loop", &broker, data.path())
        + &crowd_camera(
            &sim.url("square"),
            "inactivity_timeout_secs = 3\nbackoff_min_secs = 0.5\n",
        );
    let agent = Agent::start(&cfg);
    // Two passes of the 19 s clip, the reconnection between them, margin.
    let starts = |sub: &Subscriber| {
        sub.alerts()
            .iter()
            .filter(|a| a["rule"] == "low limit" && a["phase"] == "start")
            .count()
    };
    let t0 = std::time::Instant::now();
    while starts(&sub) < 2 && t0.elapsed() < Duration::from_secs(90) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let alerts: Vec<Value> = sub.alerts();
    for a in &alerts {
        println!(
            "{} {} {} count {} end_reason {}",
            a["time"], a["rule"], a["phase"], a["count"], a["end_reason"]
        );
    }
    assert!(
        alerts.iter().all(|a| a["rule"] != "high limit"),
        "the high limit fired"
    );
    let low: Vec<&Value> = alerts.iter().filter(|a| a["rule"] == "low limit").collect();
    let phases: Vec<&str> = low.iter().map(|a| a["phase"].as_str().unwrap()).collect();
    assert!(
        phases.len() >= 3,
        "want start, end, start; got {phases:?}; log:\n{}",
        agent.log_text()
    );
    assert_eq!(&phases[..3], &["start", "end", "start"], "{phases:?}");
    // Raised once on the first pass: the end is the stream's, not the crowd's.
    assert_eq!(low[1]["end_reason"], "stream_lost", "{}", low[1]);
    assert!(low[0]["count"].as_u64().unwrap() > 5);
    assert!(
        low[1]["thumbnail"].is_object(),
        "the end is pictured: {}",
        low[1]
    );
    assert!(
        agent
            .log_text()
            .contains("session ended with the event open; ending it"),
        "the log says why the event ended"
    );
    sub.shutdown();
}

/// Red light decided by the traffic controller's state on MQTT: crossings on
/// red are reported with their signal source; after the switch to green, none.
#[test]
fn red_light_from_controller_on_mqtt() {
    let broker = Broker::start();
    let sim = Sim::start(&[("junction", &traffic_clip())]);
    let sub = Subscriber::start(&broker, "ioc/v1/+/events");
    let data = tempfile::tempdir().unwrap();
    let topic = "controllers/junction-12/signal";
    let cfg = config_head("ward-signal", &broker, data.path())
        + &format!(
            r#"
[[models]]
name = "yolox_nano"

[[cameras]]
id = "junction"
url = "{url}"
[cameras.signal]
source = "mqtt"
topic = "{topic}"
# This controller publishes on change only (retained): trust a state for a minute.
max_age_secs = 60
[[cameras.lines]]
name = "stop"
points = [[0.5, 0.45], [0.5, 1.0]]
[[cameras.rules]]
kind = "red_light"
line = "stop"
direction = "left_to_right"
classes = ["car", "truck", "bus"]
"#,
            url = sim.url("junction")
        );
    let controller = |state: &str| {
        let st = std::process::Command::new("mosquitto_pub")
            .args([
                "-p",
                &broker.port.to_string(),
                "-t",
                topic,
                "-r",
                "-q",
                "1",
                "-m",
                state,
            ])
            .status()
            .unwrap();
        assert!(st.success());
    };
    controller("red");
    let agent = Agent::start(&cfg);
    std::thread::sleep(Duration::from_secs(25));
    controller(r#"{"state": "green"}"#);
    std::thread::sleep(Duration::from_secs(3));
    let on_red = sub
        .alerts()
        .into_iter()
        .filter(|a| a["type"] == "traffic.red_light")
        .count();
    std::thread::sleep(Duration::from_secs(12));
    let alerts: Vec<Value> = sub
        .alerts()
        .into_iter()
        .filter(|a| a["type"] == "traffic.red_light")
        .collect();
    println!(
        "red_light: {on_red} on red in 25 s, {} after 12 s of green",
        alerts.len() - on_red
    );
    assert!(
        on_red >= 3,
        "crossings on red: {on_red}; log:\n{}",
        agent.log_text()
    );
    assert_eq!(alerts.len(), on_red, "red_light events while green");
    for a in &alerts {
        assert_eq!(a["signal"]["state"], "red");
        assert_eq!(a["signal"]["source"], "mqtt");
        assert_eq!(a["direction"], "left_to_right");
    }
    sub.shutdown();
}

/// Cascades with real models: NanoDet runs as the second model on crops of
/// the cars YOLOX tracks (a stand-in for a helmet classifier on riders: no
/// helmet model ships here), and on the whole frame (a stand-in for a fire /
/// smoke model). Proves the plumbing: two models, crops, rate limits, votes.
#[test]
fn cascade_second_model_on_crops_and_frames() {
    let broker = Broker::start();
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let sub = Subscriber::start(&broker, "ioc/v1/+/events");
    let data = tempfile::tempdir().unwrap();
    let cfg = config_head("ward-cascade", &broker, data.path())
        + &format!(
            r#"
[[models]]
name = "yolox_nano"
[[models]]
name = "nanodet_m"

[[cameras]]
id = "traffic"
url = "{url}"
model = "yolox_nano"
[[cameras.rules]]
name = "second look at cars"
kind = "no_helmet"
classes = ["car"]
model = "nanodet_m"
labels = ["car"]
region = "box"
min_confidence = 0.4
min_votes = 2
max_rate_hz = 2.0
[[cameras.rules]]
name = "whole-frame model"
kind = "fire_smoke"
model = "nanodet_m"
labels = ["car"]
min_confidence = 0.4
"#,
            url = sim.url("traffic")
        );
    let agent = Agent::start(&cfg);
    std::thread::sleep(Duration::from_secs(25));
    let alerts = sub.alerts();
    let crops: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["type"] == "traffic.no_helmet")
        .collect();
    let frames: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["type"] == "order.fire_smoke")
        .collect();
    println!(
        "cascade: {} crop-model events, {} whole-frame events",
        crops.len(),
        frames.len()
    );
    assert!(
        crops.len() >= 3,
        "crop cascade events: {}; log:\n{}",
        crops.len(),
        agent.log_text()
    );
    let mut seen = HashSet::new();
    for a in &crops {
        assert!(a["confidence"].as_f64().unwrap() >= 0.4);
        assert!(
            seen.insert(a["objects"][0]["track_id"].as_u64().unwrap()),
            "a track fired twice"
        );
    }
    assert_eq!(
        frames.first().map(|a| a["phase"].clone()),
        Some(Value::from("start"))
    );
    sub.shutdown();
}
