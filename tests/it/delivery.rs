//! Reliable delivery: the durable outbox against a real mosquitto that the
//! tests stop, restart and fill up; the agent SIGKILLed and restarted.
//! Each test prints produced / delivered / duplicate / dropped counts.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sha2::Digest;

/// An alert the agent logged as raised.
#[derive(Debug, Clone)]
pub(crate) struct Produced {
    pub id: String,
    pub camera: String,
    pub severity: String,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(&format!("{key}="))
        .nth(1)?
        .split_whitespace()
        .next()
}

pub(crate) fn produced(log: &str) -> Vec<Produced> {
    log.lines()
        .filter(|l| l.contains(": alert event_id="))
        .filter_map(|l| {
            Some(Produced {
                id: field(l, "event_id")?.to_string(),
                camera: l.split("camera{id=").nth(1)?.split('}').next()?.to_string(),
                severity: field(l, "severity")?.to_string(),
            })
        })
        .collect()
}

fn dropped(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter(|l| l.contains("outbox full; dropped the oldest alert"))
        .filter_map(|l| {
            Some((
                field(l, "event_id")?.to_string(),
                field(l, "severity")?.to_string(),
            ))
        })
        .collect()
}

/// Alert ids in order of first arrival, and how many arrived more than once.
pub(crate) fn delivered(sub: &Subscriber) -> (Vec<Value>, usize) {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut dup = 0;
    for a in sub.alerts() {
        let id = a["id"].as_str().unwrap_or_default().to_string();
        if seen.insert(id) {
            out.push(a);
        } else {
            dup += 1;
        }
    }
    (out, dup)
}

fn config(broker: &Broker, data: &Path, sim: &Sim, extra_mqtt: &str) -> String {
    config_head("ward-faults", broker, data)
        + extra_mqtt
        + &format!(
            r#"
[[models]]
name = "yolox_nano"

# These tests are about alerts; evidence updates have their own tests.
[evidence]
enabled = false

[[cameras]]
id = "traffic"
url = "{}"
backoff_min_secs = 0.2
backoff_max_secs = 1.0

[[cameras.zones]]
name = "road"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]

[[cameras.lines]]
name = "near"
points = [[0.5, 0.45], [0.5, 1.0]]

[[cameras.rules]]
name = "vehicle on road"
kind = "zone_enter"
zone = "road"
classes = ["car", "truck", "bus"]
severity = "low"

[[cameras.rules]]
name = "near lanes eastbound"
kind = "line_cross"
line = "near"
classes = ["car", "truck", "bus"]
direction = "left_to_right"
severity = "high"
"#,
            sim.url("traffic")
        )
}

/// Waits until every id in `want` has arrived with its thumbnail (an alert
/// and its thumbnail are two publishes; the thumbnail may land just after).
fn wait_all(sub: &Subscriber, want: &[Produced], timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let (got, _) = delivered(sub);
        let ids: HashSet<&str> = got.iter().filter_map(|a| a["id"].as_str()).collect();
        let thumbs: HashSet<String> = sub
            .all()
            .into_iter()
            .filter(|m| m.topic.ends_with("/thumbnail"))
            .map(|m| m.topic)
            .collect();
        let with_thumb = got
            .iter()
            .filter(|a| {
                a["thumbnail"]["topic"]
                    .as_str()
                    .is_some_and(|t| thumbs.contains(t))
            })
            .count();
        if want.iter().all(|p| ids.contains(p.id.as_str())) && with_thumb == got.len() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

/// Every delivered alert has its thumbnail, bytes matching the stated hash.
fn check_thumbnails(sub: &Subscriber, alerts: &[Value]) {
    let thumbs: HashMap<String, Vec<u8>> = sub
        .all()
        .into_iter()
        .filter(|m| m.topic.ends_with("/thumbnail"))
        .map(|m| (m.topic, m.payload))
        .collect();
    for a in alerts {
        let t = &a["thumbnail"];
        let bytes = thumbs
            .get(t["topic"].as_str().unwrap())
            .unwrap_or_else(|| panic!("no thumbnail for {}", a["id"]));
        assert_eq!(
            hex::encode(sha2::Sha256::digest(bytes)),
            t["sha256"].as_str().unwrap()
        );
    }
}

/// Per camera, alerts arrive in the order they were raised.
fn check_order(produced: &[Produced], got: &[Value]) {
    let rank: HashMap<&str, usize> = produced
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    let mut last: HashMap<String, usize> = HashMap::new();
    for a in got {
        let Some(&r) = rank.get(a["id"].as_str().unwrap()) else {
            continue;
        };
        let cam = a["camera"].as_str().unwrap().to_string();
        assert_eq!(cam, produced[r].camera);
        if let Some(&prev) = last.get(&cam) {
            assert!(r > prev, "alert {} arrived out of order", a["id"]);
        }
        last.insert(cam, r);
    }
}

fn report(name: &str, produced: usize, delivered: usize, dup: usize, dropped: usize) {
    println!(
        "{name}: produced {produced} / delivered {delivered} / duplicate {dup} / dropped {dropped}"
    );
}

/// (1) The broker is away for 60 s while the agent raises events: after it
/// returns, every event arrives exactly once (after de-duplication), in order,
/// with its thumbnail.
#[test]
fn broker_outage_of_60s_loses_nothing() {
    let mut broker = Broker::start();
    let mut sim = Some(Sim::start(&[("traffic", &traffic_clip())]));
    let sub = Subscriber::start_on(broker.port, "ioc/v1/ward-faults/#", Some("ioc-outage-test"));
    let data = tempfile::tempdir().unwrap();
    let agent = Agent::start(&config(&broker, data.path(), sim.as_ref().unwrap(), ""));
    assert!(
        sub.wait_for(Duration::from_secs(60), |m| m.topic.ends_with("/events"))
            .is_some(),
        "first alert; log:\n{}",
        agent.log_text()
    );

    broker.stop();
    let during_start = produced(&agent.log_text()).len();
    std::thread::sleep(Duration::from_secs(60));
    let during = produced(&agent.log_text()).len() - during_start;
    broker.restart();
    // Let the camera raise a few more, then stop it so the set is final.
    std::thread::sleep(Duration::from_secs(5));
    sim.take();
    std::thread::sleep(Duration::from_secs(2));
    let all = produced(&agent.log_text());
    assert!(
        during >= 10,
        "only {during} alerts raised during the outage"
    );
    let ok = wait_all(&sub, &all, Duration::from_secs(60));
    let (got, dup) = delivered(&sub);
    report(
        "outage 60 s",
        all.len(),
        got.len(),
        dup,
        dropped(&agent.log_text()).len(),
    );
    println!("raised during the outage: {during}");
    assert!(
        ok,
        "missing alerts after the outage; log:\n{}",
        agent.log_text()
    );
    let ids: HashSet<&str> = all.iter().map(|p| p.id.as_str()).collect();
    assert!(
        got.iter().all(|a| ids.contains(a["id"].as_str().unwrap())),
        "an alert nobody raised"
    );
    check_order(&all, &got);
    check_thumbnails(&sub, &got);
    assert!(dropped(&agent.log_text()).is_empty());
    sub.shutdown();
}

/// (2) SIGKILL with unacknowledged alerts in the outbox: a restarted agent
/// delivers them all.
#[test]
fn sigkill_with_unacked_alerts_loses_nothing() {
    let mut broker = Broker::start();
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let sub = Subscriber::start_on(broker.port, "ioc/v1/ward-faults/#", Some("ioc-kill-test"));
    let data = tempfile::tempdir().unwrap();
    let cfg = config(&broker, data.path(), &sim, "");
    let mut first = Agent::start(&cfg);
    assert!(
        sub.wait_for(Duration::from_secs(60), |m| m.topic.ends_with("/events"))
            .is_some(),
        "first alert; log:\n{}",
        first.log_text()
    );
    broker.stop();
    std::thread::sleep(Duration::from_secs(15));
    let _ = first.proc.child.kill();
    let _ = first.proc.child.wait();
    let before = produced(&first.log_text());
    let (got_before, _) = delivered(&sub);
    let unacked = before.len() - got_before.len();
    assert!(
        unacked >= 3,
        "only {unacked} alerts were waiting when the agent was killed"
    );
    broker.restart();
    let second = Agent::start(&cfg);
    let ok = wait_all(&sub, &before, Duration::from_secs(60));
    let (got, dup) = delivered(&sub);
    report(
        "SIGKILL",
        before.len(),
        got.len(),
        dup,
        dropped(&first.log_text()).len(),
    );
    println!("waiting in the outbox at the kill: {unacked}");
    assert!(
        ok,
        "alerts of the killed agent were lost; restarted agent log:\n{}",
        second.log_text()
    );
    check_order(&before, &got);
    check_thumbnails(&sub, &got);
    sub.shutdown();
}

/// (3) The outbox bound is hit during a long outage: the oldest low-severity
/// alerts are dropped and counted; everything else arrives.
#[test]
fn full_outbox_drops_oldest_low_severity_first() {
    let mut broker = Broker::start();
    let mut sim = Some(Sim::start(&[("traffic", &traffic_clip())]));
    let sub = Subscriber::start_on(broker.port, "ioc/v1/ward-faults/#", Some("ioc-full-test"));
    let data = tempfile::tempdir().unwrap();
    let max_rows = 12;
    let agent = Agent::start(&config(
        &broker,
        data.path(),
        sim.as_ref().unwrap(),
        &format!("outbox_max_rows = {max_rows}\n"),
    ));
    assert!(
        sub.wait_for(Duration::from_secs(60), |m| m.topic.ends_with("/events"))
            .is_some(),
        "first alert; log:\n{}",
        agent.log_text()
    );
    broker.stop();
    std::thread::sleep(Duration::from_secs(1));
    let before_stop: HashSet<String> = delivered(&sub)
        .0
        .iter()
        .filter_map(|a| a["id"].as_str().map(str::to_string))
        .collect();
    let start = Instant::now();
    // Outage until the outbox has overflowed by a margin.
    while dropped(&agent.log_text()).len() < 5 && start.elapsed() < Duration::from_secs(90) {
        std::thread::sleep(Duration::from_secs(1));
    }
    sim.take();
    std::thread::sleep(Duration::from_secs(2));
    broker.restart();
    let log = agent.log_text();
    let all = produced(&log);
    let drops = dropped(&log);
    let dropped_ids: HashSet<&str> = drops.iter().map(|(id, _)| id.as_str()).collect();
    let kept: Vec<Produced> = all
        .iter()
        .filter(|p| !dropped_ids.contains(p.id.as_str()))
        .cloned()
        .collect();
    let ok = wait_all(&sub, &kept, Duration::from_secs(60));
    let (got, dup) = delivered(&sub);
    report("outbox full", all.len(), got.len(), dup, drops.len());
    assert!(
        ok,
        "kept alerts did not all arrive; log:\n{}",
        agent.log_text()
    );
    assert!(drops.len() >= 5);
    // Dropped ones never arrive; every dropped alert was low severity while
    // low ones remained to drop, and older than every low one that survived.
    let got_ids: HashSet<&str> = got.iter().filter_map(|a| a["id"].as_str()).collect();
    assert!(
        dropped_ids.iter().all(|id| !got_ids.contains(id)),
        "a dropped alert arrived"
    );
    let waiting = |sev: &str| {
        all.iter()
            .filter(|p| p.severity == sev && !before_stop.contains(&p.id))
            .count()
    };
    println!(
        "raised while the broker was away: {} low, {} high",
        waiting("low"),
        waiting("high")
    );
    if waiting("high") <= max_rows as usize {
        assert!(
            drops.iter().all(|(_, s)| s == "low"),
            "a high-severity alert was dropped: {drops:?}"
        );
    }
    // Oldest first: no low alert that waited in the outbox survived while a
    // newer low one was dropped (ULIDs sort by time).
    let newest_dropped = drops.iter().map(|(id, _)| id.as_str()).max().unwrap();
    for p in kept
        .iter()
        .filter(|p| p.severity == "low" && !before_stop.contains(&p.id))
    {
        assert!(
            p.id.as_str() > newest_dropped,
            "low alert {} kept while the newer {} was dropped",
            p.id,
            newest_dropped
        );
    }
    // The status counts the drops.
    let s = sub
        .wait_for(Duration::from_secs(10), |m| {
            m.topic.ends_with("/status")
                && serde_json::from_slice::<Value>(&m.payload).is_ok_and(|s| {
                    s["state"] == "online"
                        && s["alerts_dropped"].as_u64() == Some(drops.len() as u64)
                })
        })
        .expect("status with the drop count");
    let s: Value = serde_json::from_slice(&s.payload).unwrap();
    assert_eq!(s["outbox"]["dropped"].as_u64(), Some(drops.len() as u64));
    sub.shutdown();
}

/// Alerts are counted as alerts (event updates apart), and a thumbnail
/// larger than the agent's packet limit is shrunk to fit instead of
/// breaking the connection on every reconnect.
#[test]
fn alerts_count_as_alerts_and_oversized_thumbnails_are_shrunk() {
    let broker = Broker::start();
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let sub = Subscriber::start(&broker, "ioc/v1/ward-faults/#");
    let data = tempfile::tempdir().unwrap();
    let limit = 12_000;
    let cfg = config(
        &broker,
        data.path(),
        &sim,
        &format!("max_packet_bytes = {limit}\n"),
    )
    .replace(
        "[evidence]\nenabled = false",
        "[evidence]\npre_secs = 1.0\npost_secs = 1.0",
    )
    .replace(
        "backoff_min_secs = 0.2",
        "thumbnail_max_side = 1280\nbackoff_min_secs = 0.2",
    );
    let agent = Agent::start(&cfg);
    // A few alerts with their evidence updates, then the camera goes away
    // and everything in flight is delivered.
    let t = Instant::now();
    while delivered(&sub).0.len() < 3 || sub.updates().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "no alerts and updates; log:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(sim);
    let start = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        let n = sub
            .all()
            .iter()
            .filter(|m| !m.topic.ends_with("/status") && !m.topic.ends_with("/stats"))
            .count();
        if n != last.0 {
            last = (n, Instant::now());
        } else if n > 0 && last.1.elapsed() > Duration::from_secs(8) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(150),
            "messages never settled"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let (alerts, _) = delivered(&sub);
    let updates = sub.updates().len();
    assert!(
        !alerts.is_empty() && updates > 0,
        "{} alerts, {updates} updates; log:\n{}",
        alerts.len(),
        agent.log_text()
    );
    let thumbs: Vec<Msg> = sub
        .all()
        .into_iter()
        .filter(|m| m.topic.ends_with("/thumbnail"))
        .collect();
    assert_eq!(thumbs.len(), alerts.len(), "every alert has its thumbnail");
    assert!(
        thumbs
            .iter()
            .all(|t| t.payload.len() + t.topic.len() + 16 <= limit),
        "a thumbnail over the packet limit went out"
    );
    check_thumbnails(&sub, &alerts);
    let status = sub
        .all()
        .into_iter()
        .rev()
        .find(|m| m.topic.ends_with("/status"))
        .expect("status");
    let status: Value = serde_json::from_slice(&status.payload).unwrap();
    let published = status["alerts_published"].as_u64().unwrap();
    println!(
        "{} alerts and {updates} event updates delivered; status alerts_published = {published}; thumbnails at most {} bytes under a {limit}-byte packet limit",
        alerts.len(),
        thumbs.iter().map(|t| t.payload.len()).max().unwrap_or(0)
    );
    assert_eq!(
        published as usize,
        alerts.len(),
        "alerts_published counts something else than alerts"
    );
    assert!(
        agent.log_text().contains("thumbnail shrunk"),
        "the shrink was not logged"
    );
}

/// Ordinary rows seeded before the one too large to deliver. Several of
/// them go out in the same write as the large one, so their acks are often
/// lost in the reset that follows: they must not be taken for the culprit.
const BEFORE: [&str; 6] = ["FIRST", "B2", "B3", "B4", "B5", "B6"];

/// Outbox rows as they would be left by an earlier run: one message too
/// large to deliver between ordinary ones.
fn seed_outbox(data: &Path, big: usize) {
    use ioc_agent::store::{Limits, NewRow, Severity, Store};
    let s = Store::open(
        data,
        Limits {
            max_rows: 1000,
            max_bytes: 1 << 30,
        },
    )
    .unwrap();
    let rows =
        BEFORE
            .iter()
            .map(|&id| (id, 10))
            .chain([("BIG", big), ("AFTER1", 10), ("AFTER2", 10)]);
    for (id, size) in rows {
        let pad = "x".repeat(size);
        s.enqueue(&NewRow {
            camera: "cam".into(),
            event_id: id.into(),
            severity: Severity::Normal,
            topic: "ioc/v1/ward-q/events".into(),
            payload: format!("{{\"id\":\"{id}\",\"pad\":\"{pad}\"}}").into_bytes(),
            thumb_topic: None,
            thumb: None,
        })
        .unwrap();
    }
}

fn delivered_ids(sub: &Subscriber) -> Vec<String> {
    sub.all()
        .iter()
        .filter(|m| m.topic.ends_with("/events"))
        .filter_map(|m| serde_json::from_slice::<Value>(&m.payload).ok())
        .filter_map(|v| v["id"].as_str().map(String::from))
        .collect()
}

/// Event ids in the store's quarantine table.
fn quarantined_ids(data: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open(data.join("agent.db")).unwrap();
    let mut q = db
        .prepare("SELECT event_id FROM quarantine ORDER BY id")
        .unwrap();
    q.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Waits until every seeded row but BIG is delivered and the outbox is
/// empty, then checks that BIG, and only BIG, was quarantined.
fn wait_quarantined(sub: &Subscriber, agent: &Agent, data: &Path) -> (Value, f64) {
    let want: Vec<&str> = BEFORE.iter().copied().chain(["AFTER1", "AFTER2"]).collect();
    let t0 = Instant::now();
    loop {
        let ids = delivered_ids(sub);
        let st = sub.latest_status().unwrap_or(Value::Null);
        if want.iter().all(|w| ids.iter().any(|i| i == w))
            && st["outbox"]["quarantined"].as_u64().unwrap_or(0) >= 1
            && st["outbox"]["rows"].as_u64() == Some(0)
        {
            assert_eq!(
                quarantined_ids(data),
                ["BIG"],
                "an innocent row was quarantined; delivered {ids:?}; log:\n{}",
                agent.log_text()
            );
            return (st, t0.elapsed().as_secs_f64());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "delivered {ids:?}, status outbox {}; log:\n{}",
            st["outbox"],
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A message larger than the agent's own packet limit (left in the outbox
/// by a run with a larger `max_packet_bytes`) is quarantined at once and
/// the messages after it flow; before, it was re-sent first on every
/// reconnect and held everything back.
#[test]
fn a_message_over_the_packet_limit_is_quarantined_and_the_rest_flows() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    seed_outbox(data.path(), 40_000);
    let agent =
        Agent::start(&(config_head("ward-q", &broker, data.path()) + "max_packet_bytes = 20000\n"));
    let (st, secs) = wait_quarantined(&sub, &agent, data.path());
    assert!(!delivered_ids(&sub).contains(&"BIG".to_string()));
    assert!(agent.log_text().contains("quarantined"));
    println!(
        "over the agent's packet limit: the 8 ordinary rows delivered in {secs:.1} s, BIG quarantined; outbox {}",
        st["outbox"]
    );
}

/// A broker that disconnects a client sending a packet over its own
/// `max_packet_size` without saying so first (mosquitto over MQTT 3.1.1):
/// the agent's limit is larger, so the message goes out, the connection
/// drops, and it would be first again on every reconnect. After three such
/// losses in a row it is quarantined and the rest is delivered.
#[test]
fn a_message_the_broker_refuses_is_quarantined_after_three_losses() {
    let broker = Broker::start_with("max_packet_size 20000\n");
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    seed_outbox(data.path(), 40_000);
    let agent =
        Agent::start(&(config_head("ward-q", &broker, data.path()) + "protocol = \"3.1.1\"\n"));
    let (st, secs) = wait_quarantined(&sub, &agent, data.path());
    assert!(!delivered_ids(&sub).contains(&"BIG".to_string()));
    let log = agent.log_text();
    assert!(log.contains("lost 3 times in a row"), "{log}");
    println!(
        "refused by the broker (max_packet_size 20000): the rest delivered in {secs:.1} s after {} reconnects, BIG quarantined; outbox {}",
        st["mqtt_reconnects"]
            .as_u64()
            .unwrap_or(log.matches("connected to MQTT broker").count() as u64),
        st["outbox"]
    );
}

/// Rows for a broker that refuses them, as an earlier run would leave them.
fn seed_rows(data: &Path, agent: &str, ids: &[&str]) {
    use ioc_agent::store::{Limits, NewRow, Severity, Store};
    let s = Store::open(
        data,
        Limits {
            max_rows: 1000,
            max_bytes: 1 << 30,
        },
    )
    .unwrap();
    for id in ids {
        s.enqueue(&NewRow {
            camera: "cam".into(),
            event_id: (*id).into(),
            severity: Severity::High,
            topic: format!("ioc/v1/{agent}/events"),
            payload: format!("{{\"id\":\"{id}\"}}").into_bytes(),
            thumb_topic: None,
            thumb: None,
        })
        .unwrap();
    }
}

fn outbox_rows(data: &Path) -> i64 {
    let db = rusqlite::Connection::open(data.join("agent.db")).unwrap();
    db.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .unwrap()
}

/// A ward broker whose ACL does not let the agent publish its alerts (a
/// typo in the ACL, a renamed agent). Over MQTT 3.1.1 mosquitto still
/// acknowledges each publish and drops it: the agent deleted the rows and
/// counted them delivered, and nobody knew. Over MQTT 5 the PUBACK says
/// "not authorized" (0x87): the rows stay in the outbox, the refusals are
/// counted and named in the status, and once the ACL is fixed (and the
/// broker reloaded) every alert is delivered.
#[test]
fn alerts_the_broker_is_not_authorized_to_take_stay_in_the_outbox() {
    let acl = tempfile::tempdir().unwrap();
    let acl_file = acl.path().join("acl");
    // Anonymous clients (the agent, the test's subscriber) may read all and
    // write the status, not the events.
    std::fs::write(
        &acl_file,
        "topic read ioc/#\ntopic readwrite ioc/v1/ward-acl/status\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(acl.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&acl_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut broker = Broker::start_with(&format!("acl_file {}\n", acl_file.display()));
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    let ids = ["ACL1", "ACL2", "ACL3", "ACL4"];
    seed_rows(data.path(), "ward-acl", &ids);
    let agent = Agent::start(&config_head("ward-acl", &broker, data.path()));
    // Refused: nothing delivered, nothing counted delivered, nothing lost.
    let t0 = Instant::now();
    let st = loop {
        let st = sub.latest_status().unwrap_or(Value::Null);
        if st["outbox"]["refused"].as_u64().unwrap_or(0) >= 1 {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no refusal reported; status {st}; log:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(3));
    let st = sub.latest_status().unwrap_or(st);
    assert_eq!(delivered_ids(&sub), Vec::<String>::new());
    assert_eq!(
        st["alerts_published"], 0,
        "refused alerts counted delivered: {st}"
    );
    assert_eq!(
        outbox_rows(data.path()),
        ids.len() as i64,
        "refused alerts left the outbox"
    );
    assert_eq!(st["mqtt_protocol"], "5", "{st}");
    let why = st["outbox"]["last_refusal"].as_str().unwrap_or("");
    assert!(
        why.contains("not authorized") && why.contains("ACL"),
        "{st}"
    );
    let log = agent.log_text();
    assert!(log.contains("not authorized"), "{log}");
    // The ACL fixed and the broker reloaded: everything arrives.
    std::fs::write(&acl_file, "topic readwrite ioc/#\n").unwrap();
    let fixed = Instant::now();
    broker.reload();
    while delivered_ids(&sub).len() < ids.len() {
        assert!(
            fixed.elapsed() < Duration::from_secs(60),
            "delivered {:?} after the fix; log:\n{}",
            delivered_ids(&sub),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = delivered_ids(&sub);
    assert_eq!(got, ids, "order");
    println!(
        "ACL refusing the events topic: 0 of {} delivered, {} refusals counted, all kept; after the fix all {} delivered in {:.1} s",
        ids.len(),
        st["outbox"]["refused"],
        got.len(),
        fixed.elapsed().as_secs_f64()
    );
}

/// The same broker over MQTT 5 states its maximum packet size in its
/// CONNACK: the message over it is quarantined at once, naming the broker's
/// limit, with no connection lost for it.
#[test]
fn a_message_over_the_brokers_stated_maximum_is_quarantined_at_once() {
    let broker = Broker::start_with("max_packet_size 20000\n");
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    seed_outbox(data.path(), 40_000);
    let agent = Agent::start(&config_head("ward-q", &broker, data.path()));
    let (st, secs) = wait_quarantined(&sub, &agent, data.path());
    assert!(!delivered_ids(&sub).contains(&"BIG".to_string()));
    let log = agent.log_text();
    assert!(
        log.contains("the broker's maximum packet size 20000"),
        "{log}"
    );
    assert!(!log.contains("MQTT connection lost"), "{log}");
    assert_eq!(st["mqtt_protocol"], "5", "{st}");
    println!(
        "over the broker's stated maximum (MQTT 5 CONNACK, 20000): the rest delivered in {secs:.1} s with no reconnect, BIG quarantined; outbox {}",
        st["outbox"]
    );
}

/// A broker that speaks MQTT 3.1.1 only (NATS's MQTT listener refuses a
/// version 5 CONNECT): `mqtt.protocol = "auto"` falls back to 3.1.1, says
/// so once, and delivers everything; the status names the version.
#[test]
fn a_broker_without_mqtt_5_is_spoken_to_in_3_1_1() {
    let nats = Nats::start();
    let sub = Subscriber::start_on(nats.mqtt_port, "ioc/v1/#", None);
    let data = tempfile::tempdir().unwrap();
    let ids = ["N1", "N2", "N3"];
    seed_rows(data.path(), "ward-nats", &ids);
    let url = format!("mqtt://127.0.0.1:{}", nats.mqtt_port);
    let cfg = config_head_url("ward-nats", &url, data.path());
    let agent = Agent::start(&cfg);
    let t0 = Instant::now();
    while delivered_ids(&sub).len() < ids.len() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "delivered {:?}; log:\n{}",
            delivered_ids(&sub),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(delivered_ids(&sub), ids);
    let log = agent.log_text();
    assert_eq!(log.matches("does not speak MQTT 5").count(), 1, "{log}");
    assert!(log.contains("protocol=\"3.1.1\""), "{log}");
    println!(
        "NATS (MQTT 3.1.1 only): fell back to 3.1.1, {} rows delivered in {:.1} s",
        ids.len(),
        t0.elapsed().as_secs_f64()
    );
}

/// The agent's latest status a subscriber got.
fn status_on(sub: &Subscriber) -> Option<Value> {
    sub.latest_status()
}

/// Broker failover: the first broker (`mqtt.url`) is stopped mid-run; the
/// agent moves to the standby (`mqtt.failover_urls`) within seconds, and back
/// when the first returns (`failback_secs`). Every alert raised arrives, on
/// one broker or the other, in order on each, none dropped.
#[test]
fn a_broker_that_goes_away_is_replaced_by_the_next_and_nothing_is_lost() {
    let mut first = Broker::start();
    let standby = Broker::start();
    let mut sim = Some(Sim::start(&[("traffic", &traffic_clip())]));
    let sub_first = Subscriber::start_on(
        first.port,
        "ioc/v1/ward-faults/#",
        Some("ioc-failover-first"),
    );
    let sub_standby = Subscriber::start_on(
        standby.port,
        "ioc/v1/ward-faults/#",
        Some("ioc-failover-standby"),
    );
    let data = tempfile::tempdir().unwrap();
    let extra = format!(
        "failover_urls = [\"{}\"]\nfailback_secs = 2\n",
        standby.url()
    );
    let cfg = config(&first, data.path(), sim.as_ref().unwrap(), "").replacen(
        "[mqtt]\n",
        &format!("[mqtt]\n{extra}"),
        1,
    );
    assert!(cfg.contains("failover_urls"), "{cfg}");
    let agent = Agent::start(&cfg);
    assert!(
        sub_first
            .wait_for(Duration::from_secs(60), |m| m.topic.ends_with("/events"))
            .is_some(),
        "first alert; log:\n{}",
        agent.log_text()
    );
    let on = |sub: &Subscriber, port: u16| {
        status_on(sub).is_some_and(|s| {
            s["state"] == "online"
                && s["mqtt_broker"].as_str() == Some(&format!("127.0.0.1:{port}"))
        })
    };
    // The first broker goes away.
    let before = produced(&agent.log_text()).len();
    first.stop();
    let t = Instant::now();
    while !on(&sub_standby, standby.port) && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let to_standby = t.elapsed().as_secs_f64();
    assert!(
        on(&sub_standby, standby.port),
        "no online status on the standby in 30 s; log:\n{}",
        agent.log_text()
    );
    std::thread::sleep(Duration::from_secs(10));
    let during = produced(&agent.log_text()).len() - before;
    // It comes back: the agent moves back.
    first.restart();
    let t = Instant::now();
    while !on(&sub_first, first.port) && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let back = t.elapsed().as_secs_f64();
    assert!(
        on(&sub_first, first.port),
        "not back on the first broker in 30 s; log:\n{}",
        agent.log_text()
    );
    std::thread::sleep(Duration::from_secs(5));
    sim.take();
    std::thread::sleep(Duration::from_secs(2));
    let all = produced(&agent.log_text());
    // Everything raised arrived on one broker or the other.
    let deadline = Instant::now() + Duration::from_secs(60);
    let ids = |s: &Subscriber| -> HashSet<String> {
        delivered(s)
            .0
            .iter()
            .filter_map(|a| a["id"].as_str().map(str::to_string))
            .collect()
    };
    let missing = loop {
        let got: HashSet<String> = ids(&sub_first).union(&ids(&sub_standby)).cloned().collect();
        let missing: Vec<&str> = all
            .iter()
            .map(|p| p.id.as_str())
            .filter(|id| !got.contains(*id))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing.len();
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let (on_first, dup_first) = delivered(&sub_first);
    let (on_standby, dup_standby) = delivered(&sub_standby);
    let switches = status_on(&sub_first).map(|s| s["broker_switches"].clone());
    println!(
        "failover: produced {} / delivered {} (first broker {}, standby {}) / lost {missing} / duplicates {} / dropped {}; to the standby in {to_standby:.1} s, back in {back:.1} s after the first returned; {during} raised on the standby; broker_switches {switches:?}",
        all.len(),
        all.len() - missing,
        on_first.len(),
        on_standby.len(),
        dup_first + dup_standby,
        dropped(&agent.log_text()).len()
    );
    assert_eq!(
        missing,
        0,
        "alerts lost in the failover; log:\n{}",
        agent.log_text()
    );
    assert!(!on_standby.is_empty(), "nothing went to the standby");
    assert!(during >= 5, "only {during} alerts raised on the standby");
    check_order(&all, &on_first);
    check_order(&all, &on_standby);
    assert!(dropped(&agent.log_text()).is_empty());
    assert_eq!(
        switches,
        Some(serde_json::json!(2)),
        "to the standby and back"
    );
    sub_first.shutdown();
    sub_standby.shutdown();
}

/// Two boxes installed with one `agent_id` (a cloned config): each sees the
/// other's live status on its own topic and says so, in its log and in its
/// status, naming the fix. Before, they silently took turns kicking each
/// other off the broker (one MQTT client id).
#[test]
fn two_agents_with_one_agent_id_are_told_apart_and_reported() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "ioc/v1/ward-twin/status");
    let cfg = |data: &Path| {
        config_head("ward-twin", &broker, data)
            + "\n[[cameras]]\nid = \"cam\"\nurl = \"rtsp://127.0.0.1:9/none\"\n"
    };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Agent::start(&cfg(d1.path()));
    std::thread::sleep(Duration::from_millis(1500));
    let b = Agent::start(&cfg(d2.path()));
    let t = Instant::now();
    let said = |agent: &Agent| {
        agent
            .log_text()
            .contains("another agent publishes as agent_id 'ward-twin'")
    };
    while !(said(&a) && said(&b)) && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let secs = t.elapsed().as_secs_f64();
    assert!(
        said(&a) && said(&b),
        "not both reported in 30 s; first:\n{}\nsecond:\n{}",
        a.log_text(),
        b.log_text()
    );
    let conflict = sub.wait_for(Duration::from_secs(10), |m| {
        serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| {
            v["agent_id_conflict"]
                .as_str()
                .is_some_and(|c| c.contains("give each box its own agent_id"))
        })
    });
    assert!(conflict.is_some(), "no status names the conflict");
    let instances: HashSet<String> = sub
        .all()
        .iter()
        .filter_map(|m| serde_json::from_slice::<Value>(&m.payload).ok())
        .filter_map(|v| v["instance"].as_str().map(str::to_string))
        .collect();
    assert_eq!(instances.len(), 2, "{instances:?}");
    println!(
        "two agents as 'ward-twin': both reported the clash within {secs:.1} s of the second start"
    );
    // One agent alone, restarted: its earlier run's status is not a clash.
    drop(b);
    drop(a);
    let a = Agent::start(&cfg(d1.path()));
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !said(&a),
        "a restarted agent took its own earlier status for another agent:\n{}",
        a.log_text()
    );
    sub.shutdown();
}

/// The short province run: `ioc-agent loadgen`, 10 agents × 10 cameras for
/// 60 s through the real publish path into one broker, which is stopped for
/// 3 s and restarted (persistent) 20 s in. Nothing is lost; the table line
/// is printed.
#[test]
fn loadgen_100_cameras_through_a_broker_restart_lose_nothing() {
    let mut broker = Broker::start();
    let child = std::process::Command::new(BIN)
        .args([
            "loadgen",
            "--url",
            &broker.url(),
            "--agents",
            "10",
            "--cameras",
            "10",
            "--seconds",
            "60",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(20));
    broker.stop();
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    println!(
        "loadgen 100 cameras, 60 s, broker restarted at 20 s: produced {} / delivered {} / duplicates {} / lost {}; p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        r["produced"],
        r["delivered"],
        r["duplicates"],
        r["lost"],
        r["latency_ms"]["p50"].as_f64().unwrap(),
        r["latency_ms"]["p99"].as_f64().unwrap(),
        r["latency_ms"]["max"].as_f64().unwrap()
    );
    assert!(r["produced"].as_u64().unwrap() > 300, "{r}");
    assert_eq!(
        r["lost"],
        0,
        "{r}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
}
