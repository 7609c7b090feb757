//! `ioc-agent doctor`: a config with a missing model and an unreachable broker
//! exits non-zero naming both; a good config (real broker, camera, models)
//! passes.

use crate::common;

use std::process::Command;

use common::*;

fn doctor(cfg: &std::path::Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["doctor", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn doctor_names_what_blocks_and_passes_a_good_box() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "agent_id = \"doc\"\ndata_dir = \"{d}/data\"\nmanifest_dir = \"{m}\"\nmodel_dir = \"{d}/no-models\"\nonnxruntime = \"{o}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{closed}\"\n[[models]]\nname = \"yolox_nano\"\n",
            d = dir.path().display(),
            m = root().join("models").display(),
            o = ort_lib().display(),
        ),
    )
    .unwrap();
    let (code, text) = doctor(&bad);
    assert_eq!(code, 1);
    let fail_line = |what: &str| {
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains(what))
    };
    assert!(fail_line("model yolox_nano"), "missing model not named");
    assert!(fail_line("MQTT broker"), "unreachable broker not named");
    assert!(text.contains("fix: ioc-agent models pull"));

    let broker = Broker::start();
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        config_head("doc-good", &broker, &dir.path().join("data"))
            + &format!(
                "[[models]]\nname = \"yolox_nano\"\n[[cameras]]\nid = \"traffic\"\nurl = \"{}\"\n",
                sim.url("traffic")
            ),
    )
    .unwrap();
    let (code, text) = doctor(&good);
    assert_eq!(code, 0, "good config failed");
    for what in [
        "ONNX Runtime",
        "decoder h264",
        "model yolox_nano",
        "MQTT broker",
        "camera traffic (url)",
        "data directory",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("PASS") && l.contains(what)),
            "{what} did not pass"
        );
    }
}
