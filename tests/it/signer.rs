//! The signing key out of the agent: `ioc-agent signer` holds it and signs
//! over a Unix socket; the agent, which parses every camera's video, seals
//! evidence and signs reviews through it and never has a key file of its own.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[test]
fn evidence_is_sealed_through_the_signer_and_the_agent_holds_no_key() {
    let keys = tempfile::tempdir().unwrap();
    let sock = keys.path().join("signer.sock");
    let key_file = keys.path().join("agent.key");
    let log = keys.path().join("signer.log");
    let mut signer = Proc {
        child: Command::new(BIN)
            .args(["signer", "--key"])
            .arg(&key_file)
            .arg("--socket")
            .arg(&sock)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        name: "signer",
    };
    let t = Instant::now();
    while !sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "signer socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let public = ioc_agent::evidence::sign::public_key_of(&key_file).unwrap();
    let public_hex = hex::encode(public.as_bytes());

    let broker = Broker::start();
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    let cfg = config_head("ward-signer", &broker, data.path())
        + &format!(
            r#"
[[models]]
name = "yolox_nano"

[evidence]
pre_secs = 1.0
post_secs = 1.0
signer_socket = "{}"

[[cameras]]
id = "traffic"
url = "{}"
[[cameras.zones]]
name = "road"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
[[cameras.rules]]
kind = "zone_enter"
zone = "road"
classes = ["car", "truck", "bus"]
"#,
            sock.display(),
            sim.url("traffic")
        );
    let agent = Agent::start(&cfg);
    let sealed = sub.wait_for(Duration::from_secs(90), |m| {
        serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| v["kind"] == "evidence")
    });
    let sealed: Value = serde_json::from_slice(
        &sealed
            .unwrap_or_else(|| panic!("no evidence sealed; log:\n{}", agent.log_text()))
            .payload,
    )
    .unwrap();
    let id = sealed["event_id"].as_str().unwrap();
    let folder = data.path().join("evidence").join(id);
    let out = Command::new(BIN)
        .args(["verify", folder.to_str().unwrap(), "--key", &public_hex])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The agent never had a key of its own.
    assert!(
        !data.path().join("agent.key").exists(),
        "the agent made a key"
    );
    // Its status names the signer's key, for the IOC to pin.
    let status = sub
        .wait_for(Duration::from_secs(10), |m| m.topic.ends_with("/status"))
        .expect("status");
    let status: Value = serde_json::from_slice(&status.payload).unwrap();
    assert_eq!(status["signing_key"]["public_key"], public_hex.as_str());
    // `key show` and `verify --config` on the box ask the signer.
    let cfg_path = agent.dir.path().join("agent.toml");
    let show = Command::new(BIN)
        .args(["key", "show", "-c", cfg_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&show.stdout).trim(), public_hex);
    let mine = Command::new(BIN)
        .args([
            "verify",
            folder.to_str().unwrap(),
            "-c",
            cfg_path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        mine.status.success(),
        "{}",
        String::from_utf8_lossy(&mine.stdout)
    );
    // The signer keeps an audit line per signature: the manifest's sha256.
    let manifest = std::fs::read(folder.join("manifest.json")).unwrap();
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(&manifest));
    let slog = std::fs::read_to_string(&log).unwrap();
    assert!(
        slog.contains(&sha),
        "signer log lacks the manifest's sha256:\n{slog}"
    );
    let signed = slog.lines().filter(|l| l.contains(" signed")).count();
    println!(
        "signer: {signed} signature(s) logged; folder {id} verifies against the signer's key; agent has no key file"
    );

    // The signer gone: sealing fails with a message naming the socket, the
    // agent keeps running and alerts still flow.
    signer.terminate();
    let before = sub.alerts().len();
    let t = Instant::now();
    while !agent.log_text().contains("signer:") {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no signer error logged; log:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(agent.log_text().contains(sock.to_str().unwrap()));
    let t = Instant::now();
    while sub.alerts().len() <= before {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "alerts stopped with the signer"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
