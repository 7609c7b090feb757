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

/// Secret files (tokens, keys, passwords, certificates) are checked the way
/// the service reads them: a missing one fails naming the key and the path, a
/// world-readable one is warned with the mode to use, a good one passes.
#[test]
fn doctor_checks_every_secret_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("reviewer.token");
    std::fs::write(&good, "reviewer-token-0123456789\n").unwrap();
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o640)).unwrap();
    let open = dir.path().join("scraper.token");
    std::fs::write(&open, "scraper-token-0123456789\n").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let missing = dir.path().join("missing.pem");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "agent_id = \"doc\"\ndata_dir = \"{d}/data\"\nmanifest_dir = \"{m}\"\nmodel_dir = \"{md}\"\nonnxruntime = \"{o}\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{p}\"\n[[models]]\nname = \"yolox_nano\"\n\
             [http]\ntls_cert_file = \"{missing}\"\ntls_key_file = \"{missing}\"\n\
             [[http.users]]\nname = \"officer\"\nrole = \"reviewer\"\ntoken_file = \"{good}\"\n\
             [[http.users]]\nname = \"prom\"\nrole = \"scraper\"\ntoken_file = \"{open}\"\n",
            d = dir.path().display(),
            m = root().join("models").display(),
            md = model_dir().display(),
            o = ort_lib().display(),
            p = free_port(),
            missing = missing.display(),
            good = good.display(),
            open = open.display(),
        ),
    )
    .unwrap();
    let (code, text) = doctor(&cfg);
    assert_eq!(code, 1, "{text}");
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line about {needle}:\n{text}"))
            .to_string()
    };
    let l = line("http.tls_key_file");
    assert!(l.contains("FAIL") && l.contains("missing.pem"), "{l}");
    let l = line("scraper.token");
    assert!(
        l.starts_with("WARN") && l.contains("every local user"),
        "{l}"
    );
    assert!(
        text.contains(&format!("chmod 0640 {}", open.display())),
        "{text}"
    );
    let l = line("reviewer.token");
    assert!(l.starts_with("PASS"), "{l}");
}
