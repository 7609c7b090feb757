//! The example configs a site copies (`configs/junction.toml`,
//! `configs/public-order.toml`) pass `check-config` as shipped and raise
//! their events on real footage: each is run as written, with only the
//! broker, camera URL, folders and the controller's key put in for the test.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `configs/<name>` with this test's broker, camera, folders and runtime.
fn adapt(name: &str, broker: &Broker, camera_url: &str, data: &Path) -> String {
    let text = std::fs::read_to_string(root().join("configs").join(name)).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let l = if line.starts_with("data_dir = ") {
            format!("data_dir = \"{}\"", data.display())
        } else if line.starts_with("manifest_dir = ") {
            format!(
                "manifest_dir = \"{}\"\nmodel_dir = \"{}\"\nonnxruntime = \"{}\"",
                root().join("models").display(),
                model_dir().display(),
                ort_lib().display()
            )
        } else if line.starts_with("url = \"mqtt://") {
            format!("url = \"{}\"\nstatus_interval_secs = 1", broker.url())
        } else if line.starts_with("url = \"rtsp://") {
            format!("url = \"{camera_url}\"")
        } else {
            line.to_string()
        };
        out.push_str(&l);
        out.push('\n');
    }
    out
}

#[test]
fn shipped_example_configs_pass_check_config() {
    for name in ["junction.toml", "public-order.toml"] {
        let out = Command::new(BIN)
            .args(["check-config"])
            .arg(root().join("configs").join(name))
            .env("ORT_DYLIB_PATH", ort_lib())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {text}");
        println!("{}", text.lines().next().unwrap_or(""));
    }
}

/// Alert counts by type after `secs` of the camera.
fn count_types(sub: &Subscriber) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for a in sub.alerts() {
        *by.entry(a["type"].as_str().unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    by
}

/// Runs `configs/junction.toml` on `clip` with the controller showing red,
/// signed with a key made for the test; alert counts by type.
fn run_junction(clip: &Path, secs: u64) -> (BTreeMap<String, usize>, Vec<Value>) {
    let broker = Broker::start();
    let sim = Sim::start(&[("junction", clip)]);
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    let cfg = adapt("junction.toml", &broker, &sim.url("junction"), data.path());
    let agent = Agent::start_in(&cfg, |dir| {
        // The controller's key pair: the public half where the config names it.
        let out = Command::new(BIN)
            .args(["signal", "keygen", "--out"])
            .arg(dir.join("controller.key"))
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::write(dir.join("junction-12.pub"), &out.stdout).unwrap();
    });
    let topic = "controllers/junction-12/north/signal";
    let key = agent.dir.path().join("controller.key");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        let msg = Command::new(BIN)
            .args(["signal", "sign", "--key"])
            .arg(&key)
            .args(["--topic", topic, "--controller", "junction-12", "red"])
            .output()
            .unwrap();
        assert!(msg.status.success());
        let st = Command::new("mosquitto_pub")
            .args(["-p", &broker.port.to_string(), "-t", topic, "-q", "1", "-m"])
            .arg(String::from_utf8_lossy(&msg.stdout).trim())
            .status()
            .unwrap();
        assert!(st.success());
        std::thread::sleep(Duration::from_secs(2));
    }
    let by = count_types(&sub);
    println!("junction on {}: {by:?}", clip.display());
    if by.is_empty() {
        println!("{}", agent.log_text());
    }
    let alerts = sub.alerts();
    sub.shutdown();
    (by, alerts)
}

/// The junction camera on the traffic clip, the controller at red: vehicles
/// crossing the stop line are red-light violations, cars in the curb lane
/// are in the motorbike lane, those over 40 km/h through the calibration
/// are speeding; on the clip mirrored (the near lanes driving against their
/// direction) they are wrong-way. Every alert carries the camera's place.
#[test]
fn the_junction_config_raises_its_violations_on_footage() {
    let (by, alerts) = run_junction(&traffic_clip(), 30);
    for (kind, at_least) in [
        ("traffic.red_light", 3),
        ("traffic.lane_class", 1),
        ("traffic.speeding", 1),
    ] {
        assert!(
            by.get(kind).copied().unwrap_or(0) >= at_least,
            "{kind}: {by:?}"
        );
    }
    // Lawful traffic: at most one wrong-way in ten red lights (a track that
    // jumps back under load has been seen to raise one).
    let n = |by: &BTreeMap<String, usize>, k: &str| by.get(k).copied().unwrap_or(0);
    assert!(
        n(&by, "traffic.wrong_way") * 10 <= n(&by, "traffic.red_light"),
        "lawful traffic: {by:?}"
    );
    for a in &alerts {
        assert_eq!(a["place"]["name"], "Nút giao số 12, hướng Bắc", "{a}");
    }
    let speeds: Vec<f64> = alerts
        .iter()
        .filter_map(|a| a["speed_kmh"].as_f64())
        .collect();
    assert!(speeds.iter().all(|s| *s > 40.0), "{speeds:?}");
    let dir = tempfile::tempdir().unwrap();
    let mirrored = dir.path().join("mirrored.mp4");
    transcode(
        &mirrored,
        &[
            "videoflip",
            "video-direction=horiz",
            "!",
            "videoconvert",
            "!",
            "x264enc",
            "speed-preset=ultrafast",
            "key-int-max=24",
            "bitrate=1500",
        ],
        "h264parse",
    );
    let (by, _) = run_junction(&mirrored, 30);
    assert!(
        by.get("traffic.wrong_way").copied().unwrap_or(0) >= 2,
        "mirrored traffic: {by:?}"
    );
    // Driving away from the junction, nobody crosses its stop line into it:
    // at most one in ten (one was seen under load: a jumping track).
    assert!(
        n(&by, "traffic.red_light") * 10 <= n(&by, "traffic.wrong_way"),
        "mirrored traffic: {by:?}"
    );
}

/// The public-order camera on the people clip: the head-count is over the
/// limit (a crowd), pedestrians stay at the office door longer than the
/// dwell (lingering), and with the night window moved to now, people in the
/// depot yard are intruders.
#[test]
fn the_public_order_config_raises_its_events_on_footage() {
    let broker = Broker::start();
    let sim = Sim::start(&[("square", &shared().join("videos/opencv4nodejs_people.mp4"))]);
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    // The night window as shipped, moved to the hour around now (local
    // time), so the test does not depend on when it runs.
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Ho_Chi_Minh);
    let from = (now - chrono::Duration::minutes(30)).format("%H:%M");
    let to = (now + chrono::Duration::minutes(30)).format("%H:%M");
    let shipped = r#"schedule = { start = "22:00", end = "05:00", tz = "Asia/Ho_Chi_Minh" }"#;
    let cfg = adapt(
        "public-order.toml",
        &broker,
        &sim.url("square"),
        data.path(),
    );
    assert!(cfg.contains(shipped), "the shipped schedule changed");
    let cfg = cfg.replace(
        shipped,
        &format!(r#"schedule = {{ start = "{from}", end = "{to}", tz = "Asia/Ho_Chi_Minh" }}"#),
    );
    let agent = Agent::start(&cfg);
    let t0 = Instant::now();
    let want = ["order.crowd", "order.loitering", "order.intrusion"];
    let by = loop {
        let by = count_types(&sub);
        if want.iter().all(|k| by.contains_key(*k)) || t0.elapsed() > Duration::from_secs(60) {
            break by;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    println!(
        "public order on the people clip in {:.0} s: {by:?}",
        t0.elapsed().as_secs_f64()
    );
    for k in want {
        assert!(
            by.contains_key(k),
            "{k}: {by:?}; log:\n{}",
            agent.log_text()
        );
    }
    for a in sub.alerts() {
        assert_eq!(a["place"]["province"]["code"], "01", "{a}");
    }
    sub.shutdown();
}
