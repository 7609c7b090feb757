//! `ioc-agent loadgen`: N simulated agents, each with the alert mix of M
//! cameras, through the real publish path (durable outbox → MQTT publisher,
//! one store and one connection per agent), and a consumer on the IOC side
//! that de-duplicates by alert id and times publish → consumer. Prints
//! produced / delivered / duplicates / lost and latency percentiles; with
//! `--broker-pid`, the broker's CPU and memory.

use std::collections::HashSet;
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
    /// Where the consumer reads; default --url.
    #[arg(long, value_name = "URL")]
    consumer_url: Option<String>,
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

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    duplicates: u64,
    latency_ms: Vec<f64>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing("warn");
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if a.agents == 0
        || a.cameras == 0
        || !positive(a.seconds)
        || !positive(a.alerts_per_camera_hour)
        || !positive(a.drain_secs)
    {
        anyhow::bail!(
            "--agents, --cameras, --seconds, --alerts-per-camera-hour and --drain-secs must be above 0"
        );
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
        println!(
            "loadgen: {} agents × {} cameras, {:.0} s at {} alerts/camera/h, thumbnails {} B",
            a.agents, a.cameras, a.seconds, a.alerts_per_camera_hour, a.thumbnail_bytes
        );
        println!(
            "produced {} / delivered {} / duplicates {} / lost {}; publish → consumer p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {:.1} alerts/s",
            report["produced"],
            report["delivered"],
            report["duplicates"],
            report["lost"],
            report["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
            report["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
            report["latency_ms"]["max"].as_f64().unwrap_or(0.0),
            report["alerts_per_sec"].as_f64().unwrap_or(0.0),
        );
        if !report["broker"].is_null() {
            println!(
                "broker: {:.1}% of one core, RSS {} MB at the end",
                report["broker"]["cpu_percent"].as_f64().unwrap_or(0.0),
                report["broker"]["rss_bytes"].as_u64().unwrap_or(0) >> 20
            );
        }
    }
    Ok(if report["lost"] == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The IOC side: subscribes to every agent's alerts and records each id
/// once, with its publish → arrival time, in `seen`.
async fn consumer(
    a: &Args,
    seen: &Arc<Mutex<Seen>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // The IOC's consumer.
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
    let consumer = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(c))) => {
                    if !c.session_present {
                        let _ = client
                            .subscribe("ioc/v1/+/events", rumqttc::QoS::AtLeastOnce)
                            .await;
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let now = chrono::Utc::now();
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                        continue;
                    };
                    let (Some(id), Some(t)) = (v["id"].as_str(), v["time"].as_str()) else {
                        continue;
                    };
                    let ms = chrono::DateTime::parse_from_rfc3339(t)
                        .map(|t| {
                            (now - t.with_timezone(&chrono::Utc))
                                .num_microseconds()
                                .unwrap_or(0) as f64
                                / 1000.0
                        })
                        .unwrap_or(0.0);
                    let mut s = consumer_seen.lock().unwrap_or_else(|p| p.into_inner());
                    if s.ids.insert(id.to_string()) {
                        s.latency_ms.push(ms);
                    } else {
                        s.duplicates += 1;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    Ok(consumer)
}

/// Starts the simulated agents: each with its own outbox (under `data`)
/// and the real publisher; their handles and join handles.
#[allow(clippy::type_complexity)]
fn start_agents(
    a: &Args,
    data: &std::path::Path,
    cancel: &CancellationToken,
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
        let (h, j) = crate::publish::start(
            &settings(&a.url, &a.failover_urls, &agent),
            status,
            store,
            cancel.clone(),
        )
        .map_err(anyhow::Error::msg)?;
        handles.push((agent, h));
        joins.push(j);
    }
    Ok((handles, joins))
}

/// Each camera of each agent: a task raising the mix as a Poisson
/// process for `a.seconds`; `produced` counts the alerts committed.
fn cameras(
    a: &Args,
    handles: &[(String, crate::publish::PublisherHandle)],
    produced: &Arc<std::sync::atomic::AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let rate = a.alerts_per_camera_hour / 3600.0;
    let mut gens = Vec::new();
    for (agent, h) in handles {
        for c in 0..a.cameras {
            let (agent, h, produced) = (agent.clone(), h.clone(), produced.clone());
            let camera = format!("cam-{c:02}");
            let (secs, thumb) = (a.seconds, a.thumbnail_bytes);
            gens.push(tokio::spawn(async move {
                use rand::Rng;
                let start = Instant::now();
                loop {
                    // Poisson arrivals: exponential gaps.
                    let gap = {
                        let mut r = rand::rng();
                        -(1.0 - r.random::<f64>()).ln() / rate
                    };
                    let left = secs - start.elapsed().as_secs_f64();
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
                    let ok = h
                        .send(Outgoing {
                            alert,
                            thumbnail: Some(thumbnail),
                        })
                        .await;
                    if ok {
                        produced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    gens
}

async fn drive(a: &Args, data: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let consumer = consumer(a, &seen).await?;
    // Let the subscription land before the first alert.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cancel = CancellationToken::new();
    let (handles, joins) = start_agents(a, data, &cancel)?;
    let broker0 = a.broker_pid.and_then(proc_usage);
    let t0 = Instant::now();
    let produced = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let gens = cameras(a, &handles, &produced);
    for g in gens {
        let _ = g.await;
    }
    let run_secs = t0.elapsed().as_secs_f64();
    let produced = produced.load(std::sync::atomic::Ordering::Relaxed);
    let drained = Instant::now();
    while drained.elapsed().as_secs_f64() < a.drain_secs {
        if seen.lock().unwrap_or_else(|p| p.into_inner()).ids.len() as u64 >= produced {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let broker1 = a.broker_pid.and_then(proc_usage);
    cancel.cancel();
    for j in joins {
        let _ = tokio::time::timeout(Duration::from_secs(5), j).await;
    }
    consumer.abort();
    let s = seen.lock().unwrap_or_else(|p| p.into_inner());
    let mut lat = s.latency_ms.clone();
    lat.sort_by(|x, y| x.total_cmp(y));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    let delivered = s.ids.len() as u64;
    let broker = match (broker0, broker1) {
        (Some((c0, _)), Some((c1, rss))) => serde_json::json!({
            "cpu_percent": 100.0 * (c1 - c0) / run_secs.max(0.001),
            "rss_bytes": rss,
        }),
        _ => serde_json::Value::Null,
    };
    Ok(serde_json::json!({
        "agents": a.agents,
        "cameras": a.agents * a.cameras,
        "seconds": run_secs,
        "alerts_per_camera_hour": a.alerts_per_camera_hour,
        "thumbnail_bytes": a.thumbnail_bytes,
        "produced": produced,
        "delivered": delivered,
        "duplicates": s.duplicates,
        "lost": produced.saturating_sub(delivered),
        "alerts_per_sec": produced as f64 / run_secs.max(0.001),
        "latency_ms": {"p50": pct(0.50), "p99": pct(0.99), "max": lat.last().copied().unwrap_or(0.0)},
        "broker": broker,
    }))
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
