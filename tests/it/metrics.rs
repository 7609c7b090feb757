//! `/metrics` scraped from a running agent and parsed with a Prometheus
//! text-format parser; every metric the Grafana dashboard uses exists.
//! `/healthz` and `/readyz` answer.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "metrics-token-0123456789";

fn scrape(port: u16) -> prometheus_parse::Scrape {
    scrape_metrics(port, TOKEN).expect("/metrics answers 200 with the token")
}

fn value(s: &prometheus_parse::Scrape, name: &str, camera: &str) -> f64 {
    metric_value(s, name, camera).unwrap_or(f64::NAN)
}

/// Metric names in the dashboard's queries (histogram suffixes removed).
fn dashboard_metrics() -> BTreeSet<String> {
    let d: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/ioc-agent.json")).unwrap(),
    )
    .unwrap();
    let mut out = BTreeSet::new();
    let mut exprs = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    exprs.push(
        d["templating"]["list"][1]["query"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    for e in exprs {
        let b = e.as_bytes();
        let mut i = 0;
        while let Some(off) = e[i..].find("ioc_") {
            let s = i + off;
            let mut j = s;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            let name = &e[s..j];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|x| name.strip_suffix(x))
                .unwrap_or(name);
            out.insert(base.to_string());
            i = j;
        }
    }
    out
}

#[test]
fn metrics_are_scraped_and_cover_the_dashboard() {
    let broker = Broker::start();
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config_head("ward-metrics", &broker, data.path())
        + &format!(
            r#"
[[models]]
name = "yolox_nano"
[http]
listen = "127.0.0.1:{port}"
token = "{TOKEN}"
[[cameras]]
id = "traffic"
url = "{}"
[[cameras.lines]]
name = "mid"
points = [[0.5, 0.3], [0.5, 1.0]]
[[cameras.rules]]
name = "crossing"
kind = "line_cross"
line = "mid"
classes = ["car", "truck", "bus"]
"#,
            sim.url("traffic")
        );
    let agent = Agent::start(&cfg);
    let start = Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let s = scrape(port);
            if value(&s, "ioc_events_total", "traffic") > 0.0
                || start.elapsed() > Duration::from_secs(60)
            {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no scrape; log:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Evidence counters appear once a folder is sealed.
    std::thread::sleep(Duration::from_secs(8));
    let s = scrape(port);
    let names: BTreeSet<String> = s
        .samples
        .iter()
        .map(|x| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suf| x.metric.strip_suffix(suf))
                .unwrap_or(&x.metric)
                .to_string()
        })
        .collect();
    let wanted = dashboard_metrics();
    assert!(wanted.len() >= 15, "dashboard names {wanted:?}");
    let missing: Vec<&String> = wanted.iter().filter(|n| !names.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "dashboard metrics not exported: {missing:?}"
    );
    assert_eq!(value(&s, "ioc_camera_up", "traffic"), 1.0);
    assert!(value(&s, "ioc_frames_received_total", "traffic") > 100.0);
    assert!(value(&s, "ioc_frames_inferred_total", "traffic") > 10.0);
    let inferred = value(&s, "ioc_frames_inferred_total", "traffic");
    let count = value(&s, "ioc_inference_seconds_count", "traffic");
    assert!(
        count > 0.0 && (count - inferred).abs() <= 10.0,
        "{count} vs {inferred}"
    );
    assert!(
        s.samples
            .iter()
            .any(|x| x.metric == "ioc_frames_skipped_total"
                && x.labels.get("reason") == Some("rate")),
        "skips by reason"
    );
    println!(
        "scraped {} samples, {} metric names; dashboard uses {}",
        s.samples.len(),
        names.len(),
        wanted.len()
    );
    // Token needed; health and readiness open.
    let (st, _, _) = http_get(&format!("http://127.0.0.1:{port}/metrics"), &[]);
    assert_eq!(st, 401);
    let (st, _, body) = http_get(&format!("http://127.0.0.1:{port}/healthz"), &[]);
    assert_eq!((st, body.as_slice()), (200, &b"ok"[..]));
    let (st, _, body) = http_get(&format!("http://127.0.0.1:{port}/readyz"), &[]);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((st, v["ready"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(v["cameras"]["traffic"], "streaming");
}
