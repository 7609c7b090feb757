//! Traffic-signal states published by traffic controllers on the agent's
//! broker (`[cameras.signal] source = "mqtt"`): one subscriber for all
//! cameras, latest state per topic.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio_util::sync::CancellationToken;

use crate::base::backoff::Backoff;
use crate::rules::Light;

pub use crate::rules::signal::SignalBoard;

/// Subscribes to every camera's signal topic; `None` when no camera uses one.
pub fn spawn(
    m: &super::MqttSettings,
    topics: Vec<String>,
    cancel: CancellationToken,
) -> Result<Option<Arc<SignalBoard>>, String> {
    if topics.is_empty() {
        return Ok(None);
    }
    let mut opts = super::connection_options(m)?;
    opts.set_client_id(format!("{}-signals", m.client_id));
    opts.set_clean_session(true);
    let board = Arc::new(SignalBoard::default());
    let b = board.clone();
    tokio::spawn(async move {
        let (client, mut el) = AsyncClient::new(opts, 16);
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return,
                ev = el.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    for t in &topics {
                        let _ = client.try_subscribe(t.clone(), QoS::AtLeastOnce);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => match Light::parse(&p.payload) {
                    Some(l) => b.set(&p.topic, l),
                    None => {
                        tracing::warn!(topic = %p.topic, "signal message is not red/yellow/green; ignored")
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    let d = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "signal subscriber lost the broker; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(d) => {}
                    }
                }
            }
        }
    });
    Ok(Some(board))
}
