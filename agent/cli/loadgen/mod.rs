//! `ioc-agent loadgen`: N simulated agents, each with the alert mix of M
//! cameras, through the real publish path (durable outbox → MQTT publisher,
//! one store and one connection per agent), and a consumer on the IOC side
//! that de-duplicates by alert id and times publish → consumer: one MQTT
//! client with a persistent session, or (`--consumer-nats`) workers sharing
//! one JetStream durable consumer on a NATS cluster. Faults on a schedule: a
//! broker node stopped and started by commands (`--node-fault`), one ward's
//! link cut (`--cut-ward-link`). Prints produced / delivered / duplicates /
//! lost, latency percentiles, each fault's recovery and the brokers' CPU and
//! memory.

mod link;
mod nats;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::publish::payload::{Alert, StatusBoard};
use crate::publish::{MqttSettings, Outgoing, TopicLayout};

#[derive(clap::Args)]
pub struct Args {
    /// Broker (or the first of a cluster), mqtt://host:port.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    url: String,
    /// More brokers for the agents' mqtt.failover_urls.
    #[arg(long = "failover-url", value_name = "URL")]
    failover_urls: Vec<String>,
    /// Agent i starts on broker i mod n (its list rotated), as a province
    /// gives its wards different first nodes; default: all start on --url.
    #[arg(long)]
    spread: bool,
    /// Where the consumer reads; default --url.
    #[arg(long, value_name = "URL")]
    consumer_url: Option<String>,
    /// Read as the IOC does on a NATS cluster: one JetStream durable
    /// consumer on the cluster's MQTT messages, shared by `--consumers`
    /// workers spread over these nodes (nats://host:port, repeat per node).
    #[arg(long = "consumer-nats", value_name = "URL")]
    consumer_nats: Vec<String>,
    /// Workers sharing the NATS consumer.
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// A broker node fault: at AT s into the run `--node-stop` runs, SECS
    /// later `--node-start` (shell commands). Format AT:SECS.
    #[arg(long, value_name = "AT:SECS")]
    node_fault: Option<String>,
    /// Shell command that stops the node, e.g. `kill -9 $(cat n1.pid)`.
    #[arg(long, value_name = "CMD")]
    node_stop: Option<String>,
    /// Shell command that starts it again, e.g.
    /// `scripts/nats-cluster.sh node DIR 1`.
    #[arg(long, value_name = "CMD")]
    node_start: Option<String>,
    /// Cut the first agent's link to every broker at AT s for SECS s
    /// (a loopback relay goes dark). Format AT:SECS.
    #[arg(long, value_name = "AT:SECS")]
    cut_ward_link: Option<String>,
    /// Simulated agents (wards), each with its own outbox and connection.
    #[arg(long, default_value_t = 10)]
    agents: usize,
    /// Cameras per agent.
    #[arg(long, default_value_t = 10)]
    cameras: usize,
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Alerts per camera per hour, all types together (see the mix in
    /// docs: Delivery, "Load").
    #[arg(long, default_value_t = 360.0)]
    alerts_per_camera_hour: f64,
    /// Bytes of each alert's thumbnail.
    #[arg(long, default_value_t = 30_000)]
    thumbnail_bytes: usize,
    /// Folder for the agents' outboxes (default: a temporary one).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The broker's process id: its CPU and memory are reported.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// A file holding a broker node's process id (repeat per node; read
    /// each second, so a restarted node is followed).
    #[arg(long = "broker-pid-file", value_name = "FILE")]
    broker_pid_files: Vec<PathBuf>,
    /// Seconds to wait, after the last alert, for everything to arrive.
    #[arg(long, default_value_t = 60.0)]
    drain_secs: f64,
    #[arg(long)]
    json: bool,
}

/// The alert mix by type, as shares of all alerts, with severities: from
/// the example configs on our footage (the junction on the traffic clip:
/// 22 red_light, 13 speeding, 11 lane_class in 30 s; public order on the
/// people clip: intrusion, crowd, loitering).
const MIX: &[(&str, &str, f64)] = &[
    ("traffic.red_light", "high", 0.40),
    ("traffic.speeding", "normal", 0.24),
    ("traffic.lane_class", "normal", 0.20),
    ("traffic.wrong_way", "high", 0.04),
    ("security.intrusion", "high", 0.10),
    ("public_order.crowd", "normal", 0.01),
    ("public_order.loitering", "low", 0.01),
];

fn alert(
    agent: &str,
    camera: &str,
    kind: &str,
    severity: &str,
    thumb: usize,
) -> Result<Alert, String> {
    let id = ulid::Ulid::new().to_string();
    let v = serde_json::json!({
        "schema": "ioc.alert/1",
        "id": id,
        "type": kind,
        "name": kind,
        "name_vi": kind,
        "agent_id": agent,
        "camera": camera,
        "rule": kind,
        "severity": severity,
        "time": crate::publish::payload::rfc3339(SystemTime::now()),
        "time_source": "agent_clock",
        "objects": [{"class": "car", "score": 0.8, "track_id": 1, "box": [0.1, 0.2, 0.3, 0.4]}],
        "frame": {"width": 1280, "height": 720},
        "thumbnail": {
            "topic": format!("ioc/v1/{agent}/events/{id}/thumbnail"),
            "content_type": "image/jpeg", "width": 640, "height": 360,
            "bytes": thumb, "sha256": "0".repeat(64)
        },
        "evidence_pending": false,
        "model": {"name": "yolox_nano", "version": "loadgen"},
        "agent_version": env!("CARGO_PKG_VERSION"),
    });
    serde_json::from_value(v).map_err(|e| format!("loadgen alert template: {e}"))
}

/// CPU seconds (user + system) and RSS bytes of a process.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((ticks / hz.max(1.0), rss_kb * 1024))
}

fn settings(url: &str, failover: &[String], agent: &str) -> MqttSettings {
    MqttSettings {
        url: url.to_string(),
        failover_urls: failover.to_vec(),
        failback_secs: 0,
        agent_id: agent.to_string(),
        client_id: format!("ioc-agent-{agent}"),
        topic_prefix: "ioc/v1".into(),
        topic_layout: TopicLayout::Flat,
        keep_alive_secs: 10,
        status_interval_secs: 30,
        stats_interval_secs: 60,
        max_packet_bytes: 4 << 20,
        clean_session: true,
        protocol: Default::default(),
        ca_file: None,
        cert_file: None,
        key_file: None,
        username: None,
        password: None,
    }
}

/// What the consumer saw, by alert id: arrival in seconds since the run's
/// start.
#[derive(Default)]
struct Seen {
    arrived: HashMap<String, f64>,
    /// The broker's order of first copies: the stream sequence (NATS), or
    /// the order of arrival (MQTT).
    order: HashMap<String, u64>,
    duplicates: u64,
    count: u64,
    /// Messages that were not an alert (not JSON, or no `id`).
    unreadable: u64,
}

impl Seen {
    fn record(&mut self, payload: &[u8], t0: Instant, seq: Option<u64>) {
        self.count += 1;
        let seq = seq.unwrap_or(self.count);
        let at = t0.elapsed().as_secs_f64();
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            self.unreadable += 1;
            return;
        };
        let Some(id) = v["id"].as_str() else {
            self.unreadable += 1;
            return;
        };
        if self.arrived.contains_key(id) {
            self.duplicates += 1;
        } else {
            self.arrived.insert(id.to_string(), at);
            self.order.insert(id.to_string(), seq);
        }
    }
}

/// An alert raised: by which agent, when (seconds since the run's start).
struct Produced {
    id: String,
    agent: usize,
    camera: usize,
    at: f64,
}

/// Alerts that reached the IOC before an alert raised earlier by the same
/// camera.
fn out_of_order(produced: &[Produced], seen: &Seen) -> u64 {
    let mut last: HashMap<(usize, usize), u64> = HashMap::new();
    let mut n = 0;
    for p in produced {
        let Some(&o) = seen.order.get(&p.id) else {
            continue;
        };
        let prev = last.entry((p.agent, p.camera)).or_insert(0);
        if o < *prev {
            n += 1;
        } else {
            *prev = o;
        }
    }
    n
}

/// `AT:SECS` → seconds.
fn window(s: &str, flag: &str) -> anyhow::Result<(f64, f64)> {
    let bad = || anyhow::anyhow!("{flag} {s}: expected AT:SECS, e.g. 20:10 (seconds)");
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let (a, b): (f64, f64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if !(a.is_finite() && b.is_finite() && a >= 0.0 && b > 0.0) {
        return Err(bad());
    }
    Ok((a, b))
}

/// The brokers' CPU seconds and RSS, followed across restarts.
#[derive(Default)]
struct BrokerUse {
    last: HashMap<u32, f64>,
    cpu_secs: f64,
    peak_rss: u64,
}

impl BrokerUse {
    fn sample(&mut self, pids: &[u32]) {
        let mut rss = 0;
        for &pid in pids {
            if let Some((cpu, r)) = proc_usage(pid) {
                let before = self.last.insert(pid, cpu);
                // A pid first seen: its CPU so far counts from the first
                // sample only.
                if let Some(b) = before {
                    self.cpu_secs += (cpu - b).max(0.0);
                }
                rss += r;
            }
        }
        self.peak_rss = self.peak_rss.max(rss);
    }
}

fn broker_pids(a: &Args) -> Vec<u32> {
    broker_pids_of(a.broker_pid, &a.broker_pid_files)
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing("warn");
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if a.agents == 0
        || a.cameras == 0
        || a.consumers == 0
        || !positive(a.seconds)
        || !positive(a.alerts_per_camera_hour)
        || !positive(a.drain_secs)
    {
        anyhow::bail!(
            "--agents, --cameras, --consumers, --seconds, --alerts-per-camera-hour and --drain-secs must be above 0"
        );
    }
    if a.node_fault.is_some() && (a.node_stop.is_none() || a.node_start.is_none()) {
        anyhow::bail!("--node-fault needs --node-stop and --node-start (shell commands)");
    }
    if let Some(f) = &a.node_fault {
        window(f, "--node-fault")?;
    }
    if let Some(f) = &a.cut_ward_link {
        window(f, "--cut-ward-link")?;
        link::host_port(&a.url).map_err(anyhow::Error::msg)?;
        for u in &a.failover_urls {
            link::host_port(u).map_err(anyhow::Error::msg)?;
        }
    }
    for u in &a.consumer_nats {
        nats::addr(u).map_err(anyhow::Error::msg)?;
    }
    // The outboxes: --data, or a folder of our own removed at the end.
    let own = std::env::temp_dir().join(format!("ioc-loadgen-{}", std::process::id()));
    let data = a.data.clone().unwrap_or_else(|| own.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(drive(&a, &data));
    if a.data.is_none() {
        let _ = std::fs::remove_dir_all(&own);
    }
    let report = report?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&a, &report);
    }
    Ok(if report["lost"] == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_table(a: &Args, report: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    println!(
        "loadgen: {} agents × {} cameras, {:.0} s at {} alerts/camera/h, thumbnails {} B",
        a.agents, a.cameras, a.seconds, a.alerts_per_camera_hour, a.thumbnail_bytes
    );
    println!(
        "produced {} / delivered {} / duplicates {} / lost {} / out of order per camera {}; publish → consumer p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {:.1} alerts/s",
        report["produced"],
        report["delivered"],
        report["duplicates"],
        report["lost"],
        report["out_of_order"],
        f(&report["latency_ms"]["p50"]),
        f(&report["latency_ms"]["p99"]),
        f(&report["latency_ms"]["max"]),
        f(&report["alerts_per_sec"]),
    );
    for x in report["faults"].as_array().into_iter().flatten() {
        println!(
            "fault {} at {:.0} s for {:.0} s: {} alerts raised in it, all in {:.1} s after it ended (max latency {:.1} s)",
            x["fault"].as_str().unwrap_or("?"),
            f(&x["at"]),
            f(&x["secs"]),
            x["alerts"],
            f(&x["caught_up_secs"]),
            f(&x["max_latency_ms"]) / 1000.0,
        );
    }
    if !report["broker"].is_null() {
        println!(
            "brokers: {:.1}% of one core, peak RSS {} MB",
            f(&report["broker"]["cpu_percent"]),
            report["broker"]["peak_rss_bytes"].as_u64().unwrap_or(0) >> 20
        );
    }
}

/// One MQTT connection to `url`, closed once the broker answers.
async fn mqtt_hello(url: &str) -> anyhow::Result<()> {
    let mut o = crate::publish::connection_options(&settings(url, &[], "loadgen-hello"))
        .map_err(anyhow::Error::msg)?;
    o.set_client_id(format!("ioc-loadgen-hello-{}", std::process::id()));
    let (client, mut el) = rumqttc::AsyncClient::new(o, 10);
    let t = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), el.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) if t.elapsed() > Duration::from_secs(30) => {
                anyhow::bail!("{url}: no MQTT broker answered in 30 s: {e}")
            }
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(300)).await,
            Err(_) => anyhow::bail!("{url}: the MQTT broker did not answer in 5 s"),
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
    Ok(())
}

/// The IOC side: records each alert id once, with its arrival.
async fn consumer(
    a: &Args,
    seen: &Arc<Mutex<Seen>>,
    t0: Instant,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    if !a.consumer_nats.is_empty() {
        // NATS makes its MQTT streams when the first MQTT client comes.
        mqtt_hello(&a.url).await?;
        // A cluster just started elects its JetStream leaders first: try
        // each node for up to 30 s.
        let t = Instant::now();
        let mut n = 0;
        while let Err(e) = nats::ensure(&a.consumer_nats[n % a.consumer_nats.len()]).await {
            if t.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("NATS: {e} (tried {} for 30 s)", a.consumer_nats.join(", "));
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut workers = Vec::new();
        for k in 0..a.consumers {
            let seen = seen.clone();
            workers.push(tokio::spawn(nats::worker(
                a.consumer_nats.clone(),
                k,
                move |p, seq| {
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(p, t0, Some(seq))
                },
            )));
        }
        return Ok(workers);
    }
    let consumer_url = a.consumer_url.clone().unwrap_or_else(|| a.url.clone());
    let mut copts =
        crate::publish::connection_options(&settings(&consumer_url, &[], "loadgen-ioc"))
            .map_err(anyhow::Error::msg)?;
    copts.set_client_id(format!("ioc-loadgen-consumer-{}", std::process::id()));
    copts.set_max_packet_size(8 << 20, 8 << 20);
    // A persistent session: what arrives while the consumer reconnects (a
    // broker restart) is kept for it.
    copts.set_clean_session(false);
    let (client, mut el) = rumqttc::AsyncClient::new(copts, 1024);
    let consumer_seen = seen.clone();
    let (subscribed, on) = tokio::sync::oneshot::channel();
    let mut subscribed = Some(subscribed);
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(c))) => {
                    if !c.session_present {
                        let _ = client
                            .subscribe("ioc/v1/+/events", rumqttc::QoS::AtLeastOnce)
                            .await;
                    } else if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => consumer_seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(&p.payload, t0, None),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    // Nothing is raised before the subscription stands.
    tokio::time::timeout(Duration::from_secs(15), on)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{consumer_url}: the consumer's subscription was not acknowledged in 15 s"
            )
        })?
        .map_err(|_| anyhow::anyhow!("{consumer_url}: the consumer stopped"))?;
    Ok(vec![task])
}

/// Starts the simulated agents: each with its own outbox (under `data`)
/// and the real publisher; their handles and join handles. The first
/// agent's brokers are reached through `relays` when given.
#[allow(clippy::type_complexity)]
fn start_agents(
    a: &Args,
    data: &std::path::Path,
    cancel: &CancellationToken,
    relays: Option<Vec<String>>,
) -> anyhow::Result<(
    Vec<(String, crate::publish::PublisherHandle)>,
    Vec<tokio::task::JoinHandle<()>>,
)> {
    let mut handles = Vec::new();
    let mut joins = Vec::new();
    for i in 0..a.agents {
        let agent = format!("loadgen-ward-{i:03}");
        let dir = data.join(&agent);
        std::fs::create_dir_all(&dir)?;
        let store = Arc::new(
            crate::store::Store::open(
                &dir,
                crate::store::Limits {
                    max_rows: 100_000,
                    max_bytes: 1 << 30,
                },
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        let status = Arc::new(StatusBoard::new(&agent));
        let mut urls: Vec<String> = match (&relays, i) {
            (Some(r), 0) => r.clone(),
            _ => std::iter::once(a.url.clone())
                .chain(a.failover_urls.iter().cloned())
                .collect(),
        };
        if a.spread {
            let n = urls.len();
            urls.rotate_left(i % n);
        }
        let s = settings(&urls[0], &urls[1..], &agent);
        let (h, j) =
            crate::publish::start(&s, status, store, cancel.clone()).map_err(anyhow::Error::msg)?;
        handles.push((agent, h));
        joins.push(j);
    }
    Ok((handles, joins))
}

/// Each camera of each agent: a task raising the mix as a Poisson
/// process for `a.seconds`; `produced` lists the alerts committed.
fn cameras(
    a: &Args,
    handles: &[(String, crate::publish::PublisherHandle)],
    produced: &Arc<Mutex<Vec<Produced>>>,
    t0: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    let rate = a.alerts_per_camera_hour / 3600.0;
    let mut gens = Vec::new();
    for (n, (agent, h)) in handles.iter().enumerate() {
        for c in 0..a.cameras {
            let (agent, h, produced) = (agent.clone(), h.clone(), produced.clone());
            let camera = format!("cam-{c:02}");
            let (secs, thumb) = (a.seconds, a.thumbnail_bytes);
            gens.push(tokio::spawn(async move {
                use rand::Rng;
                loop {
                    // Poisson arrivals: exponential gaps.
                    let gap = {
                        let mut r = rand::rng();
                        -(1.0 - r.random::<f64>()).ln() / rate
                    };
                    let left = secs - t0.elapsed().as_secs_f64();
                    if gap >= left {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs_f64(gap)).await;
                    let (kind, sev) = {
                        let mut r = rand::rng();
                        let mut x = r.random::<f64>();
                        MIX.iter()
                            .find(|(_, _, p)| {
                                x -= p;
                                x <= 0.0
                            })
                            .map(|(k, s, _)| (*k, *s))
                            .unwrap_or(("traffic.red_light", "high"))
                    };
                    let thumbnail: Vec<u8> = {
                        let mut r = rand::rng();
                        (0..thumb).map(|_| r.random()).collect()
                    };
                    let alert = match alert(&agent, &camera, kind, sev, thumb) {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::error!("{e}");
                            break;
                        }
                    };
                    let id = alert.id.clone();
                    let at = t0.elapsed().as_secs_f64();
                    let ok = h
                        .send(Outgoing {
                            alert,
                            thumbnail: Some(thumbnail),
                        })
                        .await;
                    if ok {
                        produced
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Produced {
                                id,
                                agent: n,
                                camera: c,
                                at,
                            });
                    }
                }
            }));
        }
    }
    gens
}

/// Runs the faults on their schedule (each a task).
fn faults(a: &Args, relay: Option<Arc<link::Link>>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let (Some(f), Some(stop), Some(start)) = (&a.node_fault, &a.node_stop, &a.node_start)
        && let Ok((at, secs)) = window(f, "--node-fault")
    {
        let (stop, start) = (stop.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(at)).await;
            shell(&stop).await;
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            shell(&start).await;
        }));
    }
    if let (Some(f), Some(l)) = (&a.cut_ward_link, relay)
        && let Ok((at, secs)) = window(f, "--cut-ward-link")
    {
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(at)).await;
            l.cut();
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            l.heal();
        }));
    }
    tasks
}

async fn shell(cmd: &str) {
    let c = cmd.to_string();
    let r = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh").args(["-c", &c]).status()
    })
    .await;
    match r {
        Ok(Ok(s)) if s.success() => {}
        Ok(Ok(s)) => tracing::error!("fault command {cmd:?} exited with {s}"),
        Ok(Err(e)) => tracing::error!("fault command {cmd:?}: {e}"),
        Err(e) => tracing::error!("fault command {cmd:?}: {e}"),
    }
}

/// Each fault: the alerts its victims raised while it lasted (for a node
/// stop, the first 5 s: the agents move to another node), the worst
/// latency among them, and how long after the fault's end the last of them
/// arrived.
fn fault_report(a: &Args, produced: &[Produced], seen: &Seen) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut one = |name: &str, at: f64, secs: f64, end: f64, only: Option<usize>| {
        let hit: Vec<&Produced> = produced
            .iter()
            .filter(|p| p.at >= at && p.at <= end && only.is_none_or(|o| p.agent == o))
            .collect();
        let arrivals: Vec<(f64, Option<f64>)> = hit
            .iter()
            .map(|p| (p.at, seen.arrived.get(&p.id).copied()))
            .collect();
        let last = arrivals.iter().filter_map(|x| x.1).fold(end, f64::max);
        let max_latency = arrivals
            .iter()
            .filter_map(|(p, s)| s.map(|s| s - p))
            .fold(0.0, f64::max);
        out.push(serde_json::json!({
            "fault": name,
            "at": at,
            "secs": secs,
            "alerts": hit.len(),
            "lost": arrivals.iter().filter(|x| x.1.is_none()).count(),
            "max_latency_ms": max_latency * 1000.0,
            "caught_up_secs": last - end,
        }));
    };
    if let Some(Ok((at, secs))) = a.node_fault.as_deref().map(|f| window(f, "")) {
        one("node_stopped", at, secs, at + 5.0, None);
    }
    if let Some(Ok((at, secs))) = a.cut_ward_link.as_deref().map(|f| window(f, "")) {
        one("ward_link_cut", at, secs, at + secs, Some(0));
    }
    out
}

async fn drive(a: &Args, data: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let t0 = Instant::now();
    let consumers = consumer(a, &seen, t0).await?;
    let cancel = CancellationToken::new();
    let (relay, relays) = if a.cut_ward_link.is_some() {
        let l = Arc::new(link::Link::default());
        let mut urls = Vec::new();
        for u in std::iter::once(&a.url).chain(&a.failover_urls) {
            let up = link::host_port(u).map_err(anyhow::Error::msg)?;
            urls.push(link::relay(l.clone(), up).await?);
        }
        (Some(l), Some(urls))
    } else {
        (None, None)
    };
    let (handles, joins) = start_agents(a, data, &cancel, relays)?;
    let usage = Arc::new(Mutex::new(BrokerUse::default()));
    let sampler = {
        let (usage, pids) = (usage.clone(), a.broker_pid_files.clone());
        let fixed = a.broker_pid;
        tokio::spawn(async move {
            loop {
                let a_pids = broker_pids_of(fixed, &pids);
                usage
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .sample(&a_pids);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let t_run = Instant::now();
    let produced = Arc::new(Mutex::new(Vec::new()));
    let fault_tasks = faults(a, relay);
    let gens = cameras(a, &handles, &produced, t0);
    for g in gens {
        let _ = g.await;
    }
    let run_secs = t_run.elapsed().as_secs_f64();
    let drained = Instant::now();
    while drained.elapsed().as_secs_f64() < a.drain_secs {
        // Count ours only: other agents may publish on the same broker.
        let all_in = {
            let p = produced.lock().unwrap_or_else(|p| p.into_inner());
            let s = seen.lock().unwrap_or_else(|p| p.into_inner());
            p.iter().all(|x| s.arrived.contains_key(&x.id))
        };
        if all_in {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    usage
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .sample(&broker_pids(a));
    sampler.abort();
    for f in fault_tasks {
        // A fault still pending (a run shorter than its schedule) is not
        // carried out.
        f.abort();
    }
    cancel.cancel();
    for j in joins {
        let _ = tokio::time::timeout(Duration::from_secs(5), j).await;
    }
    for c in consumers {
        c.abort();
    }
    let consumer_state = if a.consumer_nats.is_empty() {
        serde_json::Value::Null
    } else {
        nats::state(&a.consumer_nats).await
    };
    let s = seen.lock().unwrap_or_else(|p| p.into_inner());
    let produced = produced.lock().unwrap_or_else(|p| p.into_inner());
    let mut lat: Vec<f64> = produced
        .iter()
        .filter_map(|p| s.arrived.get(&p.id).map(|t| (t - p.at) * 1000.0))
        .collect();
    lat.sort_by(|x, y| x.total_cmp(y));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    let delivered = produced
        .iter()
        .filter(|p| s.arrived.contains_key(&p.id))
        .count();
    let lost_at: Vec<f64> = produced
        .iter()
        .filter(|p| !s.arrived.contains_key(&p.id))
        .map(|p| p.at)
        .take(20)
        .collect();
    let lost_ids: Vec<String> = produced
        .iter()
        .filter(|p| !s.arrived.contains_key(&p.id))
        .map(|p| format!("{} loadgen-ward-{:03}/cam-{:02}", p.id, p.agent, p.camera))
        .take(20)
        .collect();
    let u = usage.lock().unwrap_or_else(|p| p.into_inner());
    let broker = if u.last.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::json!({
            "cpu_percent": 100.0 * u.cpu_secs / run_secs.max(0.001),
            "peak_rss_bytes": u.peak_rss,
            "rss_bytes": u.peak_rss,
        })
    };
    Ok(serde_json::json!({
        "agents": a.agents,
        "cameras": a.agents * a.cameras,
        "seconds": run_secs,
        "alerts_per_camera_hour": a.alerts_per_camera_hour,
        "thumbnail_bytes": a.thumbnail_bytes,
        "consumer": if a.consumer_nats.is_empty() { "mqtt" } else { "nats_jetstream" },
        "consumers": if a.consumer_nats.is_empty() { 1 } else { a.consumers },
        "produced": produced.len(),
        "delivered": delivered,
        "duplicates": s.duplicates,
        "lost": produced.len() - delivered,
        "out_of_order": out_of_order(&produced, &s),
        "lost_at_secs": lost_at,
        "lost_ids": lost_ids,
        "alerts_per_sec": produced.len() as f64 / run_secs.max(0.001),
        "latency_ms": {"p50": pct(0.50), "p99": pct(0.99), "max": lat.last().copied().unwrap_or(0.0)},
        "faults": fault_report(a, &produced, &s),
        "broker": broker,
        "consumer_state": consumer_state,
        "unreadable": s.unreadable,
    }))
}

fn broker_pids_of(fixed: Option<u32>, files: &[PathBuf]) -> Vec<u32> {
    let mut v: Vec<u32> = fixed.into_iter().collect();
    for f in files {
        if let Some(p) = std::fs::read_to_string(f)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            v.push(p);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alert_template_is_an_alert_of_each_type_of_the_mix() {
        for (kind, sev, _) in MIX {
            let a = alert("w", "c", kind, sev, 100).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(a.kind, *kind);
        }
        let total: f64 = MIX.iter().map(|m| m.2).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
    }
}
