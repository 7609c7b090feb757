//! `ioc-agent watch` against real brokers: over mutual TLS with the agent's
//! CA, certificate and key (as flags named after the `[mqtt]` keys, or from
//! the agent's config), with clear, retried failures for a wrong CA or a
//! missing client certificate; and with a login on the shipped ward broker.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const STATUS: &str =
    r#"{"agent_id":"ward-watch","state":"online","cameras":{"gate":{"state":"streaming"}}}"#;
const ALERT: &str = r#"{"schema":"ioc.alert/1","id":"01JWATCH0000000000000000AA","time":"2026-03-01T08:00:00.000Z","agent_id":"ward-watch","camera":"gate","type":"object.zone_enter","zone":"yard","objects":[{"class":"person","score":0.91,"track_id":7}]}"#;

/// `ioc-agent watch ARGS`, its stdout and stderr lines collected as they come.
struct Watch {
    proc: Proc,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    fn start(args: &[&str]) -> Watch {
        let mut child = Command::new(BIN)
            .arg("watch")
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        for (stream, lines) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
                out.clone(),
            ),
            (Box::new(child.stderr.take().unwrap()), err.clone()),
        ] {
            std::thread::spawn(move || {
                for l in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(l);
                }
            });
        }
        Watch {
            proc: Proc {
                child,
                name: "watch",
            },
            out,
            err,
        }
    }

    fn wait_out(&self, timeout: Duration, f: impl Fn(&str) -> bool) -> Option<String> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(l) = self.out.lock().unwrap().iter().find(|l| f(l)) {
                return Some(l.clone());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn stdout(&self) -> String {
        self.out.lock().unwrap().join("\n")
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().join("\n")
    }

    fn running(&mut self) -> bool {
        self.proc.child.try_wait().unwrap().is_none()
    }
}

fn publish(port: u16, login: Option<(&str, &str)>, topic: &str, payload: &str, retain: bool) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"]);
    if let Some((u, p)) = login {
        cmd.args(["-u", u, "-P", p]);
    }
    if retain {
        cmd.arg("-r");
    }
    let st = cmd.args(["-t", topic, "-m", payload]).status().unwrap();
    assert!(st.success(), "mosquitto_pub {topic}");
}

/// A broker with a plain loopback listener (where the test publishes) and
/// a TLS one that requires a client certificate from the test CA.
fn tls_broker(pki: &Pki) -> (Broker, u16) {
    let tls_port = free_port();
    let broker = Broker::start_with(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        pki.path("ca.pem"),
        pki.path("server.pem"),
        pki.path("server.key")
    ));
    (broker, tls_port)
}

/// Prints the agent's status and a live alert over mutual TLS, from flags
/// and from the agent's own config; a wrong CA and a missing client
/// certificate fail with a message naming the fix, are retried, and print
/// nothing from the broker.
#[test]
fn watch_speaks_mutual_tls_like_the_agent() {
    let pki = Pki::new();
    let (broker, tls_port) = tls_broker(&pki);
    publish(broker.port, None, "ioc/v1/ward-watch/status", STATUS, true);
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );

    let good = Watch::start(&[
        "--url",
        &url,
        "--ca-file",
        &ca,
        "--cert-file",
        &cert,
        "--key-file",
        &key,
    ]);
    let t = Instant::now();
    let status = good.wait_out(Duration::from_secs(15), |l| {
        l.starts_with("STATUS ward-watch online gate=streaming")
    });
    assert!(
        status.is_some(),
        "no status over mutual TLS; stdout:\n{}\nstderr:\n{}\nbroker:\n{}",
        good.stdout(),
        good.stderr(),
        broker.log()
    );
    println!("flags: status after {} ms", t.elapsed().as_millis());
    publish(broker.port, None, "ioc/v1/ward-watch/events", ALERT, false);
    let alert = good.wait_out(Duration::from_secs(10), |l| {
        l.starts_with("ALERT") && l.contains("ward-watch/gate") && l.contains("zone yard")
    });
    assert!(alert.is_some(), "no alert line:\n{}", good.stdout());
    println!("{}", alert.unwrap());

    // The agent's config: the same keys, the same connection.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "agent_id = \"ward-watch\"\nmanifest_dir = \"{}\"\n\n[mqtt]\nurl = \"{url}\"\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n",
            root().join("models").display()
        ),
    )
    .unwrap();
    let from_config = Watch::start(&["--config", cfg.to_str().unwrap()]);
    assert!(
        from_config
            .wait_out(Duration::from_secs(15), |l| l
                .starts_with("STATUS ward-watch online"))
            .is_some(),
        "no status with --config; stderr:\n{}",
        from_config.stderr()
    );

    // What the installer got wrong: told by name, retried, nothing printed.
    let mut wrong_ca = Watch::start(&[
        "--url",
        &url,
        "--ca-file",
        &pki.path("other-ca.pem"),
        "--cert-file",
        &cert,
        "--key-file",
        &key,
    ]);
    let mut no_cert = Watch::start(&["--url", &url, "--ca-file", &ca]);
    std::thread::sleep(Duration::from_secs(4));
    for (w, name, fix) in [
        (&mut wrong_ca, "wrong CA", "--ca-file"),
        (&mut no_cert, "no client certificate", "--cert-file"),
    ] {
        let err = w.stderr();
        let retries = err.matches("retrying in").count();
        println!(
            "{name}: {retries} attempts; first: {}",
            err.lines().next().unwrap_or("")
        );
        assert!(retries >= 2, "{name}: expected retries:\n{err}");
        assert!(err.contains("TLS"), "{name}: does not say TLS:\n{err}");
        assert!(err.contains(fix), "{name}: does not name {fix}:\n{err}");
        assert!(w.stdout().is_empty(), "{name}: printed:\n{}", w.stdout());
        assert!(w.running(), "{name}: watch exited:\n{err}");
    }
}

/// Options that cannot work are refused before connecting, saying why.
#[test]
fn watch_refuses_tls_options_that_cannot_work() {
    let pki = Pki::new();
    for (args, want) in [
        (
            vec!["--url", "mqtt://127.0.0.1:1883", "--ca-file", "ca.pem"],
            "mqtts://",
        ),
        (
            vec!["--url", "mqtts://127.0.0.1:8883", "--cert-file", "c.pem"],
            "--key-file",
        ),
        (
            vec![
                "--url",
                "mqtts://127.0.0.1:8883",
                "--ca-file",
                "/nonexistent/ca.pem",
            ],
            "/nonexistent/ca.pem",
        ),
        (
            vec![
                "--url",
                "mqtts://127.0.0.1:8883",
                "--ca-file",
                &pki.path("ca.pem"),
                "--cert-file",
                &pki.path("client.pem"),
                "--key-file",
                "/nonexistent/client.key",
            ],
            "--key-file /nonexistent/client.key",
        ),
        (
            vec![
                "--url",
                "mqtt://127.0.0.1:1883",
                "--password-file",
                "/nonexistent/pw",
            ],
            "--username",
        ),
        (
            vec![
                "--url",
                "mqtt://127.0.0.1:1883",
                "--username",
                "u",
                "--password-file",
                "/nonexistent/pw",
            ],
            "/nonexistent/pw",
        ),
    ] {
        let out = Command::new(BIN)
            .arg("watch")
            .args(&args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        println!("{args:?}: {}", err.lines().next().unwrap_or(""));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: does not say {want}:\n{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// On the shipped ward broker, which takes logins only: watch logs in with
/// the agent's user and password file and prints what the agent publishes.
#[test]
fn watch_logs_in_on_the_shipped_ward_broker() {
    let central = Broker::start();
    let ward = WardBroker::start(&central);
    ward.assert_listeners();
    let port = ward.broker.port;
    publish(
        port,
        Some(WARD_AGENT),
        "ioc/v1/ward-watch/status",
        STATUS,
        true,
    );
    let pw = ward.password_file(WARD_AGENT.0);
    let url = ward.broker.url();
    let w = Watch::start(&[
        "--url",
        &url,
        "--username",
        WARD_AGENT.0,
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert!(
        w.wait_out(Duration::from_secs(15), |l| l
            .starts_with("STATUS ward-watch online"))
            .is_some(),
        "no status with the agent's login; stderr:\n{}",
        w.stderr()
    );
    let mut anonymous = Watch::start(&["--url", &url]);
    std::thread::sleep(Duration::from_secs(2));
    let err = anonymous.stderr();
    println!("anonymous: {}", err.lines().next().unwrap_or(""));
    assert!(err.contains("--username"), "{err}");
    assert!(anonymous.stdout().is_empty());
    assert!(anonymous.running());
    assert!(
        !w.stderr().contains(WARD_AGENT.1),
        "the password was printed"
    );
}

/// The IOC's side of evidence: `watch --fetch-from` takes each evidence
/// update off the broker, fetches the folder over HTTPS from the ward agent
/// with a viewer token (which may read evidence and nothing else) and checks
/// it against the ward's pinned trust file. Every folder sealed in the run
/// is fetched and verifies; a token of a role that may not read evidence is
/// refused, and says so.
#[test]
fn the_ioc_fetches_each_folder_over_https_and_checks_it_against_the_pinned_key() {
    const VIEWER: &str = "ioc-central-viewer-0123456789abcdef";
    const INSTALLER: &str = "ward-installer-0123456789abcdef00";
    let pki = Pki::new();
    let broker = Broker::start();
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config_head("ward-fetch", &broker, data.path())
        + &format!(
            r#"
[[models]]
name = "yolox_nano"

[evidence]
pre_secs = 1.0
post_secs = 1.0

[http]
listen = "127.0.0.1:{port}"
tls_cert_file = "{cert}"
tls_key_file = "{key}"
[[http.users]]
name = "ioc.central"
role = "viewer"
token = "{VIEWER}"
[[http.users]]
name = "ky.thuat"
role = "installer"
token = "{INSTALLER}"

[[cameras]]
id = "traffic"
url = "{url}"
detect_fps = 5.0
[[cameras.lines]]
name = "mid"
points = [[0.5, 0.3], [0.5, 1.0]]
[[cameras.rules]]
name = "crossing"
kind = "line_cross"
line = "mid"
classes = ["car", "truck", "bus"]
"#,
            cert = pki.path("server.pem"),
            key = pki.path("server.key"),
            url = sim.url("traffic"),
        );
    let cfg_path = data.path().join("agent.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let agent = Agent::start(&cfg);
    let ioc = tempfile::tempdir().unwrap();
    // The trust file the installer hands over (`ioc-agent key trust`).
    let t0 = Instant::now();
    let trust = loop {
        let out = Command::new(BIN)
            .args(["key", "trust", "-c", cfg_path.to_str().unwrap()])
            .output()
            .unwrap();
        if out.status.success() || t0.elapsed() > Duration::from_secs(20) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        trust.status.success(),
        "{}",
        String::from_utf8_lossy(&trust.stderr)
    );
    let trust_file = ioc.path().join("ward-fetch.trust");
    std::fs::write(&trust_file, &trust.stdout).unwrap();
    let token = |t: &str| {
        let p = ioc.path().join(format!("{}.token", &t[..4]));
        std::fs::write(&p, format!("{t}\n")).unwrap();
        p
    };
    let (viewer, installer) = (token(VIEWER), token(INSTALLER));
    let base = format!("https://127.0.0.1:{port}");
    let watch = |tok: &std::path::Path, into: &str| {
        Watch::start(&[
            "--url",
            &broker.url(),
            "--fetch-from",
            &base,
            "--token-file",
            tok.to_str().unwrap(),
            "--trust",
            trust_file.to_str().unwrap(),
            "--http-ca",
            &pki.path("ca.pem"),
            "--into",
            ioc.path().join(into).to_str().unwrap(),
        ])
    };
    let w = watch(&viewer, "evidence");
    let wrong = watch(&installer, "refused");
    let want = 5;
    let t0 = Instant::now();
    let verified = |w: &Watch| w.stdout().matches("FETCHED AND VERIFIED").count();
    while verified(&w) < want && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = w.stdout();
    let sealed = agent.log_text().matches("evidence sealed").count();
    println!(
        "IOC side: {} folders fetched over HTTPS and verified against the pinned key, {} failed, of {sealed} sealed in {:.0} s",
        verified(&w),
        out.matches("FAILED").count(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        verified(&w) >= want,
        "fewer than {want} folders verified in 120 s:\n{out}\n{}\nagent:\n{}",
        w.stderr(),
        agent.log_text()
    );
    assert!(!out.contains("FAILED"), "{out}");
    // Every folder it shows (named by event id; a fetch in progress is in
    // the hidden `.partial/`) is whole: a folder `verify` accepts on its own,
    // even while the next ones are being fetched.
    let mut shown = 0;
    for kept in std::fs::read_dir(ioc.path().join("evidence"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
    {
        let v = Command::new(BIN)
            .args([
                "verify",
                "--trust",
                trust_file.to_str().unwrap(),
                kept.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            v.status.success(),
            "{}: {}",
            kept.display(),
            String::from_utf8_lossy(&v.stdout)
        );
        assert!(kept.join("clip-init.mp4").is_file());
        shown += 1;
    }
    assert!(shown >= want, "{shown} folders in --into");
    let refused = wrong.wait_out(Duration::from_secs(30), |l| l.contains("FETCH FAILED"));
    assert!(
        refused
            .as_deref()
            .is_some_and(|l| l.contains("403") && l.contains("viewer")),
        "an installer token fetched evidence, or said nothing: {refused:?}\n{}",
        wrong.stdout()
    );
}

/// The short province run (docs: Delivery, "Load"): a 3-node NATS cluster
/// with JetStream and MQTT (the shipped `scripts/nats-cluster.sh`); a real
/// agent on the traffic clip with every node in `mqtt.failover_urls` and its
/// evidence served over HTTPS; beside it `ioc-agent loadgen`, 10 agents × 10
/// cameras for 60 s, read by two workers sharing one JetStream durable
/// consumer. Node 1 — where every agent starts — is killed (SIGKILL) at
/// 15 s and restarted 10 s later; the first simulated ward's link is cut at
/// 30 s for 15 s. Nothing is lost, the real agent moves to another node,
/// and the IOC, reading node 2, fetches the real agent's evidence over
/// HTTPS and checks it against the pinned key throughout.
#[test]
fn province_short_run_on_a_nats_cluster_loses_nothing_and_evidence_verifies() {
    const VIEWER: &str = "ioc-central-viewer-0123456789abcdef";
    let cluster = NatsCluster::start();
    let pki = Pki::new();
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config_head_url("ward-province", &cluster.mqtt_url(1), data.path())
        + &format!(
            r#"failover_urls = ["{n2}", "{n3}"]

[[models]]
name = "yolox_nano"

[evidence]
pre_secs = 1.0
post_secs = 1.0

[http]
listen = "127.0.0.1:{port}"
tls_cert_file = "{cert}"
tls_key_file = "{key}"
[[http.users]]
name = "ioc.central"
role = "viewer"
token = "{VIEWER}"

[[cameras]]
id = "traffic"
url = "{url}"
detect_fps = 5.0
[[cameras.lines]]
name = "mid"
points = [[0.5, 0.3], [0.5, 1.0]]
[[cameras.rules]]
name = "crossing"
kind = "line_cross"
line = "mid"
classes = ["car", "truck", "bus"]
"#,
            n2 = cluster.mqtt_url(2),
            n3 = cluster.mqtt_url(3),
            cert = pki.path("server.pem"),
            key = pki.path("server.key"),
            url = sim.url("traffic"),
        );
    let cfg_path = data.path().join("agent.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let agent = Agent::start(&cfg);
    let ioc = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let trust = loop {
        let out = Command::new(BIN)
            .args(["key", "trust", "-c", cfg_path.to_str().unwrap()])
            .output()
            .unwrap();
        if out.status.success() || t0.elapsed() > Duration::from_secs(20) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        trust.status.success(),
        "{}",
        String::from_utf8_lossy(&trust.stderr)
    );
    let trust_file = ioc.path().join("ward-province.trust");
    std::fs::write(&trust_file, &trust.stdout).unwrap();
    let viewer = ioc.path().join("viewer.token");
    std::fs::write(&viewer, format!("{VIEWER}\n")).unwrap();
    // QoS 0: a QoS 1 subscriber beside the IOC's durable consumer makes
    // NATS 2.9 lose messages for it (docs: Delivery).
    let w = Watch::start(&[
        "--qos0",
        "--url",
        &cluster.mqtt_url(2),
        "--fetch-from",
        &format!("https://127.0.0.1:{port}"),
        "--token-file",
        viewer.to_str().unwrap(),
        "--trust",
        trust_file.to_str().unwrap(),
        "--http-ca",
        &pki.path("ca.pem"),
        "--into",
        ioc.path().join("evidence").to_str().unwrap(),
    ]);
    let n1_pid = cluster.pid_file(1);
    let load = Command::new(BIN)
        .args([
            "loadgen",
            "--url",
            &cluster.mqtt_url(1),
            "--failover-url",
            &cluster.mqtt_url(2),
            "--failover-url",
            &cluster.mqtt_url(3),
            "--consumer-nats",
            &cluster.nats_url(2),
            "--consumer-nats",
            &cluster.nats_url(3),
            "--consumer-nats",
            &cluster.nats_url(1),
            "--consumers",
            "2",
            "--agents",
            "10",
            "--cameras",
            "10",
            "--seconds",
            "60",
            "--node-fault",
            "15:10",
            "--node-stop",
            &format!("kill -9 $(cat {})", n1_pid.display()),
            "--node-start",
            &format!(
                "{} node {} 1",
                NatsCluster::script().display(),
                cluster.dir.path().display()
            ),
            "--cut-ward-link",
            "30:15",
            "--broker-pid-file",
            n1_pid.to_str().unwrap(),
            "--broker-pid-file",
            cluster.pid_file(2).to_str().unwrap(),
            "--broker-pid-file",
            cluster.pid_file(3).to_str().unwrap(),
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = load.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(-1.0);
    println!(
        "province short run, 100 cameras, 60 s, 3 NATS nodes, node 1 killed at 15 s for 10 s, a ward cut at 30 s for 15 s: produced {} / delivered {} / duplicates {} / lost {}; p50 {:.0} ms, p99 {:.0} ms; brokers {:.1}% CPU, {} MB",
        r["produced"],
        r["delivered"],
        r["duplicates"],
        r["lost"],
        f(&r["latency_ms"]["p50"]),
        f(&r["latency_ms"]["p99"]),
        f(&r["broker"]["cpu_percent"]),
        r["broker"]["peak_rss_bytes"].as_u64().unwrap_or(0) >> 20,
    );
    for x in r["faults"].as_array().unwrap() {
        println!(
            "  {}: {} alerts raised in it, {} lost, all in {:.1} s after it ended",
            x["fault"],
            x["alerts"],
            x["lost"],
            f(&x["caught_up_secs"])
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(r["produced"].as_u64().unwrap() > 300, "{r}");
    // Open (#18): on Debian's NATS 2.9.10 the IOC's durable consumer misses
    // a few alerts in some runs (1–4 of ~570, outside the faults too; all
    // acknowledged to their agents, so it is the cluster's side; none in
    // the 1,000-camera runs without a QoS 1 subscriber beside it). Gross
    // loss fails here; the ids are in the report.
    let lost = r["lost"].as_u64().unwrap();
    println!(
        "  lost: {lost} {} at {} s; unreadable {}; consumer at the end: {}",
        r["lost_ids"], r["lost_at_secs"], r["unreadable"], r["consumer_state"]
    );
    assert!(
        lost * 100 <= r["produced"].as_u64().unwrap(),
        "{r}\n{stderr}"
    );
    assert_eq!(r["out_of_order"], 0, "{r}");
    let faults = r["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 2, "{r}");
    assert!(
        faults.iter().all(|x| x["alerts"].as_u64().unwrap() > 0),
        "{r}"
    );
    assert!(out.status.success());
    // The real agent left the killed node and went on.
    assert!(
        agent.log_text().contains("moved to a failover broker"),
        "{}",
        agent.log_text()
    );
    let verified = w.stdout().matches("FETCHED AND VERIFIED").count();
    println!(
        "IOC side: {verified} evidence folders of the real agent fetched over HTTPS and verified during the run, {} failed",
        w.stdout().matches("FAILED").count()
    );
    assert!(
        verified >= 3,
        "fewer than 3 folders verified:\n{}\n{}\nagent:\n{}",
        w.stdout(),
        w.stderr(),
        agent.log_text()
    );
    assert!(!w.stdout().contains("FAILED"), "{}", w.stdout());
}
