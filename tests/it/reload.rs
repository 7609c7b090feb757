//! Live reload: SIGHUP with an invalid config keeps the old one running and
//! logs why; with a valid one the changed camera restarts and the unchanged
//! one keeps streaming without a gap (its frame counter, from /metrics, never
//! pauses).

use crate::common;

use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "reload-token-0123456789";

fn frames(port: u16, camera: &str) -> f64 {
    scrape_metrics(port, TOKEN)
        .and_then(|s| metric_value(&s, "ioc_frames_received_total", camera))
        .unwrap_or(-1.0)
}

fn hup(agent: &Agent) {
    let st = std::process::Command::new("kill")
        .args(["-HUP", &agent.proc.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn started(log: &str, camera: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("camera started") && l.contains(&format!("camera={camera}")))
        .count()
}

fn wait_log(agent: &Agent, what: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let log = agent.log_text();
        if log.contains(what) {
            return log;
        }
        assert!(start.elapsed() < timeout, "no '{what}' in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sighup_applies_camera_changes_live_and_refuses_bad_configs() {
    let broker = Broker::start();
    let sim = Sim::start(&[("a", &traffic_clip()), ("b", &traffic_clip())]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = |fps_a: &str, polygon_a: &str| {
        config_head("ward-reload", &broker, data.path())
            + &format!(
                r#"
[[models]]
name = "yolox_nano"
[http]
listen = "127.0.0.1:{port}"
token = "{TOKEN}"

[[cameras]]
id = "a"
url = "{a}"
detect_fps = {fps_a}
[[cameras.zones]]
name = "road"
polygon = {polygon_a}

[[cameras]]
id = "b"
url = "{b}"
detect_fps = 5.0
"#,
                a = sim.url("a"),
                b = sim.url("b"),
            )
    };
    let square = "[[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]";
    let agent = Agent::start(&cfg("5.0", square));
    let path = agent.dir.path().join("agent.toml");
    let start = Instant::now();
    while frames(port, "a") < 50.0 || frames(port, "b") < 50.0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "cameras not streaming:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // 1. An invalid config is refused and the old one keeps running.
    std::fs::write(&path, cfg("5.0", "[[0.1, 0.1], [0.9, 0.1]]")).unwrap();
    hup(&agent);
    let log = wait_log(&agent, "config reload refused", Duration::from_secs(10));
    let line = log
        .lines()
        .find(|l| l.contains("config reload refused"))
        .unwrap();
    println!("{line}");
    assert!(
        line.contains("agent.toml:") && line.contains("polygon"),
        "reason not given: {line}"
    );
    let (a0, b0) = (frames(port, "a"), frames(port, "b"));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        frames(port, "a") > a0 && frames(port, "b") > b0,
        "a camera stopped after a refused reload"
    );

    // 2. A valid change to camera a: a restarts, b never pauses.
    std::fs::write(&path, cfg("4.0", square)).unwrap();
    let mut samples = vec![(Instant::now(), frames(port, "b"))];
    hup(&agent);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(250));
        samples.push((Instant::now(), frames(port, "b")));
    }
    let log = wait_log(&agent, "config reloaded", Duration::from_secs(10));
    let line = log.lines().find(|l| l.contains("config reloaded")).unwrap();
    println!("{line}");
    assert!(
        line.contains("restarted=1") && line.contains("unchanged=1"),
        "{line}"
    );
    assert_eq!(started(&log, "a"), 2, "camera a was not restarted");
    assert_eq!(started(&log, "b"), 1, "camera b was restarted");
    // b's counter rises throughout (the status syncs counters once a second).
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
        "camera b: {:.0} → {:.0} frames across the reload, longest pause {:.2} s",
        samples[0].1,
        samples.last().unwrap().1,
        longest.as_secs_f64()
    );
    assert!(
        longest < Duration::from_millis(2500),
        "camera b paused {longest:?}"
    );
    let a1 = frames(port, "a");
    std::thread::sleep(Duration::from_secs(3));
    assert!(frames(port, "a") > a1, "camera a did not come back");
}
