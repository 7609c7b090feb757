//! Outbox throughput, side by side in one run:
//! 1. commit: alerts/s written to the SQLite outbox (WAL, synchronous=FULL),
//!    alert JSON ~1 KB + thumbnail ~25 KB each;
//! 2. acknowledged: alerts/s drained through the real publisher to a real
//!    mosquitto (each alert deleted only after both PUBACKs);
//! 3. baseline: the same packets published QoS 1 by a bare rumqttc client
//!    with no outbox, until all are acknowledged.
//!
//! Per-alert overhead = (outbox drain time − baseline time) / alerts.
//! Run: `cargo bench --bench outbox` (needs mosquitto on PATH).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench may panic on its own setup

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ioc_agent::config::Config;
use ioc_agent::publish::StatusBoard;
use ioc_agent::store::{Limits, NewRow, Severity, Store};
use tokio_util::sync::CancellationToken;

const N: usize = 2000;

fn row(i: usize) -> NewRow {
    NewRow {
        camera: "cam1".into(),
        event_id: format!("{i:026}"),
        severity: Severity::Normal,
        topic: "ioc/v1/bench/events".into(),
        payload: vec![b'{'; 1024],
        thumb_topic: Some(format!("ioc/v1/bench/events/{i}/thumbnail")),
        thumb: Some(vec![0xAB; 25 * 1024]),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_mosquitto(dir: &Path) -> (std::process::Child, u16) {
    let port = free_port();
    let conf = dir.join("m.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\nmax_queued_messages 0\n")).unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_rows: 1_000_000,
        max_bytes: 1 << 40,
    };

    // 1. Commit throughput.
    let store = Arc::new(Store::open(dir.path(), limits).unwrap());
    let t = Instant::now();
    for i in 0..N {
        store.enqueue(&row(i)).unwrap();
    }
    let commit = t.elapsed();

    let (mut broker, port) = start_mosquitto(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // 2. Drain through the publisher until every row is acknowledged and deleted.
    let cfg_text = format!(
        "agent_id = \"bench\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nstatus_interval_secs = 3600\nstats_interval_secs = 3600\n"
    );
    let cfg = Config::parse(&cfg_text, Path::new("bench.toml"), dir.path()).unwrap();
    let drain = rt.block_on(async {
        let status = Arc::new(StatusBoard::new("bench"));
        let cancel = CancellationToken::new();
        let t = Instant::now();
        let (_h, task) = ioc_agent::publish::start(
            &cfg.mqtt_settings().unwrap(),
            status,
            store.clone(),
            cancel.clone(),
        )
        .unwrap();
        loop {
            if store.depth().unwrap().0 == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let d = t.elapsed();
        cancel.cancel();
        let _ = task.await;
        d
    });

    // 3. Baseline: bare QoS 1 publishes of the same packets, until all PUBACKs.
    let baseline = rt.block_on(async {
        let mut opts = rumqttc::MqttOptions::new("bench-bare", "127.0.0.1", port);
        opts.set_max_packet_size(1 << 22, 1 << 22);
        opts.set_inflight(72);
        let (client, mut el) = rumqttc::AsyncClient::new(opts, 64);
        let t = Instant::now();
        let pubs = tokio::spawn(async move {
            for i in 0..N {
                let r = row(i);
                client
                    .publish(r.topic, rumqttc::QoS::AtLeastOnce, false, r.payload)
                    .await
                    .unwrap();
                client
                    .publish(
                        r.thumb_topic.unwrap(),
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        r.thumb.unwrap(),
                    )
                    .await
                    .unwrap();
            }
            client
        });
        let mut acks = 0;
        while acks < 2 * N {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = el.poll().await {
                acks += 1;
            }
        }
        let _ = pubs.await;
        t.elapsed()
    });
    let _ = broker.kill();

    let per_s = |d: Duration| N as f64 / d.as_secs_f64();
    println!("outbox bench: {N} alerts of 1 KB JSON + 25 KB JPEG, loopback mosquitto");
    println!("{:<44} {:>10} {:>12}", "stage", "seconds", "alerts/s");
    println!(
        "{:<44} {:>10.3} {:>12.0}",
        "commit to outbox (WAL, synchronous=FULL)",
        commit.as_secs_f64(),
        per_s(commit)
    );
    println!(
        "{:<44} {:>10.3} {:>12.0}",
        "outbox drain, acked + deleted (publisher)",
        drain.as_secs_f64(),
        per_s(drain)
    );
    println!(
        "{:<44} {:>10.3} {:>12.0}",
        "baseline: bare rumqttc QoS 1, all acked",
        baseline.as_secs_f64(),
        per_s(baseline)
    );
    println!(
        "per-alert overhead: commit {:.3} ms, drain vs baseline {:+.3} ms; drain/baseline time ratio {:.2}",
        commit.as_secs_f64() * 1e3 / N as f64,
        (drain.as_secs_f64() - baseline.as_secs_f64()) * 1e3 / N as f64,
        drain.as_secs_f64() / baseline.as_secs_f64()
    );
}
