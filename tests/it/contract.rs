//! The contract with the IOC: checked-in JSON Schemas match the code, real
//! payloads validate against them; delivery over mutual TLS; the ward →
//! central bridge config in deploy/ forwards alerts.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn checked_in_schemas_match_the_code() {
    for (name, text) in ioc_agent::publish::payload::schemas() {
        let path = root().join("deploy/schema").join(name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "{} differs from the payload types: run `ioc-agent schema` (or `cargo run -- schema`) and review the change to the MQTT contract",
            path.display()
        );
    }
}

#[test]
fn asyncapi_names_every_topic_and_schema() {
    let doc = std::fs::read_to_string(root().join("deploy/asyncapi.yaml")).unwrap();
    assert!(doc.contains("asyncapi: 3."));
    for s in [
        "alert.schema.json",
        "status.schema.json",
        "stats.schema.json",
        "event_update.schema.json",
    ] {
        assert!(doc.contains(s), "asyncapi.yaml does not reference {s}");
    }
    for t in [
        "{agent_id}/status",
        "{agent_id}/events",
        "{agent_id}/events/{event_id}/thumbnail",
        "{agent_id}/stats",
    ] {
        assert!(doc.contains(t), "asyncapi.yaml has no channel for {t}");
    }
}

fn schema(name: &str) -> jsonschema::Validator {
    let s: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/schema").join(name)).unwrap(),
    )
    .unwrap();
    jsonschema::validator_for(&s).unwrap()
}

fn assert_valid(v: &jsonschema::Validator, payload: &[u8], what: &str) {
    let inst: Value = serde_json::from_slice(payload).unwrap();
    let errors: Vec<String> = v
        .iter_errors(&inst)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match its schema: {errors:?}\n{inst}"
    );
}

fn tls_config(
    agent_id: &str,
    tls_port: u16,
    data: &Path,
    tls: &str,
    camera: Option<&str>,
) -> String {
    let mut c = format!(
        r#"agent_id = "{agent_id}"
data_dir = "{data}"
manifest_dir = "{manifests}"
model_dir = "{models}"
onnxruntime = "{ort}"

[mqtt]
url = "mqtts://127.0.0.1:{tls_port}"
status_interval_secs = 1
stats_interval_secs = 1
{tls}

[[models]]
name = "yolox_nano"
"#,
        data = data.display(),
        manifests = root().join("models").display(),
        models = model_dir().display(),
        ort = ort_lib().display(),
    );
    if let Some(url) = camera {
        c += &format!(
            r#"
[[cameras]]
id = "traffic"
url = "{url}"
[[cameras.zones]]
name = "road"
polygon = [[0.0, 0.4], [1.0, 0.4], [1.0, 1.0], [0.0, 1.0]]
[[cameras.rules]]
kind = "zone_enter"
zone = "road"
classes = ["car"]
"#
        );
    }
    c
}

/// Mutual TLS: a good client delivers (and its payloads match the schemas);
/// a wrong CA and a missing client certificate fail with a clear error and
/// are retried, without a crash.
#[test]
fn mutual_tls_delivery_and_clear_failures() {
    let pki = Pki::new();
    let tls_port = free_port();
    let broker = Broker::start_with(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        pki.path("ca.pem"),
        pki.path("server.pem"),
        pki.path("server.key")
    ));
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    let good = Agent::start(&tls_config(
        "ward-tls",
        tls_port,
        data.path(),
        &format!(
            "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
            pki.path("ca.pem"),
            pki.path("client.pem"),
            pki.path("client.key")
        ),
        Some(&sim.url("traffic")),
    ));
    let alert = sub.wait_for(Duration::from_secs(60), |m| {
        m.topic == "ioc/v1/ward-tls/events"
    });
    assert!(
        alert.is_some(),
        "no alert over mutual TLS; log:\n{}\nbroker:\n{}",
        good.log_text(),
        broker.log()
    );
    let stats = sub.wait_for(Duration::from_secs(10), |m| {
        m.topic == "ioc/v1/ward-tls/stats"
            && serde_json::from_slice::<Value>(&m.payload)
                .is_ok_and(|s| s["cameras"]["traffic"]["fps_inferred"].as_f64() > Some(0.0))
    });
    let status = sub.wait_for(Duration::from_secs(10), |m| {
        m.topic == "ioc/v1/ward-tls/status"
    });
    assert_valid(
        &schema("alert.schema.json"),
        &alert.unwrap().payload,
        "alert",
    );
    let stats = stats.expect("stats message with inference");
    println!("stats: {}", String::from_utf8_lossy(&stats.payload));
    assert_valid(&schema("stats.schema.json"), &stats.payload, "stats");
    assert_valid(
        &schema("status.schema.json"),
        &status.expect("status").payload,
        "status",
    );

    // Wrong CA: the broker's certificate is not trusted.
    let d2 = tempfile::tempdir().unwrap();
    let mut wrong_ca = Agent::start(&tls_config(
        "ward-wrong-ca",
        tls_port,
        d2.path(),
        &format!(
            "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
            pki.path("other-ca.pem"),
            pki.path("client.pem"),
            pki.path("client.key")
        ),
        None,
    ));
    // No client certificate: the broker refuses the handshake.
    let d3 = tempfile::tempdir().unwrap();
    let mut no_cert = Agent::start(&tls_config(
        "ward-no-cert",
        tls_port,
        d3.path(),
        &format!("ca_file = \"{}\"", pki.path("ca.pem")),
        None,
    ));
    std::thread::sleep(Duration::from_secs(6));
    for (agent, name) in [
        (&mut wrong_ca, "wrong CA"),
        (&mut no_cert, "no client certificate"),
    ] {
        let log = agent.log_text();
        let retries = log
            .matches("cannot connect to MQTT broker; retrying")
            .count();
        println!(
            "{name}: {retries} attempts; first: {}",
            log.lines()
                .find(|l| l.contains("cannot connect"))
                .unwrap_or("")
        );
        assert!(retries >= 2, "{name}: expected retries; log:\n{log}");
        assert!(
            log.contains("TLS") || log.contains("tls") || log.contains("certificate"),
            "{name}: error does not say it is TLS:\n{log}"
        );
        assert!(
            agent.proc.child.try_wait().unwrap().is_none(),
            "{name}: the agent exited"
        );
        assert!(!log.contains("panicked"));
    }
    assert!(
        !sub.all()
            .iter()
            .any(|m| m.topic.contains("ward-wrong-ca") || m.topic.contains("ward-no-cert")),
        "an untrusted connection delivered"
    );
    sub.shutdown();
}

/// The ward broker in deploy/ (bridge, listeners, logins, ACL) forwards the
/// agent's topics to a central broker, the agent logging in as its ACL
/// says: per ward, camera and type subscriptions work there; a controller
/// on the LAN listener sets the camera's signal, which the agent reads.
#[test]
fn ward_bridge_forwards_to_central() {
    const SIGNAL: &str = "controllers/junction-12/north/signal";
    let central = Broker::start();
    let ward_broker = WardBroker::start(&central);
    ward_broker.assert_listeners();
    let ward = &ward_broker.broker;
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    // With topic_layout = "by_camera": per type, per camera, per ward.
    let per_type = Subscriber::start(&central, "ioc/v1/+/events/+/object.zone_enter");
    let per_camera = Subscriber::start(&central, "ioc/v1/ward-bridge/events/traffic/+");
    let other_camera = Subscriber::start(&central, "ioc/v1/+/events/gate/+");
    let per_ward = Subscriber::start(&central, "ioc/v1/ward-bridge/#");
    let data = tempfile::tempdir().unwrap();
    let cfg = config_head("ward-bridge", ward, data.path()).replace(
        "[mqtt]\n",
        &format!(
            "[mqtt]\ntopic_layout = \"by_camera\"\nusername = \"{}\"\npassword_file = \"{}\"\n",
            WARD_AGENT.0,
            ward_broker.password_file(WARD_AGENT.0).display()
        ),
    ) + &format!(
        "\n[[models]]\nname = \"yolox_nano\"\n\n[[cameras]]\nid = \"traffic\"\nurl = \"{}\"\n[[cameras.zones]]\nname = \"road\"\npolygon = [[0.0, 0.4], [1.0, 0.4], [1.0, 1.0], [0.0, 1.0]]\n[[cameras.rules]]\nkind = \"zone_enter\"\nzone = \"road\"\nclasses = [\"car\"]\n[cameras.signal]\nsource = \"mqtt\"\ntopic = \"{SIGNAL}\"\nmax_age_secs = 60\n",
        sim.url("traffic")
    );
    let agent = Agent::start(&cfg);
    let got = per_type.wait_for(Duration::from_secs(60), |m| {
        m.topic == "ioc/v1/ward-bridge/events/traffic/object.zone_enter"
    });
    assert!(
        got.is_some(),
        "no alert at the central broker; agent log:\n{}\nward broker:\n{}",
        agent.log_text(),
        ward.log()
    );
    let a: Value = serde_json::from_slice(&got.unwrap().payload).unwrap();
    let thumb = a["thumbnail"]["topic"].as_str().unwrap().to_string();
    assert!(
        per_ward
            .wait_for(Duration::from_secs(10), |m| m.topic == thumb)
            .is_some(),
        "thumbnail not bridged"
    );
    assert_eq!(
        thumb,
        format!(
            "ioc/v1/ward-bridge/thumbnails/{}",
            a["id"].as_str().unwrap()
        )
    );
    assert!(
        per_ward
            .wait_for(Duration::from_secs(10), |m| m.topic
                == "ioc/v1/ward-bridge/status")
            .is_some()
    );
    assert!(
        per_camera
            .wait_for(Duration::from_secs(5), |m| m
                .topic
                .ends_with("/object.zone_enter"))
            .is_some(),
        "per-camera subscription"
    );
    assert!(
        other_camera.all().is_empty(),
        "another camera's filter matched"
    );

    // The junction's controller, on the LAN listener with its own login.
    let st = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p"])
        .arg(ward_broker.controllers_port.to_string())
        .args(["-u", WARD_CONTROLLER.0, "-P", WARD_CONTROLLER.1])
        .args(["-q", "1", "-r", "-t", SIGNAL, "-m", "red"])
        .status()
        .unwrap();
    assert!(st.success(), "mosquitto_pub as the controller");
    let red = per_ward.wait_for(Duration::from_secs(10), |m| {
        m.topic == "ioc/v1/ward-bridge/status"
            && serde_json::from_slice::<Value>(&m.payload)
                .is_ok_and(|v| v["cameras"]["traffic"]["signal"]["state"] == "red")
    });
    assert!(
        red.is_some(),
        "the controller's red did not reach the agent; agent log:\n{}\nward broker:\n{}",
        agent.log_text(),
        ward.log()
    );
    per_camera.shutdown();
    other_camera.shutdown();
    per_type.shutdown();
    per_ward.shutdown();
}

/// `node tests/contract/validate.cjs ARGS` with the pinned validators
/// (`make test` installs them into .tools/contract): its exit status and
/// output.
fn node_validate(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let modules = root().join(".tools/contract/node_modules");
    assert!(
        modules.join("@asyncapi/parser").is_dir(),
        "the contract validators are not installed: run `deploy/bootstrap.sh contract` (make test does)"
    );
    let out = std::process::Command::new("node")
        .arg(root().join("tests/contract/validate.cjs"))
        .args(args)
        .env("NODE_PATH", &modules)
        .output()
        .expect("node (make test installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The AsyncAPI document as an integrator's tools read it: the real
/// AsyncAPI parser (its rules, the referenced JSON Schemas), then every
/// message example validated against its payload by Ajv in strict mode.
#[test]
fn the_asyncapi_document_passes_the_asyncapi_parser() {
    let (_, versions) = node_validate(&["versions".as_ref()]);
    println!("{}", versions.trim());
    let doc = root().join("deploy/asyncapi.yaml");
    let (ok, text) = node_validate(&["asyncapi".as_ref(), doc.as_os_str()]);
    println!("{text}");
    assert!(ok, "deploy/asyncapi.yaml:\n{text}");
    for want in ["example alert/", "example eventUpdate/"] {
        assert!(text.contains(want), "no {want} checked:\n{text}");
    }
    let raw = std::fs::read_to_string(&doc).unwrap();
    for want in [
        "schemaFormat:",
        "securitySchemes:",
        "type: X509",
        "type: userPassword",
    ] {
        assert!(raw.contains(want), "asyncapi.yaml lacks {want}");
    }
}

/// Every message kind the agent publishes — an alert, both event update
/// kinds (evidence sealed, a review), the status and the stats — taken off a
/// real broker from a real run, validated by Ajv in strict mode against the
/// checked-in schemas (which must compile in strict mode: schemars' Rust
/// formats such as `uint32` made Ajv throw).
#[test]
fn every_message_kind_passes_ajv_strict() {
    let broker = Broker::start();
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let token = "contract-token-0123456789";
    let cfg = config_head("ward-contract", &broker, data.path())
        + &format!(
            r#"
[[models]]
name = "yolox_nano"

[evidence]
pre_secs = 1.0
post_secs = 1.0

[http]
listen = "127.0.0.1:{port}"
token = "{token}"

[[cameras]]
id = "traffic"
url = "{}"
[cameras.place]
name = "Ngã tư thử nghiệm"
lat = 21.0
lon = 105.8
ward = {{ code = "00070", name = "Phường Hoàn Kiếm" }}
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
    let sealed = sub
        .wait_for(Duration::from_secs(90), |m| {
            serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| v["kind"] == "evidence")
        })
        .unwrap_or_else(|| panic!("no evidence sealed:\n{}", agent.log_text()));
    let event_id = serde_json::from_slice::<Value>(&sealed.payload).unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = ureq::post(&format!(
        "http://127.0.0.1:{port}/api/events/{event_id}/review"
    ))
    .set("Authorization", &format!("Bearer {token}"))
    .set("Content-Type", "application/json")
    .send_string(r#"{"status": "confirmed", "note": "đúng vi phạm"}"#)
    .unwrap();
    assert_eq!(r.status(), 200);
    let review = sub
        .wait_for(Duration::from_secs(20), |m| {
            serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| v["kind"] == "review")
        })
        .expect("review update");
    let stats = sub
        .wait_for(Duration::from_secs(20), |m| m.topic.ends_with("/stats"))
        .expect("stats");
    let status = sub
        .wait_for(Duration::from_secs(20), |m| m.topic.ends_with("/status"))
        .expect("status");
    let alert = sub
        .all()
        .into_iter()
        .find(|m| {
            serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| v["id"] == event_id.as_str())
        })
        .expect("the sealed event's alert");
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<std::ffi::OsString> =
        vec!["schemas".into(), root().join("deploy/schema").into()];
    for (kind, name, msg) in [
        ("alert", "alert.json", &alert),
        ("event_update", "evidence.json", &sealed),
        ("event_update", "review.json", &review),
        ("status", "status.json", &status),
        ("stats", "stats.json", &stats),
    ] {
        let f = dir.path().join(name);
        std::fs::write(&f, &msg.payload).unwrap();
        args.push(format!("{kind}={}", f.display()).into());
    }
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (ok, text) = node_validate(&refs);
    println!("{text}");
    assert!(ok, "Ajv strict:\n{text}");
    assert_eq!(text.matches("(strict)").count(), 4, "{text}");
    assert_eq!(text.matches("valid ").count(), 5, "{text}");
}
