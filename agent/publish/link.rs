//! One broker connection for the publisher, over MQTT 5 or 3.1.1.
//!
//! MQTT 5 is what lets the agent see a publish the broker refuses: its
//! PUBACK carries a reason code (e.g. 0x87 not authorized, when the broker's
//! ACL does not let this agent publish there), where a 3.1.1 broker
//! acknowledges the publish and drops it. `mqtt.protocol = "auto"` (the
//! default) speaks 5 and falls back to 3.1.1 for a broker that does not.
//! Both sides share the address, TLS and login settings of
//! [`super::connection_options`].

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode as V5Code, PubAckReason};

use super::{MqttSettings, StatusBoard, Topics};

/// `mqtt.protocol`: which MQTT version the publisher speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum Protocol {
    /// MQTT 5, or 3.1.1 when the broker does not speak 5 (default).
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// MQTT 5 only.
    #[serde(rename = "5")]
    V5,
    /// MQTT 3.1.1 only (a refused publish is not seen).
    #[serde(rename = "3.1.1")]
    V311,
}

/// The version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V5,
    V311,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V5 => "5",
            Version::V311 => "3.1.1",
        }
    }
}

/// A publish the broker acknowledged with a failure reason (MQTT 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u8,
    /// The reason in words, with what to do about it.
    pub text: String,
    /// Not authorized: the broker's ACL; it concerns every message on the
    /// topic, so the message waits in the outbox for the ACL to be fixed.
    pub not_authorized: bool,
}

impl Refusal {
    fn of(r: &PubAckReason, topic: &str) -> Option<Refusal> {
        let (code, text) = match r {
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => return None,
            PubAckReason::UnspecifiedError => (0x80, "unspecified error".to_string()),
            PubAckReason::ImplementationSpecificError => (
                0x83,
                "implementation specific error (often a size or plugin limit of the broker)"
                    .to_string(),
            ),
            PubAckReason::NotAuthorized => (
                0x87,
                format!(
                    "not authorized — the broker's ACL does not let this agent publish on {topic}; fix the ACL (docs: Ward broker); the messages wait in the outbox"
                ),
            ),
            PubAckReason::TopicNameInvalid => (0x90, format!("topic name {topic} invalid")),
            PubAckReason::PacketIdentifierInUse => (0x91, "packet identifier in use".into()),
            PubAckReason::QuotaExceeded => (0x97, "quota exceeded".into()),
            PubAckReason::PayloadFormatInvalid => (0x99, "payload format invalid".into()),
        };
        Some(Refusal {
            code,
            not_authorized: code == 0x87,
            text: format!("the broker refused the message (0x{code:02x}): {text}"),
        })
    }
}

/// What happened on the connection.
#[derive(Debug)]
pub enum LinkEvent {
    /// Connected; the broker's maximum packet size when it states one (MQTT 5).
    ConnAck {
        max_packet: Option<u32>,
    },
    /// A publish left, with its packet id (0 for QoS 0), in the order queued.
    Sent(u16),
    /// A QoS 1 publish was acknowledged; `refused` when with a failure reason.
    Acked {
        pkid: u16,
        refused: Option<Refusal>,
    },
    /// Our DISCONNECT left.
    DisconnectSent,
    /// A message on a topic we subscribed to.
    Message {
        topic: String,
        payload: Vec<u8>,
    },
    Other,
}

/// Why the connection ended.
#[derive(Debug)]
pub enum LinkError {
    V4(rumqttc::ConnectionError),
    V5(rumqttc::v5::ConnectionError),
}

impl LinkError {
    /// Lost to silence (no ping answer, a timeout) rather than closed by the
    /// broker: it says nothing about the message in flight.
    pub fn is_timeout(&self) -> bool {
        match self {
            LinkError::V4(e) => super::is_timeout(e),
            LinkError::V5(e) => {
                use rumqttc::v5::{ConnectionError as E, StateError as S};
                match e {
                    E::Timeout(_) => true,
                    E::MqttState(S::AwaitPingResp) => true,
                    E::Io(io) => io.kind() == std::io::ErrorKind::TimedOut,
                    E::MqttState(S::Io(io)) => io.kind() == std::io::ErrorKind::TimedOut,
                    _ => false,
                }
            }
        }
    }

    /// What a broker that does not speak MQTT 5 does with a version 5
    /// CONNECT: answers "unsupported protocol version", or with something
    /// that is not an MQTT 5 CONNACK, or closes it unanswered (NATS). A
    /// broker going down can look the same, so the publisher tries 3.1.1 at
    /// once and keeps it only if that connects.
    pub fn v5_unsupported(&self) -> bool {
        use rumqttc::v5::{ConnectionError as E, StateError as S};
        match self {
            LinkError::V4(_) => false,
            LinkError::V5(e) => match e {
                E::ConnectionRefused(
                    V5Code::UnsupportedProtocolVersion | V5Code::RefusedProtocolVersion,
                ) => true,
                E::ConnectionRefused(_) => false,
                E::NotConnAck(_) => true,
                E::MqttState(S::Deserialization(_)) => true,
                E::MqttState(S::ConnFail { reason }) => matches!(
                    reason,
                    V5Code::UnsupportedProtocolVersion | V5Code::RefusedProtocolVersion
                ),
                E::MqttState(S::ConnectionAborted) => true,
                E::Io(io) => matches!(
                    io.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                ),
                E::MqttState(S::Io(io)) => matches!(
                    io.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ),
                _ => false,
            },
        }
    }

    /// In words an installer can act on.
    pub fn describe(&self) -> String {
        match self {
            LinkError::V4(e) => super::describe(e),
            LinkError::V5(e) => {
                use super::Failure;
                use rumqttc::v5::ConnectionError as E;
                super::words(match e {
                    E::ConnectionRefused(code) => Failure::Refused(format!("{code:?}")),
                    E::Tls(t) => Failure::Tls(t.to_string()),
                    E::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                        Failure::PortClosed
                    }
                    other => Failure::Other(other.to_string()),
                })
            }
        }
    }
}

/// The sending half.
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Client {
    /// Queues a publish; false when the client's queue is full.
    pub fn try_publish(&self, topic: String, qos1: bool, retain: bool, payload: Vec<u8>) -> bool {
        match self {
            Client::V4(c) => {
                let q = if qos1 {
                    rumqttc::QoS::AtLeastOnce
                } else {
                    rumqttc::QoS::AtMostOnce
                };
                c.try_publish(topic, q, retain, payload).is_ok()
            }
            Client::V5(c) => {
                let q = if qos1 {
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce
                } else {
                    rumqttc::v5::mqttbytes::QoS::AtMostOnce
                };
                c.try_publish(topic, q, retain, payload).is_ok()
            }
        }
    }

    /// Subscribes at QoS 0 (best effort; a full queue skips it).
    pub fn try_subscribe(&self, topic: String) {
        let _ = match self {
            Client::V4(c) => c.try_subscribe(topic, rumqttc::QoS::AtMostOnce).is_ok(),
            Client::V5(c) => c
                .try_subscribe(topic, rumqttc::v5::mqttbytes::QoS::AtMostOnce)
                .is_ok(),
        };
    }

    pub fn try_disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().is_ok(),
            Client::V5(c) => c.try_disconnect().is_ok(),
        };
    }
}

/// The receiving half: drives the connection.
pub enum Events {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

impl Events {
    pub async fn poll(&mut self) -> Result<LinkEvent, LinkError> {
        match self {
            Events::V4(el) => {
                use rumqttc::{Event, Outgoing, Packet};
                Ok(match el.poll().await.map_err(LinkError::V4)? {
                    Event::Incoming(Packet::ConnAck(_)) => LinkEvent::ConnAck { max_packet: None },
                    Event::Incoming(Packet::PubAck(a)) => LinkEvent::Acked {
                        pkid: a.pkid,
                        refused: None,
                    },
                    Event::Outgoing(Outgoing::Publish(pkid)) => LinkEvent::Sent(pkid),
                    Event::Outgoing(Outgoing::Disconnect) => LinkEvent::DisconnectSent,
                    Event::Incoming(Packet::Publish(p)) => LinkEvent::Message {
                        topic: p.topic,
                        payload: p.payload.to_vec(),
                    },
                    _ => LinkEvent::Other,
                })
            }
            Events::V5(el) => {
                use rumqttc::Outgoing;
                use rumqttc::v5::Event;
                use rumqttc::v5::mqttbytes::v5::Packet;
                Ok(match el.poll().await.map_err(LinkError::V5)? {
                    Event::Incoming(Packet::ConnAck(c)) => LinkEvent::ConnAck {
                        max_packet: c.properties.and_then(|p| p.max_packet_size),
                    },
                    Event::Incoming(Packet::PubAck(a)) => LinkEvent::Acked {
                        pkid: a.pkid,
                        refused: Refusal::of(&a.reason, "its topic"),
                    },
                    Event::Outgoing(Outgoing::Publish(pkid)) => LinkEvent::Sent(pkid),
                    Event::Outgoing(Outgoing::Disconnect) => LinkEvent::DisconnectSent,
                    Event::Incoming(Packet::Publish(p)) => LinkEvent::Message {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                    },
                    _ => LinkEvent::Other,
                })
            }
        }
    }
}

/// A refusal worded for the topic of the message it concerns.
pub fn for_topic(r: Refusal, topic: &str) -> Refusal {
    Refusal {
        text: r.text.replace("its topic", topic),
        ..r
    }
}

/// Opens a connection (lazily: nothing happens until [`Events::poll`]) that
/// speaks `version`, with the status topic's Last Will.
pub fn open(
    m: &MqttSettings,
    status: &StatusBoard,
    version: Version,
    cap: usize,
    inflight: u16,
) -> Result<(Client, Events), String> {
    let topics = Topics::new(&m.topic_prefix, &m.agent_id, m.topic_layout);
    let will_topic = topics.status();
    let will = status.offline_json("connection lost");
    match version {
        Version::V311 => {
            let mut opts = super::connection_options(m)?;
            opts.set_last_will(rumqttc::LastWill::new(
                will_topic,
                will,
                rumqttc::QoS::AtLeastOnce,
                true,
            ));
            let (c, el) = rumqttc::AsyncClient::new(opts, cap);
            Ok((Client::V4(c), Events::V4(Box::new(el))))
        }
        Version::V5 => {
            let opts = v5_options(m, will_topic, will, inflight)?;
            let (c, el) = rumqttc::v5::AsyncClient::new(opts, cap);
            Ok((Client::V5(c), Events::V5(Box::new(el))))
        }
    }
}

/// The MQTT 5 options: the same address, TLS, login, keep-alive and limits
/// as 3.1.1; a persistent session (`clean_session = false`) is kept by the
/// broker for a day.
fn v5_options(
    m: &MqttSettings,
    will_topic: String,
    will: Vec<u8>,
    inflight: u16,
) -> Result<rumqttc::v5::MqttOptions, String> {
    let v4 = super::connection_options(m)?;
    let (host, port) = v4.broker_address();
    let mut o = rumqttc::v5::MqttOptions::new(m.client_id.clone(), host, port);
    o.set_keep_alive(Duration::from_secs(m.keep_alive_secs.max(5)));
    o.set_max_packet_size(Some(m.max_packet_bytes.min(u32::MAX as usize) as u32));
    o.set_clean_start(m.clean_session);
    if !m.clean_session {
        o.set_session_expiry_interval(Some(24 * 3600));
    }
    o.set_outgoing_inflight_upper_limit(inflight);
    o.set_transport(v4.transport());
    if let Some(user) = &m.username {
        let p = m.password.as_ref().map(|s| s.0.clone());
        o.set_credentials(user.clone(), p.unwrap_or_default());
    }
    o.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
        will_topic,
        will,
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        true,
        None,
    ));
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_reason_and_the_fix() {
        assert_eq!(Refusal::of(&PubAckReason::Success, "t"), None);
        assert_eq!(Refusal::of(&PubAckReason::NoMatchingSubscribers, "t"), None);
        let r = for_topic(
            Refusal::of(&PubAckReason::NotAuthorized, "its topic").unwrap(),
            "ioc/v1/w/events",
        );
        assert!(r.not_authorized);
        assert_eq!(r.code, 0x87);
        assert!(
            r.text.contains("ioc/v1/w/events") && r.text.contains("ACL"),
            "{}",
            r.text
        );
        let q = Refusal::of(&PubAckReason::QuotaExceeded, "t").unwrap();
        assert!(!q.not_authorized && q.text.contains("0x97"), "{}", q.text);
    }

    #[test]
    fn the_protocol_key_reads_as_written() {
        #[derive(serde::Deserialize)]
        struct T {
            p: Protocol,
        }
        let p = |s: &str| toml::from_str::<T>(&format!("p = \"{s}\"")).map(|t| t.p);
        assert_eq!(p("auto").unwrap(), Protocol::Auto);
        assert_eq!(p("5").unwrap(), Protocol::V5);
        assert_eq!(p("3.1.1").unwrap(), Protocol::V311);
        assert!(p("4").is_err());
    }
}
