//! The installer's setup page in headless Chromium: draw a zone on camera a's
//! snapshot with the mouse, save; the agent's running config has the new
//! polygon, which is written to `<data_dir>/setup.toml` (the config file is
//! left as it was: it is read-only to the service as shipped), a fresh load
//! of the config sees it, and camera b's frame counter (from /metrics) never
//! pauses.

use crate::common;

use std::time::{Duration, Instant};

use common::webdriver::Driver;
use common::*;
use serde_json::Value;

const TOKEN: &str = "setup-token-0123456789";

fn frames(port: u16, camera: &str) -> f64 {
    scrape_metrics(port, TOKEN)
        .and_then(|s| metric_value(&s, "ioc_frames_received_total", camera))
        .unwrap_or(-1.0)
}

#[test]
fn installer_draws_a_zone_and_it_is_applied_live() {
    let broker = Broker::start();
    let sim = Sim::start(&[("a", &traffic_clip()), ("b", &traffic_clip())]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config_head("ward-setup", &broker, data.path())
        + &format!(
            r#"
# Installer's note: this comment must survive a save from the setup page.
[[models]]
name = "yolox_nano"
[http]
listen = "127.0.0.1:{port}"
token = "{TOKEN}"

[[cameras]]
id = "a"
url = "{a}"   # main gate

[[cameras]]
id = "b"
url = "{b}"
"#,
            a = sim.url("a"),
            b = sim.url("b"),
        );
    let agent = Agent::start(&cfg);
    let config_path = agent.dir.path().join("agent.toml");
    let config_before = std::fs::read_to_string(&config_path).unwrap();
    let start = Instant::now();
    while frames(port, "a") < 30.0 || frames(port, "b") < 30.0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not streaming:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let profile = tempfile::tempdir().unwrap();
    let d = Driver::start(profile.path());
    d.goto(&format!("http://127.0.0.1:{port}/setup"));
    let token = d.wait_find("#token", Duration::from_secs(20));
    d.type_in(&token, TOKEN);
    d.click(&d.wait_find("#login", Duration::from_secs(5)));
    // The snapshot of camera a is shown.
    let start = Instant::now();
    loop {
        let v = d.script(
            "const i = document.getElementById('snap'); return [document.getElementById('camera').value, i.complete && i.naturalWidth, document.getElementById('draw').width]",
        );
        if v[0] == "a" && v[1].as_u64().unwrap_or(0) > 0 && v[2].as_u64().unwrap_or(0) > 0 {
            println!("setup page shows camera a, snapshot {}px wide", v[1]);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no snapshot: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let name = d.wait_find("#geo-name", Duration::from_secs(5));
    d.type_in(&name, "drawn");
    d.click(&d.wait_find("#new-zone", Duration::from_secs(5)));
    let canvas = d.wait_find("#draw", Duration::from_secs(5));
    d.script("document.getElementById('draw').scrollIntoView({block: 'center'}); return 0");
    let size = d.script("const c = document.getElementById('draw').getBoundingClientRect(); return [c.width, c.height]");
    let (w, h) = (size[0].as_f64().unwrap(), size[1].as_f64().unwrap());
    let corners = [[0.2, 0.25], [0.8, 0.25], [0.8, 0.9], [0.2, 0.9]];
    for [u, v] in corners {
        d.click_at(
            &canvas,
            ((u - 0.5) * w).round() as i64,
            ((v - 0.5) * h).round() as i64,
        );
    }
    d.click(&d.wait_find("#finish", Duration::from_secs(5)));
    // Save, sampling camera b's counter throughout.
    let mut samples = vec![(Instant::now(), frames(port, "b"))];
    d.click(&d.wait_find("#save", Duration::from_secs(5)));
    let t = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        samples.push((Instant::now(), frames(port, "b")));
        let st = d.script("const s = document.getElementById('save-status'); return [s.dataset.state, s.textContent]");
        if st[0] == "applied" && t.elapsed() > Duration::from_secs(4) {
            break;
        }
        assert!(st[0] != "error", "save failed: {st}");
        assert!(t.elapsed() < Duration::from_secs(30), "not applied: {st}");
    }
    // The running config has the polygon.
    let (_, _, body) = http_get(
        &format!("http://127.0.0.1:{port}/api/setup"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    let cam_a = v["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "a")
        .unwrap();
    let zone = &cam_a["geometry"]["zones"][0];
    assert_eq!(zone["name"], "drawn");
    let poly = zone["polygon"].as_array().unwrap();
    assert_eq!(poly.len(), 4);
    for (p, want) in poly.iter().zip(corners) {
        for k in 0..2 {
            let got = p[k].as_f64().unwrap();
            assert!((got - want[k]).abs() < 0.01, "corner {p} vs {want:?}");
        }
    }
    println!("running config: camera a zone {zone}");
    // The config file is untouched; the zone is in the data_dir's setup.toml.
    let text = std::fs::read_to_string(&config_path).unwrap();
    assert_eq!(
        text, config_before,
        "the setup page changed the config file"
    );
    let setup = std::fs::read_to_string(data.path().join("setup.toml"))
        .expect("the setup page wrote <data_dir>/setup.toml");
    assert!(setup.contains("name = \"drawn\""), "{setup}");
    assert!(
        !setup.contains("rtsp://"),
        "only geometry in setup.toml: {setup}"
    );
    // What a restart loads: the config file with setup.toml over it.
    let loaded = ioc_agent::config::Config::load(&config_path).expect("the saved config loads");
    let a = loaded
        .cameras
        .iter()
        .find(|c| c.id.get_ref() == "a")
        .unwrap();
    assert_eq!(a.zones.len(), 1);
    assert_eq!(a.zones[0].name.get_ref(), "drawn");
    let layer = loaded.setup.as_ref().expect("setup.toml merged");
    println!("after the save: {}", layer.summary());
    assert!(
        layer.summary().contains("a (zones, lines, lanes)"),
        "{}",
        layer.summary()
    );
    let log = agent.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("config reloaded"))
        .expect("reloaded");
    assert!(
        line.contains("restarted=1") && line.contains("unchanged=1"),
        "{line}"
    );
    // Camera b never paused.
    let mut last_rise = samples[0].0;
    let mut longest = Duration::ZERO;
    for w in samples.windows(2) {
        if w[1].1 > w[0].1 {
            longest = longest.max(w[1].0 - last_rise);
            last_rise = w[1].0;
        }
    }
    longest = longest.max(samples.last().unwrap().0 - last_rise);
    println!(
        "camera b: {:.0} → {:.0} frames across the save, longest pause {:.2} s",
        samples[0].1,
        samples.last().unwrap().1,
        longest.as_secs_f64()
    );
    assert!(
        longest < Duration::from_millis(2500),
        "camera b paused {longest:?}"
    );
}
