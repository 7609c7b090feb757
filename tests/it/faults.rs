//! Fault injection: the real agent against cameras and a broker that fail
//! the way real ones do, on loopback only. The RTSP server is stopped with
//! SIGSTOP and restarted; the camera link and the broker link go through a
//! userspace TCP proxy (`common/proxy.rs`: this kernel has no `sch_netem`)
//! that delays, loses, blackholes, stalls and cuts; a camera changes its
//! resolution mid-stream, sends a corrupted bitstream, asks for Digest
//! authentication; the broker restarts under a persistent session.
//!
//! Each test asserts that the agent recovers — the camera back to
//! `streaming` with decoded pictures advancing, or every alert delivered as
//! the IOC sees it (de-duplicated by alert `id`) — within a generous bound,
//! and prints one line per fault:
//! `fault <name>: produced N delivered N lost N duplicates N recovered in X.X s`.
//! produced = alerts the agent raised from the fault's start until the
//! end of its recovery (from the agent's log), delivered = those the IOC's
//! subscriber received, lost = the rest, duplicates = extra copies; the
//! recovery time runs from the end of the fault (the server continued or
//! back, the link healed) to the camera streaming again or the outbox
//! drained. Cameras here use `connect_timeout_secs` and
//! `inactivity_timeout_secs` of 5 and a backoff of 0.5-4 s, the broker link
//! a 5 s keep-alive; the defaults (10 s, 1-30 s, 30 s) recover more slowly.

use crate::common;
use crate::delivery::{delivered, produced};

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use common::proxy::{Mode, Proxy};
use common::rtsp::{FakeCamera, nal_units};
use common::*;
use serde_json::Value;

const AGENT: &str = "ward-fi";
/// How long a recovery may take before the test fails (measured times are printed).
const RECOVERY_BOUND: Duration = Duration::from_secs(60);

/// One `[[cameras]]` table: fast timeouts, a zone over the whole picture
/// and a line over the near lanes (vehicles raise alerts every few seconds).
fn camera(id: &str, url: &str) -> String {
    format!(
        r#"
[[cameras]]
id = "{id}"
url = "{url}"
connect_timeout_secs = 5
inactivity_timeout_secs = 5
backoff_min_secs = 0.5
backoff_max_secs = 4.0

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
"#
    )
}

/// The agent's config: `mqtt_extra` goes into `[mqtt]`, then the model and
/// the cameras (evidence off: these tests are about liveness and alerts).
fn config(broker: &Broker, data: &Path, mqtt_extra: &str, cameras: &str) -> String {
    config_head(AGENT, broker, data)
        + mqtt_extra
        + r#"
[[models]]
name = "yolox_nano"

[evidence]
enabled = false
"# + cameras
}

fn topics() -> String {
    format!("ioc/v1/{AGENT}/#")
}

/// Access units (Annex B) of the traffic clip re-encoded by `encoder`, each
/// IDR carrying its SPS and PPS as a camera sends them.
fn encode(encoder: &[&str]) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("clip.mp4");
    transcode(&mp4, encoder, "h264parse");
    let mut ps: Vec<Vec<u8>> = Vec::new();
    access_units(&mp4)
        .into_iter()
        .map(|a| {
            let nals = nal_units(&a.data);
            let types: Vec<u8> = nals.iter().map(|n| n[0] & 0x1f).collect();
            if types.contains(&7) {
                ps = nals
                    .iter()
                    .filter(|n| matches!(n[0] & 0x1f, 7 | 8))
                    .map(|n| n.to_vec())
                    .collect();
                return a.data;
            }
            if !types.contains(&5) {
                return a.data;
            }
            let mut out = Vec::new();
            for p in &ps {
                out.extend_from_slice(&[0, 0, 0, 1]);
                out.extend_from_slice(p);
            }
            out.extend_from_slice(&a.data);
            out
        })
        .collect()
}

fn is_idr(au: &[u8]) -> bool {
    nal_units(au).iter().any(|n| n[0] & 0x1f == 5)
}

/// The traffic clip at 640x360, a keyframe every second, no B-frames.
fn footage() -> &'static [Vec<u8>] {
    static F: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    F.get_or_init(|| {
        encode(&[
            "x264enc",
            "speed-preset=ultrafast",
            "key-int-max=24",
            "bframes=0",
            "bitrate=1200",
        ])
    })
}

/// The same at 320x180.
fn small_footage() -> &'static [Vec<u8>] {
    static F: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    F.get_or_init(|| {
        encode(&[
            "videoscale",
            "!",
            "video/x-raw,width=320,height=180",
            "!",
            "x264enc",
            "speed-preset=ultrafast",
            "key-int-max=24",
            "bframes=0",
            "bitrate=400",
        ])
    })
}

/// The camera's entry in the newest status (Null before the first).
fn cam_status(sub: &Subscriber, id: &str) -> Value {
    sub.latest_status()
        .map(|v| v["cameras"][id].clone())
        .unwrap_or(Value::Null)
}

fn frames(c: &Value) -> u64 {
    c["frames_decoded"].as_u64().unwrap_or(0)
}

/// Seconds from `t0` until the camera's newest status satisfies `pred`
/// (polled every 100 ms; the agent publishes it every second), with that
/// status; None once `within` has passed.
fn until(
    sub: &Subscriber,
    id: &str,
    t0: Instant,
    within: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Option<(f64, Value)> {
    loop {
        let c = cam_status(sub, id);
        if pred(&c) {
            return Some((t0.elapsed().as_secs_f64(), c));
        }
        if t0.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Streaming, with a second's worth of pictures decoded past `base`.
fn live_past(base: u64) -> impl Fn(&Value) -> bool {
    move |c| c["state"] == "streaming" && frames(c) >= base + 24
}

/// When the camera's newest frame arrived (`last_frame_at`, the agent's clock).
fn last_frame_at(c: &Value) -> Option<SystemTime> {
    let t = chrono::DateTime::parse_from_rfc3339(c["last_frame_at"].as_str()?).ok()?;
    Some(SystemTime::from(t))
}

/// Live again after a fault that ended at `since`: streaming, a frame
/// received after `since`, and more pictures decoded than `base` (the count
/// when the fault ended). A status published before the fault ended (they
/// come every second) never passes, whatever its state says.
fn live_since(since: SystemTime, base: u64) -> impl Fn(&Value) -> bool {
    move |c| {
        c["state"] == "streaming"
            && frames(c) > base
            && last_frame_at(c).is_some_and(|t| t >= since)
    }
}

/// Waits until the camera streams for the first time; panics with the log.
fn wait_live(sub: &Subscriber, agent: &Agent, id: &str) -> Value {
    until(
        sub,
        id,
        Instant::now(),
        Duration::from_secs(90),
        live_past(0),
    )
    .unwrap_or_else(|| {
        panic!(
            "camera {id} never streamed: {}\nlog:\n{}",
            cam_status(sub, id),
            agent.log_text()
        )
    })
    .1
}

/// The end of a fault, on both clocks.
#[derive(Clone, Copy)]
struct Mark {
    at: Instant,
    wall: SystemTime,
}

fn now() -> Mark {
    Mark {
        at: Instant::now(),
        wall: SystemTime::now(),
    }
}

/// Recovery of `id` after a fault that ended at `end`: seconds until it is
/// live again ([`live_since`]; `base` is the pictures decoded by then);
/// panics (with the log) past [`RECOVERY_BOUND`].
fn recovered(sub: &Subscriber, agent: &Agent, id: &str, end: Mark, base: u64, what: &str) -> f64 {
    until(sub, id, end.at, RECOVERY_BOUND, live_since(end.wall, base))
        .unwrap_or_else(|| {
            panic!(
                "{what}: camera {id} did not recover within {} s: {}\nlog:\n{}",
                RECOVERY_BOUND.as_secs(),
                cam_status(sub, id),
                agent.log_text()
            )
        })
        .0
}

/// Alerts raised from the `from`-th on, as the IOC saw them.
struct Tally {
    produced: usize,
    /// Raised and received (once or more).
    delivered: usize,
    /// Raised and never received.
    lost: Vec<String>,
    /// Copies received beyond the first (at-least-once delivery).
    duplicates: usize,
    /// Received, but the thumbnail the alert names never came.
    no_thumbnail: Vec<String>,
}

impl Tally {
    fn of(agent: &Agent, sub: &Subscriber, from: usize) -> Tally {
        let raised: Vec<String> = produced(&agent.log_text())
            .into_iter()
            .skip(from)
            .map(|p| p.id)
            .collect();
        let want: HashSet<&str> = raised.iter().map(String::as_str).collect();
        let msgs = sub.all();
        let thumbs: HashSet<&str> = msgs
            .iter()
            .filter(|m| m.topic.ends_with("/thumbnail"))
            .map(|m| m.topic.as_str())
            .collect();
        let mut copies = std::collections::HashMap::<String, usize>::new();
        let mut no_thumbnail = Vec::new();
        for a in sub.alerts() {
            let Some(id) = a["id"].as_str().filter(|i| want.contains(i)) else {
                continue;
            };
            let n = copies.entry(id.to_string()).or_default();
            *n += 1;
            if *n == 1
                && a["thumbnail"]["topic"]
                    .as_str()
                    .is_some_and(|t| !thumbs.contains(t))
            {
                no_thumbnail.push(id.to_string());
            }
        }
        let lost: Vec<String> = raised
            .iter()
            .filter(|id| !copies.contains_key(*id))
            .cloned()
            .collect();
        Tally {
            produced: raised.len(),
            delivered: copies.len(),
            duplicates: copies.values().map(|n| n - 1).sum(),
            lost,
            no_thumbnail,
        }
    }

    fn complete(&self) -> bool {
        self.lost.is_empty() && self.no_thumbnail.is_empty()
    }

    /// Waits up to `within` for every alert raised so far (from the
    /// `from`-th) to arrive; the tally then, and the seconds it took.
    fn settle(agent: &Agent, sub: &Subscriber, from: usize, within: Duration) -> (Tally, f64) {
        let t0 = Instant::now();
        loop {
            let t = Tally::of(agent, sub, from);
            if t.complete() || t0.elapsed() > within {
                return (t, t0.elapsed().as_secs_f64());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn report(&self, name: &str, recovered_secs: f64) {
        println!(
            "fault {name}: produced {} delivered {} lost {} duplicates {} recovered in {recovered_secs:.1} s",
            self.produced,
            self.delivered,
            self.lost.len(),
            self.duplicates
        );
    }

    fn assert_none_lost(&self, name: &str, agent: &Agent) {
        assert!(
            self.complete(),
            "{name}: of {} alerts, {} never reached the IOC ({:?}) and {} came without their thumbnail ({:?})\nlog:\n{}",
            self.produced,
            self.lost.len(),
            self.lost,
            self.no_thumbnail.len(),
            self.no_thumbnail,
            agent.log_text()
        );
    }
}

/// The delays the agent chose before reopening its camera sessions, from
/// the `skip`-th failure on (its log's `retry_in_ms`).
fn retry_delays(agent: &Agent, skip: usize) -> Vec<u64> {
    // An error may run over several lines: the field follows it.
    agent
        .log_text()
        .split("camera session failed")
        .skip(1)
        .filter_map(|l| {
            l.split("retry_in_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .skip(skip)
        .collect()
}

fn raised(agent: &Agent) -> usize {
    produced(&agent.log_text()).len()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on the pid of a child this test started.
    let r = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// Camera stall: the RTSP server (the simulator, a process of its own) is
/// stopped with SIGSTOP for 20 s — its sockets stay open, nothing moves —
/// then continued.
#[test]
fn camera_stall_sigstop_20s() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, &topics());
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let data = tempfile::tempdir().unwrap();
    let agent = Agent::start(&config(
        &broker,
        data.path(),
        "",
        &camera("cam", &sim.url("traffic")),
    ));
    wait_live(&sub, &agent, "cam");
    std::thread::sleep(Duration::from_secs(3));
    let mark = raised(&agent);
    signal(sim.pid(), libc::SIGSTOP);
    let stopped = Instant::now();
    let noticed = until(&sub, "cam", stopped, Duration::from_secs(20), |c| {
        c["state"] != "streaming"
    });
    std::thread::sleep(Duration::from_secs(20).saturating_sub(stopped.elapsed()));
    let base = frames(&cam_status(&sub, "cam"));
    signal(sim.pid(), libc::SIGCONT);
    let resumed = now();
    let secs = recovered(&sub, &agent, "cam", resumed, base, "SIGSTOP 20 s");
    let (tally, _) = Tally::settle(&agent, &sub, mark, Duration::from_secs(30));
    let (after, c) = noticed.unwrap_or_else(|| {
        panic!(
            "a camera stopped for 20 s was still shown streaming: {}",
            cam_status(&sub, "cam")
        )
    });
    let c2 = cam_status(&sub, "cam");
    println!(
        "  server stopped 20 s: shown '{}' after {after:.1} s ({}); reconnects {}, stalls {}",
        c["state"].as_str().unwrap_or("?"),
        c["last_error"].as_str().unwrap_or("no error"),
        c2["reconnects"],
        c2["stalls"]
    );
    tally.report("camera-sigstop-20s", secs);
    tally.assert_none_lost("camera-sigstop-20s", &agent);
}

/// Server restart: the RTSP server is killed and started again 5 s later
/// on the same port (a camera rebooting).
#[test]
fn camera_server_restart() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, &topics());
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let port = sim.port;
    let data = tempfile::tempdir().unwrap();
    let agent = Agent::start(&config(
        &broker,
        data.path(),
        "",
        &camera("cam", &sim.url("traffic")),
    ));
    wait_live(&sub, &agent, "cam");
    std::thread::sleep(Duration::from_secs(3));
    let mark = raised(&agent);
    let reconnects = cam_status(&sub, "cam")["reconnects"].as_u64().unwrap_or(0);
    drop(sim);
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let down = cam_status(&sub, "cam");
    let base = frames(&down);
    let _sim = Sim::start_on(port, &[("traffic", &traffic_clip())]);
    let back = now();
    let secs = recovered(&sub, &agent, "cam", back, base, "server restart");
    let (tally, _) = Tally::settle(&agent, &sub, mark, Duration::from_secs(30));
    println!(
        "  server down {:.1} s: {} failed sessions meanwhile, shown '{}' ({})",
        back.at.duration_since(killed).as_secs_f64(),
        down["reconnects"].as_u64().unwrap_or(0) - reconnects,
        down["state"].as_str().unwrap_or("?"),
        down["last_error"].as_str().unwrap_or("no error")
    );
    tally.report("camera-server-restart", secs);
    tally.assert_none_lost("camera-server-restart", &agent);
}

/// Delay and loss on the camera link (the simulator behind the proxy):
/// 250 ms latency with 5% of chunks lost (each held a 300 ms
/// retransmission timeout) for 15 s, which the camera must ride out
/// without a reconnect; then a cut, total loss (a blackhole) for 10 s and
/// a stalled link for 10 s, each recovered from.
#[test]
fn camera_link_delay_and_loss() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, &topics());
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let proxy = Proxy::start(sim.port);
    let url = format!("rtsp://127.0.0.1:{}/traffic", proxy.port);
    let data = tempfile::tempdir().unwrap();
    let agent = Agent::start(&config(&broker, data.path(), "", &camera("cam", &url)));
    wait_live(&sub, &agent, "cam");

    // Delay and partial loss: ridden out.
    let mark = raised(&agent);
    let c0 = cam_status(&sub, "cam");
    proxy.set_latency(Duration::from_millis(250));
    proxy.set_loss(0.05, Duration::from_millis(300));
    std::thread::sleep(Duration::from_secs(15));
    let c1 = cam_status(&sub, "cam");
    proxy.heal();
    let healed = now();
    let secs = recovered(&sub, &agent, "cam", healed, frames(&c1), "delay and loss");
    let (tally, _) = Tally::settle(&agent, &sub, mark, Duration::from_secs(30));
    println!(
        "  250 ms + 5% loss for 15 s: {} pictures decoded (about 360 sent), {} chunks held back, state {}, reconnects {} -> {}",
        frames(&c1) - frames(&c0),
        proxy.counters().lost_chunks.load(Ordering::Relaxed),
        c1["state"],
        c0["reconnects"],
        c1["reconnects"]
    );
    tally.report("camera-link-delay-loss", secs);
    tally.assert_none_lost("camera-link-delay-loss", &agent);
    assert_eq!(
        c0["reconnects"], c1["reconnects"],
        "250 ms latency and 5% loss made the camera reconnect: {c1}"
    );
    assert!(
        frames(&c1) > frames(&c0) + 200,
        "pictures stopped under delay and loss: {c0} -> {c1}"
    );

    // The cut first, on a session healthy for 15 s (its backoff starts
    // afresh); then the blackhole and the stall, each on a short session.
    for (name, mode) in [
        ("camera-link-cut", None),
        ("camera-link-blackhole-10s", Some(Mode::Blackhole)),
        ("camera-link-stall-10s", Some(Mode::Stall)),
    ] {
        let mark = raised(&agent);
        let retries = retry_delays(&agent, 0).len();
        let start = Instant::now();
        let noticed;
        match mode {
            Some(m) => {
                proxy.set_mode(m);
                noticed = until(&sub, "cam", start, Duration::from_secs(10), |c| {
                    c["state"] != "streaming"
                });
                std::thread::sleep(Duration::from_secs(10).saturating_sub(start.elapsed()));
                proxy.heal();
            }
            None => {
                proxy.cut();
                noticed = None;
            }
        }
        let base = frames(&cam_status(&sub, "cam"));
        let healed = now();
        let secs = recovered(&sub, &agent, "cam", healed, base, name);
        let (tally, _) = Tally::settle(&agent, &sub, mark, Duration::from_secs(30));
        if let Some(m) = mode {
            let (after, c) = noticed.unwrap_or_else(|| {
                panic!(
                    "{name}: the camera was still shown streaming after 10 s of {m:?}: {}",
                    cam_status(&sub, "cam")
                )
            });
            println!(
                "  {m:?} 10 s: shown '{}' after {after:.1} s ({})",
                c["state"].as_str().unwrap_or("?"),
                c["last_error"].as_str().unwrap_or("no error")
            );
        }
        println!(
            "  {name}: the agent's retry delays meanwhile (ms): {:?}",
            retry_delays(&agent, retries)
        );
        tally.report(name, secs);
        tally.assert_none_lost(name, &agent);
    }
    let c = proxy.counters();
    println!(
        "  proxy: {} connections, {} bytes to the camera, {} from it, {} blackholed",
        c.connections.load(Ordering::Relaxed),
        c.up.load(Ordering::Relaxed),
        c.down.load(Ordering::Relaxed),
        c.blackholed.load(Ordering::Relaxed)
    );
}

/// Connections the agent's publisher made to the broker so far.
fn broker_connections(agent: &Agent) -> usize {
    agent
        .log_text()
        .lines()
        .filter(|l| l.contains("connected to MQTT broker"))
        .count()
}

/// Waits until the agent has connected to the broker more than `before`
/// times (it noticed the fault and came back), then until every alert
/// raised from the `from`-th on has arrived: seconds from `t0`.
fn reconnected_and_drained(
    agent: &Agent,
    sub: &Subscriber,
    before: usize,
    from: usize,
    t0: Instant,
    what: &str,
) -> f64 {
    while broker_connections(agent) <= before {
        assert!(
            t0.elapsed() < RECOVERY_BOUND,
            "{what}: the agent did not reconnect to the broker within {} s; log:\n{}",
            RECOVERY_BOUND.as_secs(),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = RECOVERY_BOUND.saturating_sub(t0.elapsed());
    Tally::settle(agent, sub, from, left);
    t0.elapsed().as_secs_f64()
}

/// What the broker link suffers in one phase.
#[derive(Clone, Copy, Debug)]
enum LinkFault {
    /// 300 ms latency, 5% of chunks lost (held a 300 ms retransmission timeout).
    DelayLoss,
    Mode(Mode),
    Cut,
}

/// Delay and loss on the broker link (the agent reaches mosquitto through
/// the proxy; the IOC's subscriber does not): 300 ms latency with 5% loss
/// for 15 s, ridden out on the same connection; then total loss (a
/// blackhole) for 15 s, a stalled link for 15 s and a cut, each noticed by
/// the agent (keep-alive 5 s) and recovered from. Every alert arrives; the
/// time runs from the end of the fault until the agent has reconnected (not
/// for delay and loss) and the outbox has delivered everything raised so far.
#[test]
fn broker_link_delay_and_loss() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, &topics());
    let proxy = Proxy::start(broker.port);
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let data = tempfile::tempdir().unwrap();
    let cfg = config(
        &broker,
        data.path(),
        "keep_alive_secs = 5\n",
        &camera("cam", &sim.url("traffic")),
    )
    .replace(&broker.url(), &format!("mqtt://127.0.0.1:{}", proxy.port));
    let agent = Agent::start(&cfg);
    wait_live(&sub, &agent, "cam");
    assert!(
        sub.wait_for(Duration::from_secs(60), |m| m.topic.ends_with("/events"))
            .is_some(),
        "no alert before the faults; log:\n{}",
        agent.log_text()
    );
    for (name, fault) in [
        ("broker-link-delay-loss", LinkFault::DelayLoss),
        (
            "broker-link-blackhole-15s",
            LinkFault::Mode(Mode::Blackhole),
        ),
        ("broker-link-stall-15s", LinkFault::Mode(Mode::Stall)),
        ("broker-link-cut", LinkFault::Cut),
    ] {
        // A dead link is made dead first, and what counts as raised during
        // it is marked after a moment: an alert raised just before the mode
        // switched (or its bytes already taken by the proxy) may still cross,
        // and once took the test for a leak (clean clone of 5e61aa2: "1
        // crossed a dead link").
        if let LinkFault::Mode(m) = fault {
            proxy.set_mode(m);
            std::thread::sleep(Duration::from_millis(500));
        }
        let mark = raised(&agent);
        let conns = broker_connections(&agent);
        let before: HashSet<String> = delivered(&sub)
            .0
            .iter()
            .filter_map(|a| a["id"].as_str().map(str::to_string))
            .collect();
        match fault {
            LinkFault::DelayLoss => {
                proxy.set_latency(Duration::from_millis(300));
                proxy.set_loss(0.05, Duration::from_millis(300));
            }
            LinkFault::Mode(_) => {}
            LinkFault::Cut => proxy.cut(),
        }
        if !matches!(fault, LinkFault::Cut) {
            std::thread::sleep(Duration::from_secs(15));
            // Alerts raised during the fault, and how many of them got through.
            let during: Vec<String> = produced(&agent.log_text())
                .into_iter()
                .skip(mark)
                .map(|p| p.id)
                .collect();
            let through = delivered(&sub)
                .0
                .iter()
                .filter_map(|a| a["id"].as_str())
                .filter(|id| !before.contains(*id) && during.iter().any(|d| d == id))
                .count();
            println!(
                "  {name}: {} alerts raised during the fault, {through} of them through during it",
                during.len()
            );
            if matches!(fault, LinkFault::Mode(_)) {
                assert_eq!(through, 0, "{name}: alerts crossed a dead link");
            }
            proxy.heal();
        }
        let healed = Instant::now();
        let secs = match fault {
            LinkFault::DelayLoss => Tally::settle(&agent, &sub, mark, RECOVERY_BOUND).1,
            _ => reconnected_and_drained(&agent, &sub, conns, mark, healed, name),
        };
        // A few seconds of normal running: alerts raised while it
        // reconnected count as well.
        std::thread::sleep(Duration::from_secs(3));
        let (tally, _) = Tally::settle(&agent, &sub, mark, Duration::from_secs(30));
        tally.report(name, secs);
        tally.assert_none_lost(name, &agent);
        if matches!(fault, LinkFault::DelayLoss) {
            assert_eq!(
                broker_connections(&agent),
                conns,
                "300 ms latency and 5% loss made the agent reconnect; log:\n{}",
                agent.log_text()
            );
        }
    }
    let c = proxy.counters();
    println!(
        "  proxy: {} connections, {} bytes to the broker, {} from it, {} blackholed, {} chunks held back",
        c.connections.load(Ordering::Relaxed),
        c.up.load(Ordering::Relaxed),
        c.down.load(Ordering::Relaxed),
        c.blackholed.load(Ordering::Relaxed),
        c.lost_chunks.load(Ordering::Relaxed)
    );
}

/// A camera that changes its resolution mid-stream (640x360 → 320x180 at
/// an IDR with new parameter sets, on the same RTSP session): the status
/// follows and pictures go on.
#[test]
fn resolution_change_mid_stream() {
    let big = footage();
    let small = small_footage();
    // Switch at the keyframe nearest 8 s in.
    let k = (192..big.len()).find(|&i| is_idr(&big[i])).unwrap();
    assert!(is_idr(&small[0]));
    let mut aus: Vec<Vec<u8>> = big[..k].to_vec();
    aus.extend(small.iter().cloned());
    let (port, stats) = FakeCamera {
        aus,
        loop_from: k,
        fps: 24,
        ..FakeCamera::default()
    }
    .serve();
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, &topics());
    let data = tempfile::tempdir().unwrap();
    let agent = Agent::start(&config(
        &broker,
        data.path(),
        "",
        &camera("cam", &format!("rtsp://127.0.0.1:{port}/cam/")),
    ));
    let c = wait_live(&sub, &agent, "cam");
    assert_eq!(c["resolution"], serde_json::json!([640, 360]), "{c}");
    let mark = raised(&agent);
    let t = Instant::now();
    while stats.frames.load(Ordering::Relaxed) < k {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the camera never reached the switch"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let switched = now();
    let base = frames(&cam_status(&sub, "cam"));
    let sessions = stats.sessions.load(Ordering::Relaxed);
    let (secs, c) = until(&sub, "cam", switched.at, RECOVERY_BOUND, |c| {
        c["resolution"] == serde_json::json!([320, 180]) && live_since(switched.wall, base)(c)
    })
    .unwrap_or_else(|| {
        panic!(
            "after the resolution change: {}\nlog:\n{}",
            cam_status(&sub, "cam"),
            agent.log_text()
        )
    });
    std::thread::sleep(Duration::from_secs(3));
    let (tally, _) = Tally::settle(&agent, &sub, mark, Duration::from_secs(30));
    println!(
        "  640x360 -> 320x180 at frame {k}: status {:?}, sessions {} -> {}, reconnects {}, log says {}",
        c["resolution"],
        sessions,
        stats.sessions.load(Ordering::Relaxed),
        c["reconnects"],
        agent.log_text().contains("camera resolution changed")
    );
    tally.report("resolution-change", secs);
    tally.assert_none_lost("resolution-change", &agent);
}

/// The footage with 3 s of access units damaged — a keyframe among them —
/// bytes of their slices overwritten (2% past each NAL's first bytes) and
/// every fifth cut short, as a failing encoder or a bad re-mux sends them;
/// the camera's loop starts after them. Returns the units, the damaged
/// range, the bytes overwritten and where the loop starts.
fn corrupted_footage() -> (Vec<Vec<u8>>, std::ops::Range<usize>, usize, usize) {
    use rand::{Rng, SeedableRng};
    let clean = footage();
    let from = (120..clean.len()).find(|&i| is_idr(&clean[i])).unwrap() - 12;
    let to = from + 72;
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let mut aus = clean.to_vec();
    let mut damaged_bytes = 0usize;
    for (n, au) in aus[from..to].iter_mut().enumerate() {
        let mut i = 0;
        let mut starts = Vec::new();
        while i + 3 < au.len() {
            if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
                starts.push(i + 3);
                i += 3;
            } else {
                i += 1;
            }
        }
        for (j, &s) in starts.iter().enumerate() {
            let e = starts.get(j + 1).map(|x| x - 3).unwrap_or(au.len());
            if au[s] & 0x1f != 1 && au[s] & 0x1f != 5 {
                continue;
            }
            for b in au[(s + 6).min(e)..e].iter_mut() {
                if rng.random_bool(0.02) {
                    *b = rng.random();
                    damaged_bytes += 1;
                }
            }
        }
        if n % 5 == 4 {
            au.truncate(au.len() / 2);
        }
    }
    let loop_from = (to..clean.len()).find(|&i| is_idr(&clean[i])).unwrap();
    (aus, from..to, damaged_bytes, loop_from)
}

/// An agent streaming from a camera that sends [`corrupted_footage`].
struct CorruptRun {
    stats: Arc<common::rtsp::FakeCameraStats>,
    _broker: Broker,
    sub: Subscriber,
    _data: tempfile::TempDir,
    agent: Agent,
    range: std::ops::Range<usize>,
    damaged_bytes: usize,
}

impl CorruptRun {
    fn start() -> CorruptRun {
        let (aus, range, damaged_bytes, loop_from) = corrupted_footage();
        let (port, stats) = FakeCamera {
            aus,
            loop_from,
            fps: 24,
            ..FakeCamera::default()
        }
        .serve();
        let broker = Broker::start();
        let sub = Subscriber::start(&broker, &topics());
        let data = tempfile::tempdir().unwrap();
        let agent = Agent::start(&config(
            &broker,
            data.path(),
            "",
            &camera("cam", &format!("rtsp://127.0.0.1:{port}/cam/")),
        ));
        wait_live(&sub, &agent, "cam");
        CorruptRun {
            stats,
            _broker: broker,
            sub,
            _data: data,
            agent,
            range,
            damaged_bytes,
        }
    }

    /// Waits until the camera has sent `n` access units.
    fn wait_sent(&self, n: usize) {
        let t = Instant::now();
        while self.stats.frames.load(Ordering::Relaxed) < n {
            assert!(t.elapsed() < Duration::from_secs(60), "the camera stopped");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A corrupted bitstream ([`corrupted_footage`]), then clean video again:
/// the camera keeps (or gets back to) streaming, no panic, every alert delivered.
#[test]
fn corrupted_bitstream() {
    let run = CorruptRun::start();
    let (sub, agent) = (&run.sub, &run.agent);
    let mark = raised(agent);
    run.wait_sent(run.range.start);
    let c0 = cam_status(sub, "cam");
    run.wait_sent(run.range.end);
    let ended = now();
    let c1 = cam_status(sub, "cam");
    let secs = recovered(sub, agent, "cam", ended, frames(&c1), "corrupted bitstream");
    std::thread::sleep(Duration::from_secs(3));
    let (tally, _) = Tally::settle(agent, sub, mark, Duration::from_secs(30));
    let c2 = cam_status(sub, "cam");
    let log = agent.log_text();
    let libav = log.lines().filter(|l| l.starts_with("[h264 @")).count();
    let warned = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .count();
    println!(
        "  {} access units damaged ({} bytes overwritten, every 5th cut short): {} pictures decoded while they were sent, reconnects {} -> {}, stalls {}, panics {}; the agent logged {warned} warnings, libavcodec {libav} raw lines on stderr",
        run.range.len(),
        run.damaged_bytes,
        frames(&c1) - frames(&c0),
        c0["reconnects"],
        c2["reconnects"],
        c2["stalls"],
        c2["panics"]
    );
    tally.report("corrupted-bitstream", secs);
    tally.assert_none_lost("corrupted-bitstream", agent);
    assert_eq!(c2["panics"].as_u64().unwrap_or(0), 0, "{c2}");
}

/// Whether a camera's status counts damaged input: a number above 0 under
/// a key naming it (`corrupt`, `damaged`, `decode_error`), anywhere in it.
fn counts_damage(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| {
            let named = ["corrupt", "damaged", "decode_error"]
                .iter()
                .any(|w| k.contains(w));
            (named && v.as_u64().is_some_and(|n| n > 0)) || counts_damage(v)
        }),
        Value::Array(a) => a.iter().any(counts_damage),
        _ => false,
    }
}

/// Corrupted input is counted (issue #16): after 72 damaged access units
/// the camera's status says so (`frames_corrupt` or another counter naming
/// it), and a warning of the camera's says so.
#[test]
fn corrupted_bitstream_is_counted() {
    let run = CorruptRun::start();
    run.wait_sent(run.range.end);
    let t = Instant::now();
    let c = until(&run.sub, "cam", t, Duration::from_secs(10), counts_damage);
    let c = c
        .map(|(_, c)| c)
        .unwrap_or_else(|| cam_status(&run.sub, "cam"));
    assert!(
        counts_damage(&c),
        "{} damaged access units are not counted in the camera's status: {c}",
        run.range.len()
    );
    let log = run.agent.log_text();
    assert!(
        log.lines().any(|l| l.contains(" WARN ")
            && l.contains("camera{id=cam}")
            && ["corrupt", "damaged", "decod"]
                .iter()
                .any(|w| l.contains(w))),
        "no warning of the camera's about damaged video"
    );
}

/// A Digest-auth camera (RFC 2617, MD5, qop=auth), twice: one configured
/// with its right password streams; one with a wrong password is refused,
/// shown with the camera's 401 and retried — until the camera's password
/// is changed to the one configured, when it recovers. Neither password
/// appears in the log or on MQTT.
#[test]
fn digest_auth_camera_right_and_wrong_password() {
    const RIGHT: &str = "Kx7-right-pw";
    const WRONG: &str = "Kx7-wrong-pw";
    let creds = |p: &str| Some(Arc::new(Mutex::new(("admin".to_string(), p.to_string()))));
    let right_cam = FakeCamera {
        aus: footage().to_vec(),
        fps: 24,
        digest: creds(RIGHT),
        ..FakeCamera::default()
    };
    let wrong_creds = creds(RIGHT);
    let wrong_cam = FakeCamera {
        digest: wrong_creds.clone(),
        ..right_cam.clone()
    };
    let (right_port, right_stats) = right_cam.serve();
    let (wrong_port, wrong_stats) = wrong_cam.serve();
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, &topics());
    let data = tempfile::tempdir().unwrap();
    let cameras = camera(
        "right",
        &format!("rtsp://admin:{RIGHT}@127.0.0.1:{right_port}/cam/"),
    ) + &camera(
        "wrong",
        &format!("rtsp://admin:{WRONG}@127.0.0.1:{wrong_port}/cam/"),
    );
    let agent = Agent::start(&config(&broker, data.path(), "", &cameras));
    let started = Instant::now();
    wait_live(&sub, &agent, "right");
    let right_after = started.elapsed().as_secs_f64();
    let (_, refused) = until(&sub, "wrong", started, Duration::from_secs(30), |c| {
        c["reconnects"].as_u64().unwrap_or(0) >= 2
    })
    .unwrap_or_else(|| {
        panic!(
            "the wrong password was not retried: {}",
            cam_status(&sub, "wrong")
        )
    });
    let err = refused["last_error"].as_str().unwrap_or("").to_string();
    let err_line = err.lines().next().unwrap_or("");
    assert_ne!(refused["state"], "streaming", "{refused}");
    assert_eq!(frames(&refused), 0, "{refused}");
    assert!(
        err.contains("401") || err.contains("Unauthorized"),
        "the camera's refusal is not named: {refused}"
    );
    // The installer reads what to do, in one line: not the camera's raw
    // response, never the password.
    assert!(
        err_line.contains("user name or password") && err_line.contains("password_file"),
        "a wrong password does not say what to fix: {err}"
    );
    assert_eq!(
        err.lines().count(),
        1,
        "the refusal is more than one line: {err}"
    );
    assert!(
        !err.contains(WRONG) && !err.contains(RIGHT),
        "a password in the status: {err}"
    );
    let mark = raised(&agent);
    // The camera's password is set to what the agent has.
    *wrong_creds.as_ref().unwrap().lock().unwrap() = ("admin".into(), WRONG.into());
    let fixed = now();
    let secs = recovered(&sub, &agent, "wrong", fixed, 0, "password fixed");
    std::thread::sleep(Duration::from_secs(3));
    let (tally, _) = Tally::settle(&agent, &sub, mark, Duration::from_secs(30));
    println!(
        "  right password: streaming {right_after:.1} s after start ({} requests authorized); wrong password: {} refused, shown '{}' ({})",
        right_stats.authorized.load(Ordering::Relaxed),
        wrong_stats.unauthorized.load(Ordering::Relaxed),
        refused["state"].as_str().unwrap_or("?"),
        err_line
    );
    tally.report("digest-auth-wrong-password", secs);
    tally.assert_none_lost("digest-auth-wrong-password", &agent);
    let log = agent.log_text();
    for pw in [RIGHT, WRONG] {
        assert!(!log.contains(pw), "the password {pw} is in the log");
        assert!(
            sub.all()
                .iter()
                .all(|m| !String::from_utf8_lossy(&m.payload).contains(pw)),
            "the password {pw} went out on MQTT"
        );
    }
}

/// Broker restart with persistent sessions: the agent (`clean_session =
/// false`) and the IOC's subscriber (a fixed client id, clean session off)
/// on a mosquitto with persistence, stopped (SIGTERM: it saves its
/// sessions) for 5 s and started again on the same port while alerts keep
/// being raised. Every alert arrives, once after de-duplication; the time
/// is from the broker's return until the agent has reconnected and its
/// outbox has drained.
#[test]
fn broker_restart_with_persistent_session() {
    let mut broker = Broker::start();
    let sub = Subscriber::start_on(
        broker.port,
        &topics(),
        Some(&format!("ioc-fi-persist-{}", std::process::id())),
    );
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let data = tempfile::tempdir().unwrap();
    let agent = Agent::start(&config(
        &broker,
        data.path(),
        "clean_session = false\nkeep_alive_secs = 5\n",
        &camera("cam", &sim.url("traffic")),
    ));
    wait_live(&sub, &agent, "cam");
    assert!(
        sub.wait_for(Duration::from_secs(60), |m| m.topic.ends_with("/events"))
            .is_some(),
        "no alert before the restart; log:\n{}",
        agent.log_text()
    );
    let mark = raised(&agent);
    let conns = broker_connections(&agent);
    broker.stop();
    std::thread::sleep(Duration::from_secs(5));
    let during = raised(&agent) - mark;
    broker.restart();
    let back = Instant::now();
    let secs = reconnected_and_drained(&agent, &sub, conns, mark, back, "broker restart");
    std::thread::sleep(Duration::from_secs(3));
    let (tally, _) = Tally::settle(&agent, &sub, mark, Duration::from_secs(30));
    println!(
        "  broker down 5 s: {during} alerts raised meanwhile; the agent connected {} times in all",
        broker_connections(&agent)
    );
    tally.report("broker-restart-persistent-session", secs);
    tally.assert_none_lost("broker-restart-persistent-session", &agent);
}
