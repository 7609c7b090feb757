//! MQTT publishing per the contract in README (`MQTT contract`):
//! `{prefix}/{agent_id}/events` (JSON alert, QoS 1),
//! `{prefix}/{agent_id}/events/{id}/thumbnail` (JPEG, QoS 1) and the retained
//! `{prefix}/{agent_id}/status`, set offline by the Last Will.

pub mod payload;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::source::Backoff;
pub use payload::{Alert, StatusBoard};

/// A broker address from `mqtt://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
}

impl BrokerAddress {
    pub fn parse(s: &str) -> Result<BrokerAddress, String> {
        let url = url::Url::parse(s)
            .map_err(|e| format!("invalid MQTT URL '{s}' ({e}); write it as mqtt://host:port"))?;
        match url.scheme() {
            "mqtt" | "tcp" => {}
            "mqtts" | "ssl" => {
                return Err("mqtts:// (TLS) is not supported by this version yet; use mqtt://host:port over a trusted network or a local bridge".into());
            }
            other => {
                return Err(format!(
                    "MQTT URL must start with mqtt://, got '{other}://'"
                ));
            }
        }
        if !url.username().is_empty() {
            return Err(
                "put MQTT credentials in [mqtt] username and password_file (or password_env), not in the URL".into(),
            );
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| "MQTT URL has no host; write it as mqtt://host:port".to_string())?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        Ok(BrokerAddress {
            host,
            port: url.port().unwrap_or(1883),
        })
    }
}

/// Topic names for one agent.
#[derive(Debug, Clone)]
pub struct Topics {
    pub base: String,
}

impl Topics {
    pub fn new(prefix: &str, agent_id: &str) -> Topics {
        Topics {
            base: format!("{prefix}/{agent_id}"),
        }
    }
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }
    pub fn events(&self) -> String {
        format!("{}/events", self.base)
    }
    pub fn thumbnail(&self, event_id: &str) -> String {
        format!("{}/events/{event_id}/thumbnail", self.base)
    }
}

/// An alert ready to go, with its thumbnail bytes.
#[derive(Debug)]
pub struct Outgoing {
    pub alert: Alert,
    pub thumbnail: Option<Vec<u8>>,
}

/// Counters of the publisher.
#[derive(Debug, Default)]
pub struct PublishCounters {
    pub queued: AtomicU64,
    pub published: AtomicU64,
    /// Alerts dropped because the queue to the broker was full.
    pub dropped: AtomicU64,
    pub acked: AtomicU64,
    pub reconnects: AtomicU64,
}

/// Cheap handle for cameras: hands alerts to the publisher without waiting.
#[derive(Clone)]
pub struct PublisherHandle {
    tx: mpsc::Sender<Outgoing>,
    pub counters: Arc<PublishCounters>,
    pub topics: Topics,
}

impl PublisherHandle {
    /// Queues an alert; when the queue is full the alert is dropped and counted
    /// (policy: the camera never blocks on the network).
    pub fn send(&self, out: Outgoing) -> bool {
        match self.tx.try_send(out) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let id = match &e {
                    mpsc::error::TrySendError::Full(o) | mpsc::error::TrySendError::Closed(o) => {
                        o.alert.id.clone()
                    }
                };
                tracing::warn!(event_id = %id, dropped_total = n, "alert queue to the broker is full; alert dropped");
                false
            }
        }
    }
}

/// Starts the MQTT client and the publishing task. The returned join handle
/// ends after `cancel` fires and the offline status has been sent.
pub fn start(
    cfg: &Config,
    status: Arc<StatusBoard>,
    cancel: CancellationToken,
) -> (PublisherHandle, tokio::task::JoinHandle<()>) {
    let addr = BrokerAddress::parse(cfg.mqtt.url.get_ref()).unwrap_or(BrokerAddress {
        host: "127.0.0.1".into(),
        port: 1883,
    });
    let topics = Topics::new(&cfg.mqtt.topic_prefix, cfg.agent_id.get_ref());
    let mut opts = MqttOptions::new(cfg.client_id(), addr.host.clone(), addr.port);
    opts.set_keep_alive(Duration::from_secs(cfg.mqtt.keep_alive_secs.max(5)));
    opts.set_max_packet_size(cfg.mqtt.max_packet_bytes, cfg.mqtt.max_packet_bytes);
    if let Some(user) = &cfg.mqtt.username {
        match cfg.mqtt_password() {
            Ok(p) => {
                opts.set_credentials(user.clone(), p.map(|s| s.0).unwrap_or_default());
            }
            Err(e) => {
                tracing::error!(error = %e, "MQTT password unavailable; connecting without it")
            }
        }
    }
    opts.set_last_will(LastWill::new(
        topics.status(),
        status.offline_json("connection lost"),
        QoS::AtLeastOnce,
        true,
    ));
    let queue = cfg.mqtt.queue_len.max(1);
    let (client, mut eventloop) = AsyncClient::new(opts, queue);
    let (tx, mut rx) = mpsc::channel::<Outgoing>(queue);
    let counters = status.counters.clone();
    let handle = PublisherHandle {
        tx,
        counters: counters.clone(),
        topics: topics.clone(),
    };
    let status_every = Duration::from_secs(cfg.mqtt.status_interval_secs.max(1));
    let broker = format!("{}:{}", addr.host, addr.port);

    // Drives the connection: reconnects with jittered backoff, re-announces
    // the online status after every (re)connect.
    let conn_cancel = cancel.clone();
    let conn_client = client.clone();
    let conn_status = status.clone();
    let conn_topics = topics.clone();
    let conn_counters = counters.clone();
    let conn = tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut connected = false;
        loop {
            let ev = tokio::select! {
                _ = conn_cancel.cancelled() => break,
                ev = eventloop.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    if !connected {
                        tracing::info!(broker = %broker, "connected to MQTT broker");
                    }
                    connected = true;
                    let _ = conn_client.try_publish(
                        conn_topics.status(),
                        QoS::AtLeastOnce,
                        true,
                        conn_status.online_json(),
                    );
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    conn_counters.acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        conn_counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    connected = false;
                    let d = backoff.next_delay();
                    tracing::warn!(broker = %broker, error = %e, retry_in_ms = d.as_millis() as u64, "MQTT connection failed");
                    tokio::select! {
                        _ = conn_cancel.cancelled() => break,
                        _ = tokio::time::sleep(d) => {}
                    }
                }
            }
        }
        // Let the final offline status and disconnect go out.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(ev) = eventloop.poll().await {
                if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = ev {
                    break;
                }
            }
        })
        .await;
    });

    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(status_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {
                    let _ = client.try_publish(topics.status(), QoS::AtLeastOnce, true, status.online_json());
                }
                Some(out) = rx.recv() => {
                    let json = match serde_json::to_vec(&out.alert) {
                        Ok(j) => j,
                        Err(e) => { tracing::error!(error = %e, "cannot serialise alert"); continue; }
                    };
                    if client.publish(topics.events(), QoS::AtLeastOnce, false, json).await.is_err() {
                        break;
                    }
                    if let Some(jpeg) = out.thumbnail
                        && client.publish(topics.thumbnail(&out.alert.id), QoS::AtLeastOnce, false, jpeg).await.is_err()
                    {
                        break;
                    }
                    counters.published.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let _ = client.try_publish(
            topics.status(),
            QoS::AtLeastOnce,
            true,
            status.offline_json("shutdown"),
        );
        let _ = client.try_disconnect();
        let _ = conn.await;
    });
    (handle, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            BrokerAddress::parse("mqtt://10.1.2.3:1884").unwrap(),
            BrokerAddress {
                host: "10.1.2.3".into(),
                port: 1884
            }
        );
        assert_eq!(BrokerAddress::parse("mqtt://broker").unwrap().port, 1883);
        assert!(
            BrokerAddress::parse("http://x")
                .unwrap_err()
                .contains("mqtt://")
        );
        assert!(BrokerAddress::parse("mqtt://u:p@x").is_err());
    }

    #[test]
    fn topics_follow_the_contract() {
        let t = Topics::new("ioc/v1", "ward-7");
        assert_eq!(t.events(), "ioc/v1/ward-7/events");
        assert_eq!(t.status(), "ioc/v1/ward-7/status");
        assert_eq!(t.thumbnail("01ABC"), "ioc/v1/ward-7/events/01ABC/thumbnail");
    }
}
