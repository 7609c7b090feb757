//! The real path end to end: simulator serving real footage over RTSP →
//! ioc-agent (retina, GStreamer decode, ONNX Runtime, tracker, rules) → a
//! mosquitto this test starts → a separate subscriber.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;
use sha2::Digest;

const ZONES: &str = r#"
[[cameras.zones]]
name = "near_lanes"
polygon = [[0.30, 0.45], [0.75, 0.45], [0.75, 1.0], [0.30, 1.0]]

[[cameras.lines]]
name = "near_midline"
points = [[0.5, 0.45], [0.5, 1.0]]

[[cameras.rules]]
name = "car in near lanes"
kind = "zone_enter"
zone = "near_lanes"
classes = ["car"]

[[cameras.rules]]
name = "near lanes eastbound"
kind = "line_cross"
line = "near_midline"
classes = ["car", "truck", "bus"]
direction = "left_to_right"
"#;

fn camera(id: &str, url: &str, model: &str) -> String {
    format!(
        "\n[[cameras]]\nid = \"{id}\"\nurl = \"{url}\"\nmodel = \"{model}\"\ndetect_fps = 5.0\nbackoff_min_secs = 0.2\nbackoff_max_secs = 1.0\n{ZONES}"
    )
}

fn model(name: &str) -> String {
    format!("\n[[models]]\nname = \"{name}\"\n")
}

/// Checks every documented field of an alert.
fn check_alert(a: &Value, agent: &str, camera: &str, model: &str) {
    assert_eq!(a["schema"], "ioc.alert/1");
    let names = match a["type"].as_str() {
        Some("object.zone_enter") => ("Object entered zone", "Người, phương tiện vào khu vực"),
        _ => ("Object crossed line", "Người, phương tiện đi qua vạch"),
    };
    assert_eq!(
        (a["name"].as_str(), a["name_vi"].as_str()),
        (Some(names.0), Some(names.1))
    );
    let id = a["id"].as_str().unwrap();
    assert_eq!(id.len(), 26, "ULID id: {id}");
    assert!(ulid::Ulid::from_string(id).is_ok());
    assert!(matches!(
        a["type"].as_str(),
        Some("object.zone_enter" | "object.line_cross")
    ));
    assert_eq!(a["agent_id"], agent);
    assert_eq!(a["camera"], camera);
    assert!(a["rule"].is_string());
    let t =
        chrono::DateTime::parse_from_rfc3339(a["time"].as_str().unwrap()).expect("RFC 3339 time");
    let age = chrono::Utc::now().signed_duration_since(t);
    assert!(age.num_seconds().abs() < 120, "time is now-ish: {t}");
    assert!(a["time"].as_str().unwrap().ends_with('Z'), "UTC");
    assert_eq!(a["time_source"], "agent_clock");
    let objs = a["objects"].as_array().unwrap();
    assert_eq!(objs.len(), 1);
    let o = &objs[0];
    assert!(o["class"].is_string());
    let score = o["score"].as_f64().unwrap();
    assert!(score > 0.0 && score <= 1.0);
    assert!(o["track_id"].as_u64().unwrap() >= 1);
    let b: Vec<f64> = o["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(b.len(), 4);
    assert!(
        b.iter().all(|v| (0.0..=1.0).contains(v)),
        "normalised box {b:?}"
    );
    assert!(b[0] < b[2] && b[1] < b[3]);
    assert_eq!(a["frame"]["width"], 640);
    assert_eq!(a["frame"]["height"], 360);
    assert_eq!(a["model"]["name"], model);
    assert!(a["model"]["version"].is_string());
    assert_eq!(a["agent_version"], env!("CARGO_PKG_VERSION"));
    let th = &a["thumbnail"];
    assert_eq!(
        th["topic"].as_str().unwrap(),
        format!("ioc/v1/{agent}/events/{id}/thumbnail")
    );
    assert_eq!(th["content_type"], "image/jpeg");
    assert_eq!(th["sha256"].as_str().unwrap().len(), 64);
}

/// The thumbnail arrives on its topic, decodes as a JPEG of the stated size and hash.
fn check_thumbnail(sub: &Subscriber, a: &Value) {
    let th = &a["thumbnail"];
    let topic = th["topic"].as_str().unwrap().to_string();
    let msg = sub
        .wait_for(Duration::from_secs(10), |m| m.topic == topic)
        .unwrap_or_else(|| panic!("thumbnail on {topic}"));
    assert_eq!(msg.payload.len() as u64, th["bytes"].as_u64().unwrap());
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&msg.payload)),
        th["sha256"].as_str().unwrap()
    );
    let img = image::load_from_memory_with_format(&msg.payload, image::ImageFormat::Jpeg)
        .expect("thumbnail is a JPEG");
    assert_eq!(img.width() as u64, th["width"].as_u64().unwrap());
    assert_eq!(img.height() as u64, th["height"].as_u64().unwrap());
}

fn end_to_end(model_name: &str, clip: &Path, kill: bool) {
    let broker = Broker::start();
    let sim = Sim::start(&[("traffic", clip)]);
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    let agent_id = format!("ward-{}", model_name.replace('_', "-"));
    let cfg = config_head(&agent_id, &broker, data.path())
        + &model(model_name)
        + &camera("traffic", &sim.url("traffic"), model_name);
    let agent = Agent::start(&cfg);

    let car = sub.wait_for(Duration::from_secs(60), |m| {
        m.topic.ends_with("/events")
            && serde_json::from_slice::<Value>(&m.payload).is_ok_and(|a| {
                a["objects"][0]["class"] == "car"
                    && a["zone"] == "near_lanes"
                    && a["type"] == "object.zone_enter"
            })
    });
    let Some(car) = car else {
        panic!(
            "no car alert in the zone within 60 s; agent log:\n{}",
            agent.log_text()
        );
    };
    let a: Value = serde_json::from_slice(&car.payload).unwrap();
    println!("{model_name}: alert {a}");
    check_alert(&a, &agent_id, "traffic", model_name);
    check_thumbnail(&sub, &a);

    // One object, one alert: no track id fires the same rule twice.
    std::thread::sleep(Duration::from_secs(3));
    let alerts = sub.alerts();
    let mut seen = std::collections::HashSet::new();
    for x in &alerts {
        let key = (
            x["rule"].to_string(),
            x["objects"][0]["track_id"].as_u64().unwrap(),
        );
        assert!(
            seen.insert(key.clone()),
            "rule fired twice for one track: {key:?}"
        );
    }
    let crossings: Vec<&Value> = alerts
        .iter()
        .filter(|x| x["type"] == "object.line_cross")
        .collect();
    for c in &crossings {
        assert_eq!(c["direction"], "left_to_right");
        assert_eq!(c["line"], "near_midline");
    }
    println!(
        "{model_name}: {} alerts, {} line crossings",
        alerts.len(),
        crossings.len()
    );

    // Retained status says online and streaming.
    let status = sub
        .wait_for(Duration::from_secs(5), |m| {
            m.topic == format!("ioc/v1/{agent_id}/status")
                && serde_json::from_slice::<Value>(&m.payload).is_ok_and(|s| {
                    s["state"] == "online"
                        && s["cameras"]["traffic"]["state"] == "streaming"
                        && s["cameras"]["traffic"]["frames_inferred"].as_u64() > Some(0)
                })
        })
        .expect("online status");
    let s: Value = serde_json::from_slice(&status.payload).unwrap();
    assert_eq!(s["schema"], "ioc.status/1");
    assert!(s["cameras"]["traffic"]["frames_inferred"].as_u64().unwrap() > 0);

    // Leaving: a clean stop says so; a killed agent is declared offline by its Last Will.
    let mut agent = agent;
    let reason = if kill { "connection lost" } else { "shutdown" };
    if kill {
        let _ = agent.proc.child.kill();
    } else {
        agent.proc.terminate();
        assert!(
            agent
                .proc
                .child
                .try_wait()
                .unwrap()
                .is_some_and(|s| s.success()),
            "clean exit on SIGTERM"
        );
    }
    let off = sub.wait_for(Duration::from_secs(10), |m| {
        m.topic == format!("ioc/v1/{agent_id}/status")
            && serde_json::from_slice::<Value>(&m.payload).is_ok_and(|s| s["state"] == "offline")
    });
    let off: Value = serde_json::from_slice(&off.expect("offline status").payload).unwrap();
    assert_eq!(off["reason"], reason);
    sub.shutdown();
}

#[test]
fn yolox_alerts_reach_the_broker() {
    end_to_end("yolox_nano", &traffic_clip(), false);
}

#[test]
fn nanodet_alerts_reach_the_broker() {
    end_to_end("nanodet_m", &traffic_clip(), true);
}

/// A line crossing in the configured direction is reported, the opposite is
/// not: in the near lanes of this clip traffic drives left to right.
#[test]
fn line_crossing_direction_on_real_footage() {
    let broker = Broker::start();
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let sub = Subscriber::start(&broker, "ioc/v1/+/events");
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config_head("ward-lines", &broker, data.path()) + &model("yolox_nano");
    cfg += &format!(
        r#"
[[cameras]]
id = "traffic"
url = "{}"
[[cameras.lines]]
name = "near"
points = [[0.5, 0.45], [0.5, 1.0]]
[[cameras.rules]]
name = "westbound"
kind = "line_cross"
line = "near"
classes = ["car", "truck", "bus"]
direction = "right_to_left"
[[cameras.rules]]
name = "eastbound"
kind = "line_cross"
line = "near"
classes = ["car", "truck", "bus"]
direction = "left_to_right"
"#,
        sim.url("traffic")
    );
    let agent = Agent::start(&cfg);
    std::thread::sleep(Duration::from_secs(25));
    let alerts = sub.alerts();
    let west = alerts.iter().filter(|a| a["rule"] == "westbound").count();
    let east = alerts.iter().filter(|a| a["rule"] == "eastbound").count();
    println!("near lanes: {west} westbound, {east} eastbound crossings in 25 s");
    assert!(
        east >= 3,
        "eastbound crossings: {east}; log:\n{}",
        agent.log_text()
    );
    // A stray westbound report (tracker glitch) must stay rare.
    assert!(west * 5 <= east, "west {west} vs east {east}");
    sub.shutdown();
}

/// One camera is unreachable (and has credentials in its URL): it is retried
/// with backoff while the other camera keeps producing alerts; no password
/// reaches the log or the broker.
#[test]
fn dead_camera_is_retried_and_never_stops_another() {
    let broker = Broker::start();
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    let closed = free_port();
    let live = sim
        .url("traffic")
        .replace("rtsp://", "rtsp://viewer:An0therPw@");
    let mut cfg = config_head("ward-two", &broker, data.path()) + &model("yolox_nano");
    cfg += &camera(
        "dead",
        &format!("rtsp://admin:S3cretPw@127.0.0.1:{closed}/Streaming/101"),
        "yolox_nano",
    );
    cfg += &camera("live", &live, "yolox_nano");
    let agent = Agent::start(&cfg);

    let got = sub.wait_for(Duration::from_secs(60), |m| {
        m.topic.ends_with("/events")
            && serde_json::from_slice::<Value>(&m.payload).is_ok_and(|a| a["camera"] == "live")
    });
    assert!(
        got.is_some(),
        "live camera produced no alert; log:\n{}",
        agent.log_text()
    );
    std::thread::sleep(Duration::from_secs(3));
    let log = agent.log_text();
    let retries = log
        .lines()
        .filter(|l| l.contains("id=dead") && l.contains("retrying"))
        .count();
    assert!(
        retries >= 3,
        "dead camera retried {retries} times; log:\n{log}"
    );
    // Backoff grows: the delays logged are not all the minimum.
    let delays: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("id=dead") && l.contains("retry_in_ms="))
        .filter_map(|l| {
            l.split("retry_in_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        delays.iter().max() > delays.iter().min(),
        "backoff delays {delays:?}"
    );
    for secret in ["S3cretPw", "An0therPw"] {
        assert!(!log.contains(secret), "password in the log:\n{log}");
        for m in sub.all() {
            assert!(
                !String::from_utf8_lossy(&m.payload).contains(secret),
                "password on {}",
                m.topic
            );
        }
    }
    let status = sub
        .wait_for(Duration::from_secs(5), |m| {
            m.topic.ends_with("/status")
                && serde_json::from_slice::<Value>(&m.payload)
                    .is_ok_and(|s| s["cameras"]["dead"]["state"] == "retrying")
        })
        .expect("status shows the dead camera retrying");
    let s: Value = serde_json::from_slice(&status.payload).unwrap();
    assert!(
        s["cameras"]["dead"]["last_error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1")
    );
    sub.shutdown();
}

/// H.265: the simulator serves an H.265 file and the agent decodes it.
#[test]
fn h265_camera_produces_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let h265 = dir.path().join("traffic_h265.mp4");
    let st = std::process::Command::new("gst-launch-1.0")
        .arg("-q")
        .arg("filesrc")
        .arg(format!("location={}", traffic_clip().display()))
        .args([
            "!",
            "qtdemux",
            "!",
            "h264parse",
            "!",
            "avdec_h264",
            "!",
            "videoconvert",
            "!",
            "video/x-raw,format=I420",
        ])
        .args([
            "!",
            "x265enc",
            "speed-preset=ultrafast",
            "bitrate=800",
            "key-int-max=48",
            "!",
            "h265parse",
            "!",
            "mp4mux",
        ])
        .args(["!", "filesink"])
        .arg(format!("location={}", h265.display()))
        .status()
        .expect("gst-launch-1.0");
    assert!(st.success(), "transcode to H.265");
    let broker = Broker::start();
    let sim = Sim::start(&[("hevc", &h265)]);
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    let cfg = config_head("ward-hevc", &broker, data.path())
        + &model("yolox_nano")
        + &camera("hevc", &sim.url("hevc"), "yolox_nano");
    let agent = Agent::start(&cfg);
    let got = sub.wait_for(Duration::from_secs(60), |m| m.topic.ends_with("/events"));
    assert!(
        got.is_some(),
        "no alert from the H.265 camera; log:\n{}",
        agent.log_text()
    );
    let status = sub
        .wait_for(Duration::from_secs(5), |m| {
            m.topic.ends_with("/status")
                && serde_json::from_slice::<Value>(&m.payload)
                    .is_ok_and(|s| s["cameras"]["hevc"]["codec"] == "h265")
        })
        .expect("status reports h265");
    let s: Value = serde_json::from_slice(&status.payload).unwrap();
    println!("h265 camera status: {}", s["cameras"]["hevc"]);
    sub.shutdown();
}
