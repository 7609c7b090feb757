//! `ioc-agent bench` runs end to end on real footage and reports every
//! figure it promises (values are not asserted: speed is for benchmarks).

use crate::common;

use std::process::Command;

use common::*;
use serde_json::Value;

#[test]
fn bench_reports_agent_and_floor_side_by_side() {
    let _ = model_dir();
    let out = Command::new(BIN)
        .args([
            "bench",
            "--streams",
            "1",
            "--seconds",
            "5",
            "--json",
            "--file",
        ])
        .arg(traffic_clip())
        .arg("--manifests")
        .arg(root().join("models"))
        .arg("--model-dir")
        .arg(model_dir())
        .env("ORT_DYLIB_PATH", ort_lib())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    let r = &v[0];
    println!("{r}");
    assert_eq!(r["streams"], 1);
    assert_eq!(r["per_stream"].as_array().unwrap().len(), 1);
    assert!(r["per_stream"][0]["detect_fps"].as_f64().unwrap() > 0.0);
    for k in [
        "cpu_per_stream",
        "floor_decode_per_stream",
        "floor_model_per_stream",
        "ratio_to_floor",
        "rss_mb",
    ] {
        let x = r[k].as_f64().unwrap();
        assert!(x.is_finite() && x > 0.0, "{k} = {x}");
    }
    assert!(r["latency_p99_ms"].as_f64().unwrap() >= r["latency_p50_ms"].as_f64().unwrap());
}
