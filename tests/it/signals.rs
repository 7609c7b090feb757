//! Traffic-signal states from a controller over the real broker: topics
//! follow a live reload (subscribed when added, dropped when removed), and
//! with `controller_key` only messages the controller signed change the
//! state — unsigned, wrongly signed, stale and replayed ones are refused,
//! counted in `/metrics` and logged without flooding the log.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "signals-token-0123456789";

/// A controller (or a forger) on the broker: publishes what it is given, and
/// keeps republishing each `every` topic's payload (built fresh each time,
/// so signed ones carry a current `ts`) every 200 ms until `stop`.
struct Controller {
    client: rumqttc::AsyncClient,
    rt: tokio::runtime::Runtime,
    loops: Vec<Arc<AtomicBool>>,
}

impl Controller {
    fn start(port: u16, id: &str) -> Controller {
        Controller::login(port, id, None)
    }

    /// A client logged in as `user` (name, password).
    fn login(port: u16, id: &str, user: Option<(&str, &str)>) -> Controller {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(true);
        if let Some((u, p)) = user {
            opts.set_credentials(u, p);
        }
        let (client, mut ev) = rumqttc::AsyncClient::new(opts, 100);
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let mut tx = Some(tx);
            loop {
                match ev.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        if let Some(t) = tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("controller connected");
        Controller {
            client,
            rt,
            loops: Vec::new(),
        }
    }

    fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        let (c, t, p) = (self.client.clone(), topic.to_string(), payload.into());
        self.rt.block_on(async move {
            c.publish(t, rumqttc::QoS::AtLeastOnce, false, p)
                .await
                .unwrap()
        });
    }

    /// Republishes `make()` on `topic` every 200 ms until the returned flag is cleared.
    fn every(&mut self, topic: &str, make: impl Fn() -> String + Send + 'static) -> usize {
        let on = Arc::new(AtomicBool::new(true));
        let (c, t, flag) = (self.client.clone(), topic.to_string(), on.clone());
        self.rt.spawn(async move {
            while flag.load(Ordering::Relaxed) {
                let _ = c
                    .publish(t.clone(), rumqttc::QoS::AtLeastOnce, false, make())
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        self.loops.push(on);
        self.loops.len() - 1
    }

    fn stop(&self, i: usize) {
        self.loops[i].store(false, Ordering::Relaxed);
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        for l in &self.loops {
            l.store(false, Ordering::Relaxed);
        }
    }
}

/// Camera `a`'s signal state in the agent's newest retained status, e.g.
/// `Some(("red", "mqtt"))`.
fn status_signal(sub: &Subscriber) -> Option<(String, String)> {
    let m = sub
        .all()
        .into_iter()
        .rev()
        .find(|m| m.topic.ends_with("/status"))?;
    let v: serde_json::Value = serde_json::from_slice(&m.payload).ok()?;
    let s = &v["cameras"]["a"]["signal"];
    Some((s["state"].as_str()?.into(), s["source"].as_str()?.into()))
}

/// Waits until camera `a` reports `state` from MQTT; the time it took.
fn wait_signal(sub: &Subscriber, agent: &Agent, state: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if status_signal(sub).is_some_and(|(s, src)| s == state && src == "mqtt") {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "camera a never reported signal {state} (last: {:?}); log:\n{}",
            status_signal(sub),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A sample of `/metrics` by name and one label (`""` for none).
fn metric(port: u16, name: &str, label: (&str, &str)) -> f64 {
    let Some(s) = scrape_metrics(port, TOKEN) else {
        return f64::NAN;
    };
    s.samples
        .iter()
        .find(|x| {
            x.metric == name && (label.0.is_empty() || x.labels.get(label.0) == Some(label.1))
        })
        .and_then(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
        .unwrap_or(f64::NAN)
}

fn hup(agent: &Agent) {
    let st = std::process::Command::new("kill")
        .args(["-HUP", &agent.proc.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn wait_streaming(agent: &Agent, port: u16) {
    let start = Instant::now();
    while scrape_metrics(port, TOKEN)
        .and_then(|s| metric_value(&s, "ioc_frames_inferred_total", "a"))
        .unwrap_or(0.0)
        < 10.0
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "camera a not streaming:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The agent's config: one camera `a`, with `signal` appended to it.
fn config(
    id: &str,
    broker: &Broker,
    data: &std::path::Path,
    port: u16,
    url: &str,
    signal: &str,
) -> String {
    config_head(id, broker, data)
        + &format!(
            r#"
[[models]]
name = "yolox_nano"
[http]
listen = "127.0.0.1:{port}"
token = "{TOKEN}"

[[cameras]]
id = "a"
url = "{url}"
{signal}
"#
        )
}

fn mqtt_signal(topic: &str, max_age: u32, extra: &str) -> String {
    format!(
        "[cameras.signal]\nsource = \"mqtt\"\ntopic = \"{topic}\"\nmax_age_secs = {max_age}\n{extra}\n"
    )
}

/// A camera that gains a signal topic by reload (SIGHUP) takes states from
/// it; one whose topic changes takes them from the new topic, and the old
/// one is unsubscribed (its messages no longer reach the agent).
#[test]
fn reload_subscribes_added_signal_topics_and_drops_removed_ones() {
    let broker = Broker::start();
    let sim = Sim::start(&[("a", &traffic_clip())]);
    let sub = Subscriber::start(&broker, "ioc/v1/ward-sigreload/status");
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let (north, east) = ("controllers/j1/north/signal", "controllers/j1/east/signal");
    let cfg = |signal: &str| {
        config(
            "ward-sigreload",
            &broker,
            data.path(),
            port,
            &sim.url("a"),
            signal,
        )
    };
    let mut ctl = Controller::start(broker.port, "test-controller-j1");
    let north_loop = ctl.every(north, || "red".into());
    let east_loop = ctl.every(east, || r#"{"state": "green"}"#.into());

    // Started without any signal: no subscriber at all.
    let agent = Agent::start(&cfg(""));
    let path = agent.dir.path().join("agent.toml");
    wait_streaming(&agent, port);
    assert_eq!(status_signal(&sub), None);

    // 1. The reload adds `north`.
    std::fs::write(&path, cfg(&mqtt_signal(north, 2, ""))).unwrap();
    hup(&agent);
    let added = wait_signal(&sub, &agent, "red", Duration::from_secs(30));
    println!(
        "reload adding topic {north}: camera a reported red {:.2} s after SIGHUP",
        added.as_secs_f64()
    );
    assert_eq!(metric(port, "ioc_signal_topics", ("", "")), 1.0);

    // 2. The reload moves the camera to `east`.
    std::fs::write(&path, cfg(&mqtt_signal(east, 2, ""))).unwrap();
    hup(&agent);
    let moved = wait_signal(&sub, &agent, "green", Duration::from_secs(30));
    println!(
        "reload moving to topic {east}: camera a reported green {:.2} s after SIGHUP",
        moved.as_secs_f64()
    );
    assert_eq!(metric(port, "ioc_signal_topics", ("", "")), 1.0);

    // `north` is no longer subscribed: with `east` silent, nothing is accepted
    // although `north` keeps publishing, and the state expires to unknown.
    ctl.stop(east_loop);
    std::thread::sleep(Duration::from_millis(1000));
    let a0 = metric(port, "ioc_signal_messages_accepted_total", ("", ""));
    std::thread::sleep(Duration::from_secs(3));
    let a1 = metric(port, "ioc_signal_messages_accepted_total", ("", ""));
    println!("accepted while only the removed topic published: {a0} → {a1}");
    assert_eq!(a0, a1, "messages on the removed topic still accepted");
    wait_signal(&sub, &agent, "unknown", Duration::from_secs(10));
    ctl.stop(north_loop);

    // 3. The reload gives `east` a controller_key: the unsigned red someone
    // publishes there stops counting at once; the controller's signed green does.
    let forged = ctl.every(east, || "red".into());
    wait_signal(&sub, &agent, "red", Duration::from_secs(10));
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let public = hex::encode(key.verifying_key().as_bytes());
    let keyed = mqtt_signal(east, 2, &format!("controller_key = \"{public}\""));
    std::fs::write(&path, cfg(&keyed)).unwrap();
    hup(&agent);
    let t = Instant::now();
    while metric(
        port,
        "ioc_signal_messages_refused_total",
        ("reason", "unsigned"),
    ) < 5.0
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "unsigned messages still taken after the key was added:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let since = sub.all().len();
    wait_signal(&sub, &agent, "unknown", Duration::from_secs(10));
    ctl.every(east, move || {
        ioc_agent::rules::controller::sign(
            &key,
            east,
            "j1",
            ioc_agent::rules::Light::Green,
            chrono::Utc::now(),
        )
        .unwrap()
    });
    let signed = wait_signal(&sub, &agent, "green", Duration::from_secs(10));
    let reds_after_key = sub.all()[since..]
        .iter()
        .filter(|m| {
            m.topic.ends_with("/status")
                && String::from_utf8_lossy(&m.payload).contains("\"state\":\"red\"")
        })
        .count();
    println!(
        "reload adding controller_key: {} unsigned refused so far, signed green taken {:.2} s after the signer started, {reds_after_key} red status after the refusals began",
        metric(
            port,
            "ioc_signal_messages_refused_total",
            ("reason", "unsigned")
        ),
        signed.as_secs_f64()
    );
    ctl.stop(forged);
    // When the subscriptions changed, against the SIGHUPs (log timestamps).
    for l in agent
        .log_text()
        .lines()
        .filter(|l| l.contains("SIGHUP") || l.contains("signal subscriptions updated"))
    {
        println!("{l}");
    }
    sub.shutdown();
}

/// With `controller_key`, only messages the controller signed change the
/// state: unsigned, wrong-key, other-topic, stale, future and replayed ones
/// are refused, counted by reason, and logged once each (not per message).
#[test]
fn only_signed_controller_messages_change_the_signal() {
    use ed25519_dalek::SigningKey;
    use ioc_agent::rules::Light;
    use ioc_agent::rules::controller::sign;

    let broker = Broker::start();
    let sim = Sim::start(&[("a", &traffic_clip())]);
    let sub = Subscriber::start(&broker, "ioc/v1/ward-sigsign/status");
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let topic = "controllers/j2/north/signal";
    let key = SigningKey::from_bytes(&[7; 32]);
    let forger = SigningKey::from_bytes(&[9; 32]);
    let public = hex::encode(key.verifying_key().as_bytes());
    let cfg = config(
        "ward-sigsign",
        &broker,
        data.path(),
        port,
        &sim.url("a"),
        &mqtt_signal(topic, 10, &format!("controller_key = \"{public}\"")),
    );
    let agent = Agent::start(&cfg);
    wait_streaming(&agent, port);

    // The genuine controller: green, signed, every 200 ms.
    let mut ctl = Controller::start(broker.port, "test-controller-j2");
    let k = key.clone();
    let green = ctl.every(topic, move || {
        sign(&k, topic, "j2", Light::Green, chrono::Utc::now()).unwrap()
    });
    let took = wait_signal(&sub, &agent, "green", Duration::from_secs(20));
    println!(
        "signed green taken {:.2} s after the controller started",
        took.as_secs_f64()
    );

    // Forgers on the same topic, 20 of each, all claiming red.
    let from = sub.all().len();
    let now = chrono::Utc::now;
    let secs = chrono::Duration::seconds;
    type Make<'a> = Box<dyn Fn() -> String + 'a>;
    let forgeries: Vec<(&str, Make)> = vec![
        ("unsigned", Box::new(|| "red".into())),
        ("unsigned", Box::new(|| r#"{"state": "red"}"#.into())),
        (
            "bad_signature",
            Box::new(|| sign(&forger, topic, "j2", Light::Red, now()).unwrap()),
        ),
        (
            "bad_signature",
            Box::new(|| sign(&key, "controllers/j2/east/signal", "j2", Light::Red, now()).unwrap()),
        ),
        (
            "stale",
            Box::new(|| sign(&key, topic, "j2", Light::Red, now() - secs(60)).unwrap()),
        ),
        (
            "future",
            Box::new(|| sign(&key, topic, "j2", Light::Red, now() + secs(60)).unwrap()),
        ),
        (
            "malformed",
            Box::new(|| r#"{"state": "red", "sig": "#.into()),
        ),
    ];
    let mut expected = std::collections::BTreeMap::<&str, f64>::new();
    for (reason, make) in &forgeries {
        for _ in 0..20 {
            ctl.publish(topic, make());
        }
        *expected.entry(reason).or_default() += 20.0;
    }
    // A replay: a genuine red signed a second ago, after greens signed since.
    let old_red = sign(&key, topic, "j2", Light::Red, now() - secs(1)).unwrap();
    for _ in 0..20 {
        ctl.publish(topic, old_red.clone());
    }
    expected.insert("replayed", 20.0);

    // Every status since the first forgery says green.
    std::thread::sleep(Duration::from_secs(4));
    let states: Vec<_> = sub.all()[from..]
        .iter()
        .filter(|m| m.topic.ends_with("/status"))
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            v["cameras"]["a"]["signal"]["state"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let seen = states.len();
    assert!(seen >= 3, "only {seen} status messages");
    assert!(
        states.iter().all(|s| s == "green"),
        "a forged message changed the signal: {states:?}; log:\n{}",
        agent.log_text()
    );
    let mut refused = std::collections::BTreeMap::new();
    for reason in expected.keys() {
        refused.insert(
            *reason,
            metric(
                port,
                "ioc_signal_messages_refused_total",
                ("reason", reason),
            ),
        );
    }
    println!(
        "refused by reason: {refused:?} (sent {expected:?}); all {seen} status messages since said green"
    );
    assert_eq!(refused, expected);
    // Logged once per reason (then a summary per minute), not per message.
    let log = agent.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused") && l.contains("signal messag"))
        .collect();
    println!(
        "log lines about {} refused messages: {}\n{}",
        expected.values().sum::<f64>(),
        lines.len(),
        lines.join("\n")
    );
    assert!(
        lines.len() <= expected.len(),
        "refusals flood the log ({} lines):\n{log}",
        lines.len()
    );
    for reason in expected.keys() {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("reason={reason}"))),
            "no log line for {reason}:\n{log}"
        );
    }

    // The controller itself turns the light red: taken.
    ctl.stop(green);
    std::thread::sleep(Duration::from_millis(300));
    let k = key.clone();
    ctl.every(topic, move || {
        sign(&k, topic, "j2", Light::Red, chrono::Utc::now()).unwrap()
    });
    wait_signal(&sub, &agent, "red", Duration::from_secs(10));
    sub.shutdown();
}

/// The broker ACL of docs/src/reference/traffic-signal.md, as written there,
/// on a real mosquitto: the agent's user reads the controller's topic, and
/// another broker user publishing on it reaches nobody.
#[test]
fn the_documented_broker_acl_keeps_other_clients_off_the_signal_topic() {
    let doc = std::fs::read_to_string(root().join("docs/src/reference/traffic-signal.md")).unwrap();
    let after = doc
        .split("and in `/etc/mosquitto/acl`:")
        .nth(1)
        .expect("the ACL example in the docs");
    let acl = after
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the ACL block");
    let auth = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(auth.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Before any `user` line: what anonymous clients may do (the test's
    // status recorder only).
    let acl_path = auth.path().join("acl");
    std::fs::write(&acl_path, format!("topic read ioc/v1/#\n\n{acl}")).unwrap();
    let passwd = auth.path().join("passwd");
    std::fs::write(&passwd, "").unwrap();
    for (u, p) in [
        ("junction-12", "controller-pw"),
        ("ioc-agent-ward-1", "agent-pw"),
        ("intruder", "intruder-pw"),
    ] {
        let st = std::process::Command::new("mosquitto_passwd")
            .args(["-b", passwd.to_str().unwrap(), u, p])
            .status()
            .unwrap();
        assert!(st.success());
    }
    for f in [&acl_path, &passwd] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let broker = Broker::start_with(&format!(
        "password_file {}\nacl_file {}",
        passwd.display(),
        acl_path.display()
    ));
    let sim = Sim::start(&[("a", &traffic_clip())]);
    let sub = Subscriber::start(&broker, "ioc/v1/ward-1/status");
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let topic = "controllers/junction-12/north/signal";
    let cfg = config(
        "ward-1",
        &broker,
        data.path(),
        port,
        &sim.url("a"),
        &mqtt_signal(topic, 2, ""),
    )
    .replacen(
        "stats_interval_secs = 1\n",
        "stats_interval_secs = 1\nusername = \"ioc-agent-ward-1\"\npassword = \"agent-pw\"\n",
        1,
    );
    let agent = Agent::start(&cfg);
    wait_streaming(&agent, port);

    let mut controller = Controller::login(
        broker.port,
        "junction-12-gw",
        Some(("junction-12", "controller-pw")),
    );
    controller.every(topic, || "red".into());
    wait_signal(&sub, &agent, "red", Duration::from_secs(20));
    let from = sub.all().len();
    let mut intruder =
        Controller::login(broker.port, "intruder-1", Some(("intruder", "intruder-pw")));
    intruder.every(topic, || "green".into());
    let anonymous = Controller::start(broker.port, "anonymous-1");
    for _ in 0..20 {
        anonymous.publish(topic, "green");
    }
    std::thread::sleep(Duration::from_secs(4));
    let states: Vec<String> = sub.all()[from..]
        .iter()
        .filter(|m| m.topic.ends_with("/status"))
        .filter_map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).ok()?;
            Some(v["cameras"]["a"]["signal"]["state"].as_str()?.to_string())
        })
        .collect();
    println!(
        "with the documented ACL, while an intruder and an anonymous client published green: {states:?}"
    );
    assert!(states.len() >= 3, "{states:?}");
    assert!(
        states.iter().all(|s| s == "red"),
        "{states:?}; log:\n{}",
        agent.log_text()
    );
    sub.shutdown();
}
