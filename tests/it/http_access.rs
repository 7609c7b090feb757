//! The HTTP side as an attacker on the ward's LAN and as a court would see
//! it: each role does exactly its own work; a browser session is a random id
//! that expires and ends at logout (never the token); a review is signed,
//! attributed and append-only; holds are bounded; thousands of idle
//! connections leave `/metrics`, the review page and the camera working;
//! HTTPS with the session cookie `Secure`.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use ioc_agent::evidence::sign;
use ioc_agent::store::evidence::EvidenceRow;
use ioc_agent::store::{Limits, Store};
use serde_json::{Value, json};

const VIEWER: &str = "viewer-token-0123456789";
const REVIEWER: &str = "reviewer-token-0123456789";
const INSTALLER: &str = "installer-token-0123456789";
const SCRAPER: &str = "scraper-token-0123456789";
const EVENTS: [&str; 2] = ["01JDAAAAAAAAAAAAAAAAAAAAA1", "01JDAAAAAAAAAAAAAAAAAAAAA2"];

/// Two sealed events of 4,000 bytes each, signed with the key the agent loads.
fn seed(data: &Path) {
    let store = Store::open(
        data,
        Limits {
            max_rows: 1000,
            max_bytes: 1 << 26,
        },
    )
    .unwrap();
    let key = sign::load_or_create_key(&data.join("agent.key")).unwrap();
    for (i, id) in EVENTS.iter().enumerate() {
        let dir = data.join("evidence").join(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("overview.jpg"), vec![i as u8; 4000]).unwrap();
        let time = format!("2026-12-01T08:0{i}:00Z");
        sign::seal(
            &dir,
            &["overview.jpg"],
            sign::Manifest {
                schema: sign::MANIFEST_SCHEMA.into(),
                event_id: id.to_string(),
                agent_id: "ward-http".into(),
                camera: "cam-1".into(),
                place: None,
                time: time.clone(),
                time_source: "agent_clock".into(),
                sealed_at: time.clone(),
                files: vec![],
                clip: None,
                public_key: String::new(),
                key_id: String::new(),
            },
            &key,
        )
        .unwrap();
        store
            .evidence_insert(&EvidenceRow {
                event_id: id.to_string(),
                camera: "cam-1".into(),
                kind: "red_light".into(),
                rule: "stop-line".into(),
                time,
                severity: "high".into(),
                bytes: 4000,
                held: false,
                plate: None,
                review: None,
                files: vec!["overview.jpg".into(), "manifest.json".into()],
                objects: json!([]),
                place: Value::Null,
                measured: json!({}),
            })
            .unwrap();
    }
}

fn config(broker: &Broker, data: &Path, port: u16, camera: &str, http_extra: &str) -> String {
    config_head("ward-http", broker, data)
        + &format!(
            r#"
[[models]]
name = "yolox_nano"

[evidence]
max_bytes = 10000
max_held_share = 0.5
min_free_bytes = 0

[http]
listen = "127.0.0.1:{port}"
{http_extra}
[[http.users]]
name = "ana.viewer"
role = "viewer"
token = "{VIEWER}"
[[http.users]]
name = "csgt.binh"
role = "reviewer"
token = "{REVIEWER}"
[[http.users]]
name = "ky.thuat"
role = "installer"
token = "{INSTALLER}"
[[http.users]]
name = "prometheus"
role = "scraper"
token = "{SCRAPER}"

[[cameras]]
id = "cam-1"
url = "{camera}"
[[cameras.zones]]
name = "road"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
[[cameras.rules]]
kind = "zone_enter"
zone = "road"
classes = ["car"]
"#
        )
}

/// One HTTP/1.1 request; returns (status, headers lower-cased, body).
fn call(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    if !body.is_empty() {
        req += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    req += "\r\n";
    req += &body;
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let hs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, hs, body.to_string())
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn wait_up(port: u16, agent: &Agent) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("HTTP never came up; log:\n{}", agent.log_text());
}

#[test]
fn each_role_does_its_own_work_and_reviews_are_signed_and_append_only() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    seed(data.path());
    let port = free_port();
    let dead = format!("rtsp://127.0.0.1:{}/nobody", free_port());
    let agent = Agent::start(&config(&broker, data.path(), port, &dead, ""));
    wait_up(port, &agent);
    let (e1, e2) = (EVENTS[0], EVENTS[1]);

    // Who may do what: (route, method, body, [viewer, reviewer, installer, scraper, nobody]).
    let review_body = json!({"status": "rejected", "note": "probe"});
    let hold_body = json!({"held": false});
    let evidence = format!("/evidence/{e1}/overview.jpg");
    let review_path = format!("/api/events/{e2}/review");
    let hold_path = format!("/api/events/{e2}/hold");
    let table: Vec<(&str, &str, Option<&Value>, [u16; 5])> = vec![
        ("GET", "/api/events", None, [200, 200, 403, 403, 401]),
        ("GET", evidence.as_str(), None, [200, 200, 403, 403, 401]),
        ("GET", "/api/setup", None, [403, 403, 200, 403, 401]),
        ("GET", "/metrics", None, [403, 403, 403, 200, 401]),
        (
            "POST",
            hold_path.as_str(),
            Some(&hold_body),
            [403, 200, 403, 403, 401],
        ),
        (
            "POST",
            review_path.as_str(),
            Some(&review_body),
            [403, 200, 403, 403, 401],
        ),
    ];
    let tokens = [
        Some(VIEWER),
        Some(REVIEWER),
        Some(INSTALLER),
        Some(SCRAPER),
        None,
    ];
    for (method, path, body, want) in &table {
        for (t, w) in tokens.iter().zip(want) {
            let auth = t.map(bearer);
            let hs: Vec<(&str, &str)> =
                auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            let (st, _, text) = call(port, method, path, &hs, *body);
            assert_eq!(st, *w, "{method} {path} as {t:?}: {text}");
            if st == 403 {
                assert!(text.contains("may not"), "{text}");
            }
        }
    }
    println!("roles: {} route × role checks as expected", table.len() * 5);

    // A browser session: a random id, not the token; expiring; HttpOnly.
    let (st, hs, text) = call(
        port,
        "POST",
        "/api/login",
        &[],
        Some(&json!({"token": REVIEWER})),
    );
    assert_eq!(st, 200, "{text}");
    let cookie = header(&hs, "set-cookie")
        .expect("a session cookie")
        .to_string();
    println!(
        "login cookie attributes: {}",
        cookie.split_once(';').map(|x| x.1).unwrap_or("")
    );
    let session = cookie
        .split(';')
        .next()
        .and_then(|kv| kv.strip_prefix("ioc_session="))
        .expect("ioc_session cookie")
        .to_string();
    assert_eq!(session.len(), 64);
    assert!(
        !cookie.contains(REVIEWER),
        "the token is in the cookie: {cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "Secure on plain HTTP: {cookie}");
    let jar = format!("ioc_session={session}");
    let (st, _, me) = call(port, "GET", "/api/me", &[("Cookie", &jar)], None);
    assert_eq!(st, 200);
    let me: Value = serde_json::from_str(&me).unwrap();
    assert_eq!(me["user"], "csgt.binh");
    assert_eq!(me["may"]["review"], true);
    assert_eq!(me["may"]["setup"], false);
    // The old cookie carrying the raw token is no session.
    for c in [
        format!("ioc_token={REVIEWER}"),
        format!("ioc_session={REVIEWER}"),
    ] {
        assert_eq!(
            call(port, "GET", "/api/events", &[("Cookie", &c)], None).0,
            401,
            "{c}"
        );
    }

    // Reviews through the session: signed, attributed, append-only.
    let confirm = json!({"status": "confirmed", "note": "đèn đỏ, xe vượt vạch"});
    let (st, _, text) = call(
        port,
        "POST",
        &format!("/api/events/{e1}/review"),
        &[("Cookie", &jar)],
        Some(&confirm),
    );
    assert_eq!(st, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["review"]["reviewer"], "csgt.binh");
    assert_eq!(v["review"]["seq"], 1);
    assert_eq!(
        v["held"], true,
        "a confirmed event within the hold budget is held"
    );
    let folder = data.path().join("evidence").join(e1);
    let first = std::fs::read(folder.join("review-001.json")).unwrap();
    let rec: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(rec["reviewer"], "csgt.binh");
    assert_eq!(rec["role"], "reviewer");
    assert_eq!(rec["status"], "confirmed");
    let reject = json!({"status": "rejected", "note": "xe cứu thương"});
    let (st, _, text) = call(
        port,
        "POST",
        &format!("/api/events/{e1}/review"),
        &[("Authorization", &bearer(REVIEWER))],
        Some(&reject),
    );
    assert_eq!(st, 200, "{text}");
    assert_eq!(
        std::fs::read(folder.join("review-001.json")).unwrap(),
        first,
        "review 1 was overwritten"
    );
    assert!(folder.join("review-002.json").exists() && folder.join("review-002.sig").exists());

    // The IOC hears who decided.
    let upd = sub.wait_for(Duration::from_secs(10), |m| {
        serde_json::from_slice::<Value>(&m.payload)
            .is_ok_and(|v| v["kind"] == "review" && v["review"]["seq"] == 2)
    });
    let upd: Value = serde_json::from_slice(&upd.expect("review update on MQTT").payload).unwrap();
    assert_eq!(upd["review"]["reviewer"], "csgt.binh");

    // `verify` checks the reviews with the folder, and names an edited one.
    let cfg_path = agent.dir.path().join("agent.toml");
    let verify = || {
        std::process::Command::new(BIN)
            .args([
                "verify",
                folder.to_str().unwrap(),
                "-c",
                cfg_path.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let ok = verify();
    let out = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(
        ok.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        out.contains("review 1: confirmed by csgt.binh")
            && out.contains("review 2: rejected by csgt.binh"),
        "{out}"
    );
    println!("{out}");
    let edited = String::from_utf8_lossy(&first).replace("csgt.binh", "someone.else");
    std::fs::write(folder.join("review-001.json"), edited).unwrap();
    let bad = verify();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("review-001.json"),
        "{}",
        String::from_utf8_lossy(&bad.stdout)
    );
    std::fs::write(folder.join("review-001.json"), &first).unwrap();

    // Holds are bounded: e1 was confirmed then rejected (released), so hold
    // it again (4,000 of 5,000 allowed bytes), and e2 no longer fits.
    let hold = |id: &str| {
        call(
            port,
            "POST",
            &format!("/api/events/{id}/hold"),
            &[("Authorization", &bearer(REVIEWER))],
            Some(&json!({"held": true})),
        )
    };
    assert_eq!(hold(e1).0, 200);
    let (st, _, text) = hold(e2);
    assert_eq!(st, 409, "{text}");
    assert!(text.contains("max_held_share"), "{text}");
    assert!(
        agent.log_text().contains("evidence hold changed"),
        "holds are logged"
    );

    // Logout ends the session.
    let (st, hs, _) = call(port, "POST", "/api/logout", &[("Cookie", &jar)], None);
    assert_eq!(st, 200);
    assert!(header(&hs, "set-cookie").is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(
        call(port, "GET", "/api/events", &[("Cookie", &jar)], None).0,
        401
    );
    // No token or note in the log.
    let log = agent.log_text();
    for t in [VIEWER, REVIEWER, INSTALLER, SCRAPER, session.as_str()] {
        assert!(!log.contains(t), "a secret is in the log");
    }
}

/// Sets the open-file limit of process `pid` (soft and hard).
fn limit_files(pid: u32, n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn metric(port: u16, name: &str) -> Option<f64> {
    let s = scrape_metrics(port, SCRAPER)?;
    s.samples
        .iter()
        .find(|x| x.metric == name)
        .and_then(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// 3,000 idle connections against an agent held to systemd's default of
/// 1,024 descriptors: `/metrics` and the review page keep answering, the
/// camera keeps streaming, and idle connections are closed after the
/// header timeout.
#[test]
fn thousands_of_idle_connections_leave_metrics_review_and_camera_working() {
    let broker = Broker::start();
    let sim = Sim::start_looping(&[("traffic", &traffic_clip())], 20);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let agent = Agent::start(&config(
        &broker,
        data.path(),
        port,
        &sim.url("traffic"),
        "max_connections = 256\nheader_timeout_secs = 3",
    ));
    limit_files(agent.proc.child.id(), 1024);
    wait_up(port, &agent);
    let frames = |port| metric(port, "ioc_frames_decoded_total");
    let t = Instant::now();
    while frames(port).unwrap_or(0.0) < 10.0 {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "camera never streamed; log:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The attack: 3,000 connections that never send a byte (this process
    // needs the descriptors: raise its soft limit to the hard one).
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_cur = lim.rlim_max;
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    let flood = 3000.min(lim.rlim_cur.saturating_sub(256) as usize);
    assert!(
        flood >= 2000,
        "this machine allows only {} descriptors per process",
        lim.rlim_cur
    );
    let mut idle = Vec::new();
    let mut refused_at_connect = 0;
    for _ in 0..flood {
        match TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)) {
            Ok(s) => idle.push(s),
            Err(_) => refused_at_connect += 1,
        }
    }
    let before = frames(port).expect("/metrics answers with 3,000 idle connections open");
    let t0 = Instant::now();
    let mut answered = 0;
    for _ in 0..20 {
        let (st, _, _) = call(
            port,
            "GET",
            "/metrics",
            &[("Authorization", &bearer(SCRAPER))],
            None,
        );
        let (st2, _, page) = call(port, "GET", "/review", &[], None);
        if st == 200 && st2 == 200 && page.contains("<html") {
            answered += 1;
        }
    }
    let per_pair = t0.elapsed().as_secs_f64() / 20.0;
    assert_eq!(
        answered, 20,
        "/metrics or /review failed under the idle flood"
    );
    std::thread::sleep(Duration::from_secs(2));
    let after = frames(port).unwrap();
    assert!(
        after > before,
        "camera stopped decoding under the flood ({before} → {after})"
    );
    let evicted = metric(port, "ioc_http_connections_evicted_total").unwrap_or(0.0);
    let open = metric(port, "ioc_http_connections_open").unwrap_or(-1.0);
    assert!(open <= 256.0, "{open} connections open past the cap of 256");

    // Idle connections are closed by the header timeout (3 s).
    let probe = TcpStream::connect(("127.0.0.1", port)).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t1 = Instant::now();
    let mut buf = [0u8; 16];
    let n = (&probe).read(&mut buf).unwrap_or(0);
    let closed_after = t1.elapsed().as_secs_f64();
    assert_eq!(n, 0, "an idle connection got data");
    assert!(
        closed_after < 8.0,
        "an idle connection stayed open {closed_after:.1} s"
    );
    println!(
        "{flood} idle connections ({refused_at_connect} refused at connect) against 1024 fds and a cap of 256: \
         20/20 /metrics + /review pairs answered, {per_pair:.3} s per pair; {open} open, {evicted} evicted; \
         frames decoded {before} → {after}; an idle connection closed after {closed_after:.1} s"
    );
    drop(idle);
    assert!(
        agent
            .log_text()
            .lines()
            .all(|l| !l.contains("Too many open files")),
        "descriptors ran out"
    );
}

/// HTTPS from the certificate files: the session cookie is `Secure`; plain
/// HTTP to the port gets nothing; a wrong key file stops the start with a
/// message naming it.
#[test]
fn https_with_certificate_files() {
    let pki = Pki::new();
    let broker = Broker::start();
    let data = tempfile::tempdir().unwrap();
    seed(data.path());
    let port = free_port();
    let dead = format!("rtsp://127.0.0.1:{}/nobody", free_port());
    let tls = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        pki.path("server.pem"),
        pki.path("server.key")
    );
    let agent = Agent::start(&config(&broker, data.path(), port, &dead, &tls));
    wait_up(port, &agent);

    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let http = ureq::AgentBuilder::new()
        .tls_config(std::sync::Arc::new(client))
        .build();
    let t = Instant::now();
    let resp = loop {
        match http
            .post(&format!("https://localhost:{port}/api/login"))
            .set("Content-Type", "application/json")
            .send_string(&json!({"token": VIEWER}).to_string())
        {
            Ok(r) => break r,
            Err(e) if t.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("HTTPS login failed: {e}; log:\n{}", agent.log_text()),
        }
    };
    assert_eq!(resp.status(), 200);
    let cookie = resp.header("set-cookie").unwrap_or("").to_string();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    // Plain HTTP to the HTTPS port: no answer, and the agent goes on.
    let (st, _, _) = call(port, "GET", "/healthz", &[], None);
    assert_eq!(st, 0, "plain HTTP was answered on the HTTPS port");
    let ok = http
        .get(&format!("https://localhost:{port}/healthz"))
        .call()
        .unwrap();
    assert_eq!(ok.status(), 200);
    println!(
        "HTTPS: login cookie `{}`",
        cookie.split_once(';').map(|x| x.1).unwrap_or("")
    );

    // A key that does not exist: the start fails and says which file.
    let d2 = tempfile::tempdir().unwrap();
    let bad = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}/missing.key\"",
        pki.path("server.pem"),
        d2.path().display()
    );
    let mut agent2 = Agent::start(&config(&broker, d2.path(), free_port(), &dead, &bad));
    let t = Instant::now();
    let code = loop {
        if let Some(st) = agent2.proc.child.try_wait().unwrap() {
            break st.code();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "agent with a missing TLS key kept running"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(code, Some(0));
    let log = agent2.log_text();
    assert!(
        log.contains("http.tls_key_file") && log.contains("missing.key"),
        "{log}"
    );
    agent2.proc.terminate();
}
