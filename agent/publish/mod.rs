//! MQTT publishing per the contract in README (`MQTT contract`) and
//! deploy/asyncapi.yaml: alerts (JSON, QoS 1) on `{prefix}/{agent_id}/events`
//! (or `.../events/{camera}/{type}` with `topic_layout = "by_camera"`),
//! thumbnails (JPEG, QoS 1), the retained `{prefix}/{agent_id}/status` set
//! offline by the Last Will, and periodic `{prefix}/{agent_id}/stats`.
//! Alerts come from the durable outbox and leave it only on PUBACK.

pub mod alert;
pub mod link;
pub mod payload;
pub mod signals;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::collections::{BTreeMap, HashMap, VecDeque};

use rumqttc::MqttOptions;

use link::{LinkError, LinkEvent, Refusal, Version};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::base::backoff::Backoff;
use crate::base::secret::Secret;
use crate::store::{NewRow, Store, StoreError};
pub use payload::{Alert, StatusBoard};

/// What the publisher needs from `[mqtt]`, as plain values (the config layer
/// resolves paths and reads the password).
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// The broker connected to first (and moved back to).
    pub url: String,
    /// Brokers to move to, in order, when the current one is away.
    pub failover_urls: Vec<String>,
    /// On a failover broker: seconds between checks that `url` is back; 0
    /// stays.
    pub failback_secs: u64,
    pub agent_id: String,
    pub client_id: String,
    pub topic_prefix: String,
    pub topic_layout: TopicLayout,
    pub keep_alive_secs: u64,
    pub status_interval_secs: u64,
    pub stats_interval_secs: u64,
    pub max_packet_bytes: usize,
    pub clean_session: bool,
    pub protocol: link::Protocol,
    pub ca_file: Option<std::path::PathBuf>,
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// MQTT topic layout for alerts and thumbnails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicLayout {
    #[default]
    Flat,
    ByCamera,
}

/// A broker address from `mqtt://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS (rustls), server name verified.
    pub tls: bool,
}

impl BrokerAddress {
    pub fn parse(s: &str) -> Result<BrokerAddress, String> {
        let url = url::Url::parse(s).map_err(|e| {
            format!(
                "invalid MQTT URL '{s}' ({e}); write it as mqtt://host:port or mqtts://host:port"
            )
        })?;
        let tls = match url.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => {
                return Err(format!(
                    "MQTT URL must start with mqtt:// or mqtts://, got '{other}://'"
                ));
            }
        };
        if !url.username().is_empty() {
            return Err("put MQTT credentials in [mqtt] username and password_file (or password_env), not in the URL".into());
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| "MQTT URL has no host; write it as mqtt://host:port".to_string())?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        Ok(BrokerAddress {
            host,
            port: url.port().unwrap_or(if tls { 8883 } else { 1883 }),
            tls,
        })
    }
}

/// Topic names for one agent.
#[derive(Debug, Clone)]
pub struct Topics {
    pub base: String,
    pub layout: TopicLayout,
}

impl Topics {
    pub fn new(prefix: &str, agent_id: &str, layout: TopicLayout) -> Topics {
        Topics {
            base: format!("{prefix}/{agent_id}"),
            layout,
        }
    }
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }
    /// Where an alert of `camera` and `kind` goes.
    pub fn event(&self, camera: &str, kind: &str) -> String {
        match self.layout {
            TopicLayout::Flat => format!("{}/events", self.base),
            TopicLayout::ByCamera => format!("{}/events/{camera}/{kind}", self.base),
        }
    }
    pub fn thumbnail(&self, event_id: &str) -> String {
        match self.layout {
            TopicLayout::Flat => format!("{}/events/{event_id}/thumbnail", self.base),
            TopicLayout::ByCamera => format!("{}/thumbnails/{event_id}", self.base),
        }
    }
    pub fn stats(&self) -> String {
        format!("{}/stats", self.base)
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
    /// Alerts committed to the outbox.
    pub queued: AtomicU64,
    /// Alerts whose every packet the broker acknowledged.
    pub published: AtomicU64,
    /// Event updates (evidence sealed, review) the broker acknowledged.
    pub updates_published: AtomicU64,
    /// Alerts dropped by the outbox bound policy (or that could not be stored).
    pub dropped: AtomicU64,
    /// PUBACKs received (all packets).
    pub acked: AtomicU64,
    pub reconnects: AtomicU64,
    /// Alerts dropped by the outbox bound policy.
    pub outbox_dropped: AtomicU64,
    /// Rows and bytes waiting in the outbox (refreshed by the publisher).
    pub outbox_rows: AtomicU64,
    pub outbox_bytes: AtomicU64,
    /// Rows moved out of the outbox because they cannot be delivered
    /// (larger than a packet; or the connection lost right after they were
    /// sent alone, `POISON_LIMIT` times in a row), kept in the store.
    pub quarantined: AtomicU64,
    /// Thumbnails left out because they did not fit one packet.
    pub thumbnails_dropped: AtomicU64,
    /// Publishes the broker refused with an MQTT 5 reason code.
    pub refused: AtomicU64,
    /// Moves to another broker of `mqtt.url` + `mqtt.failover_urls`.
    pub broker_switches: AtomicU64,
    /// Statuses of another live agent seen on this agent's own topic.
    pub agent_id_conflicts: AtomicU64,
}

/// Cheap handle for cameras: commits alerts to the durable outbox and wakes
/// the publisher. Never waits for the network.
#[derive(Clone)]
pub struct PublisherHandle {
    store: Arc<Store>,
    wake: Arc<Notify>,
    pub counters: Arc<PublishCounters>,
    pub topics: Topics,
    /// The largest packet the client sends (`mqtt.max_packet_bytes`).
    pub max_packet: usize,
}

impl PublisherHandle {
    /// The largest thumbnail that fits one packet on `topic` (the PUBLISH
    /// header: fixed part, topic, packet id).
    pub fn thumbnail_budget(&self, topic: &str) -> usize {
        self.max_packet.saturating_sub(topic.len() + 16)
    }
}

impl PublisherHandle {
    /// Commits the alert and its thumbnail; returns false if it could not be
    /// stored or was dropped at once by the bound policy (both counted, logged).
    pub async fn send(&self, out: Outgoing) -> bool {
        let json = match serde_json::to_vec(&out.alert) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise alert");
                return false;
            }
        };
        let row = NewRow {
            camera: out.alert.camera.clone(),
            event_id: out.alert.id.clone(),
            severity: out.alert.severity,
            topic: self.topics.event(&out.alert.camera, &out.alert.kind),
            payload: json,
            thumb_topic: out
                .thumbnail
                .as_ref()
                .map(|_| self.topics.thumbnail(&out.alert.id)),
            thumb: out.thumbnail,
        };
        self.enqueue(row).await
    }

    /// Commits an `ioc.event_update/1` message (evidence sealed, review) on
    /// the topic of its event; delivered like an alert.
    pub async fn send_update(
        &self,
        u: &payload::EventUpdate,
        severity: crate::store::Severity,
    ) -> bool {
        let json = match serde_json::to_vec(u) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise event update");
                return false;
            }
        };
        let row = NewRow {
            camera: u.camera.clone(),
            event_id: u.event_id.clone(),
            severity,
            topic: self.topics.event(&u.camera, &u.event_type),
            payload: json,
            thumb_topic: None,
            thumb: None,
        };
        self.enqueue(row).await
    }

    /// Commits the row and accounts for it. The commit, the counters and
    /// the log lines all happen in the blocking task, which runs to its end
    /// even when the camera task awaiting it is cancelled (its stream
    /// ended): nothing the bound policy drops goes unrecorded.
    async fn enqueue(&self, row: NewRow) -> bool {
        let store = self.store.clone();
        let counters = self.counters.clone();
        let wake = self.wake.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let ok = commit(&store, &counters, &row);
            wake.notify_one();
            ok
        })
        .await
        .unwrap_or(false)
    }
}

/// [`PublisherHandle::enqueue`]'s work, on a blocking thread.
fn commit(store: &Store, counters: &PublishCounters, row: &NewRow) -> bool {
    match store.enqueue(row) {
        Ok((id, dropped)) => {
            for d in &dropped {
                let all = counters.outbox_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if d.update {
                    // Counted in the outbox's drops, not as a lost alert.
                    tracing::warn!(event_id = %d.event_id, camera = %d.camera, severity = %d.severity.as_str(), outbox_dropped_total = all,
                        "outbox full; dropped an event update (the oldest message of the lowest severity)");
                } else {
                    let n = counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(event_id = %d.event_id, camera = %d.camera, severity = %d.severity.as_str(), dropped_total = n,
                        "outbox full; dropped the oldest alert of the lowest severity");
                }
            }
            counters.queued.fetch_add(1, Ordering::Relaxed);
            id.is_some()
        }
        Err(e) => {
            let n = counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(event_id = %row.event_id, error = %e, dropped_total = n, "cannot store alert; dropped");
            false
        }
    }
}

/// How an event update's JSON starts its schema name (alerts never carry it).
const UPDATE_MARK: &[u8] = b"\"ioc.event_update/";

/// Packets in flight per connection (alert + thumbnail = 2 per row).
const WINDOW_ROWS: usize = 32;

/// What a published packet belongs to.
#[derive(Debug, Clone, Copy)]
enum Part {
    Row(i64),
    Status,
}

/// Builds the rustls configuration for `mqtts://`: CA file (default: the
/// system bundle), optional client certificate and key (mutual TLS).
fn tls_config(m: &MqttSettings) -> Result<rumqttc::TlsConfiguration, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca = m
        .ca_file
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&ca)
        .map_err(|e| format!("cannot read mqtt.ca_file {}: {e}", ca.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("mqtt.ca_file {}: {e}", ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("mqtt.ca_file {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "mqtt.ca_file {} holds no certificate",
            ca.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (&m.cert_file, &m.key_file) {
        (Some(c), Some(k)) => {
            let chain = CertificateDer::pem_file_iter(c)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read mqtt.cert_file {}: {e}", c.display()))?;
            let key = PrivateKeyDer::from_pem_file(k)
                .map_err(|e| format!("cannot read mqtt.key_file {}: {e}", k.display()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!(
                    "client certificate {} / key {}: {e}",
                    c.display(),
                    k.display()
                )
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("mqtt.cert_file and mqtt.key_file must be given together".into()),
    };
    Ok(rumqttc::TlsConfiguration::Rustls(Arc::new(config)))
}

/// Broker address, TLS, login and limits from the config (no Last Will).
pub fn connection_options(m: &MqttSettings) -> Result<MqttOptions, String> {
    let addr = BrokerAddress::parse(&m.url)?;
    let mut opts = MqttOptions::new(m.client_id.clone(), addr.host.clone(), addr.port);
    opts.set_keep_alive(Duration::from_secs(m.keep_alive_secs.max(5)));
    opts.set_max_packet_size(m.max_packet_bytes, m.max_packet_bytes);
    opts.set_clean_session(m.clean_session);
    opts.set_inflight((2 * WINDOW_ROWS + 8) as u16);
    if addr.tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(tls_config(m)?));
    }
    if let Some(user) = &m.username {
        let p = m.password.as_ref().map(|s| s.0.clone());
        opts.set_credentials(user.clone(), p.unwrap_or_default());
    }
    Ok(opts)
}

/// Starts the publisher. The returned join handle ends after `cancel` fires
/// and the offline status has been sent (when connected).
pub fn start(
    m: &MqttSettings,
    status: Arc<StatusBoard>,
    store: Arc<Store>,
    cancel: CancellationToken,
) -> Result<(PublisherHandle, tokio::task::JoinHandle<()>), String> {
    // Address, TLS and login checked now, not at the first connection.
    connection_options(m)?;
    for u in &m.failover_urls {
        BrokerAddress::parse(u)?;
    }
    let topics = Topics::new(&m.topic_prefix, &m.agent_id, m.topic_layout);
    let counters = status.counters.clone();
    let wake = Arc::new(Notify::new());
    let handle = PublisherHandle {
        store: store.clone(),
        wake: wake.clone(),
        counters: counters.clone(),
        topics: topics.clone(),
        max_packet: m.max_packet_bytes,
    };
    let p = Publisher {
        settings: m.clone(),
        topics,
        status,
        store,
        wake,
        counters,
        status_every: Duration::from_secs(m.status_interval_secs.max(1)),
        stats_every: Duration::from_secs(m.stats_interval_secs.max(1)),
        max_packet: m.max_packet_bytes,
    };
    Ok((handle, tokio::spawn(p.run(cancel))))
}

/// What the publisher carries from one connection to the next.
struct Run {
    backoff: Backoff,
    ever_connected: bool,
    /// The row alone in flight when connections were lost (or the broker
    /// refused it), and how many times in a row.
    poison: (i64, u32),
    /// Rows up to this id go one at a time (the culprit of a loss with
    /// several in flight is unknown).
    careful_until: i64,
    /// `auto` speaks MQTT 5 until a broker shows it does not.
    version: Version,
    /// `auto`: 3.1.1 is being tried right after a version 5 CONNECT was
    /// refused; kept once it connects.
    trying_311: bool,
    /// `mqtt.url`, then `mqtt.failover_urls`; the one in use, the one last
    /// connected to, and how many were tried since.
    urls: Vec<String>,
    at: usize,
    last_at: Option<usize>,
    tried: usize,
}

impl Run {
    fn new(m: &MqttSettings) -> Run {
        Run {
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            ever_connected: false,
            poison: (0, 0),
            careful_until: 0,
            version: match m.protocol {
                link::Protocol::V311 => Version::V311,
                link::Protocol::Auto | link::Protocol::V5 => Version::V5,
            },
            trying_311: false,
            urls: std::iter::once(m.url.clone())
                .chain(m.failover_urls.iter().cloned())
                .collect(),
            at: 0,
            last_at: None,
            tried: 0,
        }
    }

    /// Counts row `id` as the suspect once more; true (and the count reset)
    /// when that makes `POISON_LIMIT` in a row: quarantine it.
    fn suspect(&mut self, id: i64) -> bool {
        self.poison = if self.poison.0 == id {
            (id, self.poison.1 + 1)
        } else {
            (id, 1)
        };
        if self.poison.1 >= POISON_LIMIT {
            self.poison = (0, 0);
            return true;
        }
        false
    }
}

/// Sleeps `d`; None when `cancel` fires first.
async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> Option<()> {
    tokio::select! {
        _ = cancel.cancelled() => None,
        _ = tokio::time::sleep(d) => Some(()),
    }
}

struct Publisher {
    settings: MqttSettings,
    topics: Topics,
    status: Arc<StatusBoard>,
    store: Arc<Store>,
    wake: Arc<Notify>,
    counters: Arc<PublishCounters>,
    status_every: Duration,
    stats_every: Duration,
    /// `mqtt.max_packet_bytes`.
    max_packet: usize,
}

/// Connections lost in a row with the same row alone in flight before that
/// row is taken for one the broker refuses and quarantined.
const POISON_LIMIT: u32 = 3;

/// A loss counts against the row alone in flight only if it came this soon
/// after the row was sent: a broker refusing a packet drops the connection
/// at once, a link that fails now and then does not.
const POISON_WINDOW: Duration = Duration::from_secs(10);

/// State of one broker connection. A new connection starts from the oldest
/// unacknowledged row, so nothing is lost (at-least-once; the IOC de-duplicates by id).
struct Conn {
    client: link::Client,
    /// Parts published, waiting for rumqttc to assign their packet ids (FIFO).
    unassigned: VecDeque<Part>,
    by_pkid: HashMap<u16, Part>,
    /// Rows in flight → packets still unacknowledged.
    rows: BTreeMap<i64, u8>,
    /// Acknowledged rows not yet deleted (deleted in batches).
    acked: Vec<i64>,
    /// Rows whose thumbnail could not be queued: kept for the next connection.
    incomplete: std::collections::HashSet<i64>,
    /// Rows in flight that are event updates, not alerts (counted apart).
    updates: std::collections::HashSet<i64>,
    cursor: i64,
    /// Rows up to this id were in flight when a connection was lost: they
    /// are sent one at a time, so a row the broker refuses is known by
    /// itself and the acks lost with the connection blame no other row.
    careful_until: i64,
    /// When the last row was sent.
    last_send: Instant,
    /// Largest packet sent: `mqtt.max_packet_bytes`, or the broker's
    /// maximum from its CONNACK (MQTT 5) when smaller.
    max_packet: usize,
    /// Each row's alert topic, to name it when the broker refuses the row.
    row_topics: HashMap<i64, String>,
    /// A row the broker refused (MQTT 5 reason code): the connection ends,
    /// the row stays in the outbox.
    refused: Option<(i64, Refusal)>,
    /// `mqtt.url` answers again while on a failover broker: leave cleanly.
    failing_back: bool,
}

/// How a connection ended.
enum Ended {
    Lost(LinkError),
    /// The broker refused this row; we disconnected cleanly.
    Refused(i64, Refusal),
    /// `mqtt.url` is back while on a failover broker; we disconnected
    /// cleanly to move back.
    Failback,
}

/// `host:port` of a broker URL, for logs and status (no credentials: an
/// MQTT URL carries none).
fn broker_label(url: &str) -> String {
    BrokerAddress::parse(url)
        .map(|a| format!("{}:{}", a.host, a.port))
        .unwrap_or_else(|_| url.to_string())
}

/// Whether a broker takes TCP connections now (the failback check: no MQTT
/// session, so it never takes over ours).
async fn accepts_connections(url: &str) -> bool {
    let Ok(a) = BrokerAddress::parse(url) else {
        return false;
    };
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect((a.host.as_str(), a.port))
        )
        .await,
        Ok(Ok(_))
    )
}

impl Conn {
    /// Rows sent at once: one while a row from a lost connection is unsent
    /// or unacknowledged, the full window otherwise.
    fn window(&self) -> usize {
        let careful = self.cursor < self.careful_until
            || self
                .rows
                .keys()
                .next()
                .is_some_and(|&f| f <= self.careful_until);
        if careful { 1 } else { WINDOW_ROWS }
    }
}

impl Publisher {
    fn refresh_depth(&self) {
        if let Ok((n, b)) = self.store.depth() {
            self.counters.outbox_rows.store(n, Ordering::Relaxed);
            self.counters.outbox_bytes.store(b, Ordering::Relaxed);
        }
    }

    /// Connect, serve, and after each loss decide what comes next, until
    /// `cancel` (then the offline status has been sent).
    async fn run(self, cancel: CancellationToken) {
        let mut s = Run::new(&self.settings);
        self.refresh_depth();
        loop {
            let Some((mut conn, mut el, broker)) = self.connect(&mut s, &cancel).await else {
                return;
            };
            let Some(ended) = self.serve(&mut conn, &mut el, &s, &cancel).await else {
                return;
            };
            if !self.after(&mut s, &conn, ended, &broker, &cancel).await {
                return;
            }
        }
    }

    /// Opens a connection to the broker in use and waits for its CONNACK:
    /// `auto` falls back to 3.1.1 for a broker without 5, a failure moves on
    /// to the next broker of the list (at once, the backoff after a full
    /// round). Connected: the status says where, the online status is
    /// queued. None when cancelled.
    async fn connect(
        &self,
        s: &mut Run,
        cancel: &CancellationToken,
    ) -> Option<(Conn, link::Events, String)> {
        loop {
            let mut settings = self.settings.clone();
            settings.url = s.urls[s.at].clone();
            let broker = broker_label(&s.urls[s.at]);
            let opened = link::open(
                &settings,
                &self.status,
                s.version,
                4 * WINDOW_ROWS + 16,
                (2 * WINDOW_ROWS + 8) as u16,
            );
            let (client, mut el) = match opened {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(broker = %broker, error = %e, "cannot set up the MQTT connection");
                    sleep_or_cancel(s.backoff.next_delay(), cancel).await?;
                    continue;
                }
            };
            let connected = loop {
                let ev = tokio::select! {
                    _ = cancel.cancelled() => return None,
                    ev = el.poll() => ev,
                };
                match ev {
                    Ok(LinkEvent::ConnAck { max_packet }) => break Ok(max_packet),
                    Ok(_) => continue,
                    Err(e) => break Err(e),
                }
            };
            let broker_max = match connected {
                Ok(m) => m,
                Err(e) => {
                    if self.settings.protocol == link::Protocol::Auto
                        && s.version == Version::V5
                        && e.v5_unsupported()
                    {
                        tracing::debug!(broker = %broker, error = %e.describe(), "MQTT 5 CONNECT refused; trying 3.1.1");
                        s.version = Version::V311;
                        s.trying_311 = true;
                        continue;
                    }
                    if std::mem::take(&mut s.trying_311) {
                        // 3.1.1 failed too: the broker is away, not old.
                        s.version = Version::V5;
                    }
                    // The next broker of the list at once; the backoff once
                    // every one was tried.
                    s.tried += 1;
                    let d = if s.urls.len() > 1 && s.tried < s.urls.len() {
                        Duration::from_millis(100)
                    } else {
                        s.tried = 0;
                        s.backoff.next_delay()
                    };
                    s.at = (s.at + 1) % s.urls.len();
                    tracing::warn!(broker = %broker, protocol = s.version.as_str(), error = %e.describe(), retry_in_ms = d.as_millis() as u64, "cannot connect to MQTT broker; retrying");
                    sleep_or_cancel(d, cancel).await?;
                    continue;
                }
            };
            return Some((self.connected(s, client, broker_max, &broker), el, broker));
        }
    }

    /// Bookkeeping of a new connection: status, counters, the packet limit
    /// in force, our own status topic, the online status.
    fn connected(
        &self,
        s: &mut Run,
        client: link::Client,
        broker_max: Option<u32>,
        broker: &str,
    ) -> Conn {
        let version = s.version;
        if std::mem::take(&mut s.trying_311) {
            tracing::warn!(broker = %broker,
                "the broker does not speak MQTT 5; using 3.1.1 — a message the broker refuses (its ACL, a size limit) is then acknowledged and dropped unseen (docs: Delivery)");
        }
        self.status.set_protocol(version.as_str());
        self.status.set_broker(broker);
        if s.last_at.is_some_and(|l| l != s.at) {
            self.counters
                .broker_switches
                .fetch_add(1, Ordering::Relaxed);
            if s.at == 0 {
                tracing::info!(broker = %broker, "back on the first broker (mqtt.url)");
            } else {
                tracing::warn!(broker = %broker, "moved to a failover broker (mqtt.failover_urls): the one before is away");
            }
        }
        (s.last_at, s.tried) = (Some(s.at), 0);
        s.backoff.reset();
        if s.ever_connected {
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        s.ever_connected = true;
        self.refresh_depth();
        let max_packet = match broker_max {
            Some(b) if (b as usize) < self.max_packet => {
                tracing::warn!(
                    broker_max_packet_bytes = b,
                    max_packet_bytes = self.max_packet,
                    "the broker takes packets up to {b} bytes, less than mqtt.max_packet_bytes: larger messages are quarantined, larger thumbnails left out; lower mqtt.max_packet_bytes to match"
                );
                b as usize
            }
            _ => self.max_packet,
        };
        tracing::info!(broker = %broker, protocol = version.as_str(), outbox_rows = self.counters.outbox_rows.load(Ordering::Relaxed), "connected to MQTT broker");
        let mut conn = Conn {
            client,
            unassigned: VecDeque::new(),
            by_pkid: HashMap::new(),
            rows: BTreeMap::new(),
            acked: Vec::new(),
            incomplete: Default::default(),
            updates: Default::default(),
            cursor: 0,
            careful_until: s.careful_until,
            last_send: Instant::now(),
            max_packet,
            row_topics: HashMap::new(),
            refused: None,
            failing_back: false,
        };
        // Our own status topic: another live agent there shares our agent_id.
        conn.client.try_subscribe(self.topics.status());
        self.publish_status(&mut conn, self.status.online_json());
        conn
    }

    /// Lets `conn`'s events through for up to `secs` after our DISCONNECT
    /// was queued, until it has left.
    async fn drain(&self, conn: &mut Conn, el: &mut link::Events, secs: u64) {
        let _ = tokio::time::timeout(Duration::from_secs(secs), async {
            while let Ok(ev) = el.poll().await {
                if let LinkEvent::DisconnectSent = ev {
                    break;
                }
                self.on_event(conn, ev).await;
            }
        })
        .await;
    }

    /// The connected loop: rows out of the outbox, acks back, the status
    /// and stats on their ticks, the failback check. Returns how the
    /// connection ended; None after a shutdown (offline status sent).
    async fn serve(
        &self,
        conn: &mut Conn,
        el: &mut link::Events,
        s: &Run,
        cancel: &CancellationToken,
    ) -> Option<Ended> {
        let mut status_tick = tokio::time::interval(self.status_every);
        let mut stats_tick = tokio::time::interval(self.stats_every);
        let mut flush_tick = tokio::time::interval(Duration::from_millis(20));
        status_tick.tick().await;
        stats_tick.tick().await;
        // On a failover broker: is the first one back?
        let failback = s.at != 0 && self.settings.failback_secs > 0;
        let mut failback_tick =
            tokio::time::interval(Duration::from_secs(self.settings.failback_secs.max(1)));
        failback_tick.tick().await;
        let ended = loop {
            let refused = conn.refused.take();
            if refused.is_some() || conn.failing_back {
                if refused.is_none() {
                    // Whoever reads this broker: not here any more.
                    self.publish_status(
                        conn,
                        self.status
                            .offline_json("moved back to the first broker (mqtt.url)"),
                    );
                }
                // Leave cleanly: a dropped connection would publish our
                // Last Will (offline) although the agent is fine.
                conn.client.try_disconnect();
                self.drain(conn, el, 2).await;
                break match refused {
                    Some((id, r)) => Ended::Refused(id, r),
                    None => Ended::Failback,
                };
            }
            if let Err(e) = self.fill(conn).await {
                tracing::error!(error = %e, "cannot read the outbox");
            }
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.publish_status(conn, self.status.offline_json("shutdown"));
                    conn.client.try_disconnect();
                    // Let the last acks and the offline status through.
                    self.drain(conn, el, 3).await;
                    self.flush(conn).await;
                    return None;
                }
                _ = self.wake.notified() => {}
                _ = failback_tick.tick(), if failback => {
                    if accepts_connections(&s.urls[0]).await {
                        conn.failing_back = true;
                    }
                }
                _ = flush_tick.tick(), if !conn.acked.is_empty() => self.flush(conn).await,
                _ = status_tick.tick() => {
                    self.refresh_depth();
                    self.publish_status(conn, self.status.online_json());
                }
                _ = stats_tick.tick() => {
                    self.refresh_depth();
                    let stats = self.status.stats_json(self.stats_every);
                    // rumqttc reports every publish, QoS 0 included (packet
                    // id 0), in order: keep the FIFO aligned.
                    if conn.client.try_publish(self.topics.stats(), false, false, stats) {
                        conn.unassigned.push_back(Part::Status);
                    }
                }
                ev = el.poll() => match ev {
                    Ok(ev) => self.on_event(conn, ev).await,
                    Err(e) => break Ended::Lost(e),
                }
            }
        };
        self.flush(conn).await;
        Some(ended)
    }

    /// After a connection ended: which rows go carefully, which one is
    /// quarantined (refused, or alone in flight at `POISON_LIMIT` losses),
    /// which broker is next, and the wait. False when cancelled.
    async fn after(
        &self,
        s: &mut Run,
        conn: &Conn,
        ended: Ended,
        broker: &str,
        cancel: &CancellationToken,
    ) -> bool {
        // With several rows in flight the culprit is unknown (the acks of
        // the innocent ones may be lost with the connection): they go
        // again one at a time. A row alone in flight when the connection
        // drops right after it was sent is the suspect.
        s.careful_until = s
            .careful_until
            .max(conn.rows.keys().next_back().copied().unwrap_or(0));
        let err = match ended {
            Ended::Lost(e) => e,
            Ended::Failback => {
                tracing::info!(from = %broker, to = %broker_label(&s.urls[0]), in_flight = conn.rows.len(),
                    "the first broker (mqtt.url) is back; moving to it");
                s.at = 0;
                return true;
            }
            Ended::Refused(id, r) => {
                s.careful_until = s.careful_until.max(id);
                self.status.set_refusal(&r.text);
                if r.not_authorized {
                    // Every message on the topic would be refused: they
                    // wait in the outbox for the ACL to be fixed.
                    s.poison = (0, 0);
                } else if s.suspect(id) {
                    self.quarantine(
                        id,
                        &format!("refused {POISON_LIMIT} times by the broker: {}", r.text),
                    )
                    .await;
                }
                let d = s.backoff.next_delay();
                tracing::error!(broker = %broker, row = id, reason = %r.text, retry_in_ms = d.as_millis() as u64,
                    "the broker refused a message; it stays in the outbox and is sent again");
                return sleep_or_cancel(d, cancel).await.is_some();
            }
        };
        match conn.rows.keys().next() {
            Some(&only)
                if conn.rows.len() == 1
                    && conn.last_send.elapsed() < POISON_WINDOW
                    && !err.is_timeout() =>
            {
                if s.suspect(only) {
                    self.quarantine(
                        only,
                        &format!("the connection to the broker was lost {POISON_LIMIT} times in a row right after this message was sent alone: the broker refuses it (e.g. larger than its limit)"),
                    )
                    .await;
                }
            }
            Some(_) => {}
            None => s.poison = (0, 0),
        }
        let d = s.backoff.next_delay();
        // A broker that dropped us is likely away: the next one first.
        s.at = (s.at + 1) % s.urls.len();
        tracing::warn!(broker = %broker, error = %err.describe(), in_flight = conn.rows.len(), retry_in_ms = d.as_millis() as u64,
            next = %broker_label(&s.urls[s.at]),
            "MQTT connection lost; unacknowledged alerts stay in the outbox");
        sleep_or_cancel(d, cancel).await.is_some()
    }

    fn publish_status(&self, conn: &mut Conn, json: Vec<u8>) {
        if conn
            .client
            .try_publish(self.topics.status(), true, true, json)
        {
            conn.unassigned.push_back(Part::Status);
        }
    }

    /// Moves a row that cannot be delivered to the store's quarantine,
    /// counted and logged; the rows after it flow.
    async fn quarantine(&self, id: i64, reason: &str) {
        let store = self.store.clone();
        let why = reason.to_string();
        match tokio::task::spawn_blocking(move || store.quarantine(id, &why)).await {
            Ok(Ok(true)) => {
                let n = self.counters.quarantined.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(
                    row = id,
                    reason,
                    quarantined_total = n,
                    "outbox row quarantined: it cannot be delivered; kept in the store's quarantine table, the rest goes on"
                );
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!(row = id, error = %e, "cannot quarantine an outbox row"),
            Err(_) => {}
        }
        self.refresh_depth();
    }

    /// Publishes outbox rows until the window is full.
    async fn fill(&self, conn: &mut Conn) -> Result<(), StoreError> {
        while conn.rows.len() < conn.window() {
            let store = self.store.clone();
            let (after, n) = (conn.cursor, conn.window() - conn.rows.len());
            let rows = tokio::task::spawn_blocking(move || store.after(after, n))
                .await
                .unwrap_or_else(|_| Ok(Vec::new()))?;
            if rows.is_empty() {
                return Ok(());
            }
            for mut r in rows {
                // A packet larger than the limit can never go: the client
                // would refuse it on every connection and hold back the rest.
                let alert_size = r.payload.len() + r.topic.len() + 16;
                if alert_size > conn.max_packet {
                    let limit = if conn.max_packet < self.max_packet {
                        format!(
                            "the broker's maximum packet size {} (its CONNACK)",
                            conn.max_packet
                        )
                    } else {
                        format!("mqtt.max_packet_bytes {}", self.max_packet)
                    };
                    self.quarantine(
                        r.id,
                        &format!("the message is {alert_size} bytes, over {limit}"),
                    )
                    .await;
                    conn.cursor = r.id;
                    continue;
                }
                if let (Some(t), Some(b)) = (&r.thumb_topic, &r.thumb)
                    && b.len() + t.len() + 16 > conn.max_packet
                {
                    let n = self
                        .counters
                        .thumbnails_dropped
                        .fetch_add(1, Ordering::Relaxed)
                        + 1;
                    tracing::warn!(event_id = %r.event_id, bytes = b.len(), max_packet_bytes = conn.max_packet, thumbnails_dropped_total = n,
                        "thumbnail left out: larger than one packet; the alert goes without it");
                    r.thumb = None;
                }
                let is_update = r
                    .payload
                    .windows(UPDATE_MARK.len())
                    .any(|w| w == UPDATE_MARK);
                // The cursor moves only past rows whose every packet was queued;
                // if the client's queue is full, the rest waits for the next fill.
                if !conn
                    .client
                    .try_publish(r.topic.clone(), true, false, r.payload)
                {
                    return Ok(());
                }
                conn.row_topics.insert(r.id, r.topic);
                conn.cursor = r.id;
                conn.last_send = Instant::now();
                if is_update {
                    conn.updates.insert(r.id);
                }
                conn.unassigned.push_back(Part::Row(r.id));
                let mut parts = 1u8;
                if let (Some(t), Some(b)) = (r.thumb_topic, r.thumb) {
                    if !conn.client.try_publish(t, true, false, b) {
                        // The alert went out without its thumbnail: never delete
                        // this row on this connection; it is re-sent whole after
                        // the next reconnect.
                        conn.incomplete.insert(r.id);
                        conn.rows.insert(r.id, parts);
                        return Ok(());
                    }
                    conn.unassigned.push_back(Part::Row(r.id));
                    parts += 1;
                }
                conn.rows.insert(r.id, parts);
            }
        }
        Ok(())
    }

    /// A status on our own topic from another process, written after we
    /// started (so not an earlier run of this one), means two boxes share
    /// this `agent_id`.
    fn check_status(&self, topic: &str, payload: &[u8]) {
        if topic != self.topics.status() {
            return;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return;
        };
        let instance = v["instance"].as_str().unwrap_or_default();
        let ours = &self.status.instance;
        let since = payload::rfc3339(self.status.started);
        // Online, or its Last Will (the broker publishes it when one of two
        // agents with one client id takes the connection from the other):
        // either way written after we started, by another process.
        if instance.is_empty()
            || instance == ours
            || v["time"].as_str().is_none_or(|t| t <= since.as_str())
        {
            return;
        }
        let n = self
            .counters
            .agent_id_conflicts
            .fetch_add(1, Ordering::Relaxed);
        let text = format!(
            "another agent publishes as agent_id '{}' (instance {instance}, started {}, status at {}): two boxes share one agent_id — give each box its own agent_id; their alerts, statuses and MQTT client ids clash",
            self.status.agent_id,
            v["started_at"].as_str().unwrap_or("?"),
            v["time"].as_str().unwrap_or("?"),
        );
        if n == 0 || n.is_multiple_of(20) {
            tracing::error!(instance = %ours, other = %instance, "{text}");
        }
        self.status.set_conflict(text);
    }

    async fn on_event(&self, conn: &mut Conn, ev: LinkEvent) {
        match ev {
            LinkEvent::Message { topic, payload } => self.check_status(&topic, &payload),
            LinkEvent::Sent(pkid) => {
                if let Some(p) = conn.unassigned.pop_front() {
                    conn.by_pkid.insert(pkid, p);
                }
            }
            LinkEvent::Acked {
                pkid,
                refused: Some(r),
            } => {
                // Not delivered: the row stays; the connection ends and the
                // row goes again (alone) after the backoff.
                let n = self.counters.refused.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(Part::Row(id)) = conn.by_pkid.remove(&pkid) {
                    let topic = conn.row_topics.get(&id).cloned().unwrap_or_default();
                    let r = link::for_topic(r, &topic);
                    tracing::debug!(row = id, refused_total = n, reason = %r.text, "publish refused");
                    if conn.refused.is_none() {
                        conn.refused = Some((id, r));
                    }
                } else {
                    tracing::warn!(refused_total = n, reason = %r.text, "the broker refused a status or stats message");
                }
            }
            LinkEvent::Acked {
                pkid,
                refused: None,
            } => {
                self.counters.acked.fetch_add(1, Ordering::Relaxed);
                if let Some(Part::Row(id)) = conn.by_pkid.remove(&pkid)
                    && let Some(left) = conn.rows.get_mut(&id)
                {
                    *left -= 1;
                    if *left == 0 {
                        conn.rows.remove(&id);
                        conn.row_topics.remove(&id);
                        if conn.incomplete.remove(&id) {
                            return;
                        }
                        conn.acked.push(id);
                        if conn.updates.remove(&id) {
                            self.counters
                                .updates_published
                                .fetch_add(1, Ordering::Relaxed);
                        } else {
                            self.counters.published.fetch_add(1, Ordering::Relaxed);
                        }
                        if conn.acked.len() >= WINDOW_ROWS / 2 {
                            self.flush(conn).await;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Deletes acknowledged rows from the outbox in one transaction.
    async fn flush(&self, conn: &mut Conn) {
        if conn.acked.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut conn.acked);
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.delete(&ids)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot remove acknowledged alerts from the outbox; they will be sent again")
            }
            Err(_) => {}
        }
    }
}

/// A connection lost to silence (no ping answer, a timeout) rather than
/// closed by the broker: it says nothing about the message in flight.
pub(crate) fn is_timeout(e: &rumqttc::ConnectionError) -> bool {
    use rumqttc::{ConnectionError as E, StateError as S};
    match e {
        E::NetworkTimeout | E::FlushTimeout => true,
        E::MqttState(S::AwaitPingResp) => true,
        E::Io(io) => io.kind() == std::io::ErrorKind::TimedOut,
        E::MqttState(S::Io(io)) => io.kind() == std::io::ErrorKind::TimedOut,
        _ => false,
    }
}

/// A connection error in words an installer can act on.
pub(crate) fn describe(e: &rumqttc::ConnectionError) -> String {
    use rumqttc::ConnectionError as E;
    words(match e {
        E::ConnectionRefused(code) => Failure::Refused(format!("{code:?}")),
        E::Tls(t) => Failure::Tls(t.to_string()),
        E::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => Failure::PortClosed,
        other => Failure::Other(other.to_string()),
    })
}

/// What a failed connection comes to, the same for both MQTT versions.
pub(crate) enum Failure {
    /// The broker answered the CONNECT with this refusal code.
    Refused(String),
    Tls(String),
    /// Nothing listens on the port.
    PortClosed,
    Other(String),
}

/// A [`Failure`] in words an installer can act on.
pub(crate) fn words(f: Failure) -> String {
    match f {
        Failure::Refused(code) => {
            format!("broker refused the connection ({code}) — check mqtt.username and the password")
        }
        Failure::Tls(t) => format!(
            "TLS: {t} — check mqtt.ca_file, mqtt.cert_file/key_file and that the broker's certificate names this host"
        ),
        Failure::PortClosed => {
            "connection refused — is the broker running and the port right?".into()
        }
        Failure::Other(msg) => {
            if msg.contains("CertificateRequired") {
                format!(
                    "TLS: the broker requires a client certificate ({msg}) — set mqtt.cert_file and mqtt.key_file"
                )
            } else if msg.contains("fatal alert") {
                format!(
                    "TLS: the broker rejected the handshake ({msg}) — check the client certificate and mqtt.ca_file"
                )
            } else {
                msg
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> NewRow {
        NewRow {
            camera: "cam".into(),
            event_id: id.into(),
            severity: crate::store::Severity::Low,
            topic: "ioc/v1/w/events".into(),
            payload: format!("{{\"id\":\"{id}\"}}").into_bytes(),
            thumb_topic: None,
            thumb: None,
        }
    }

    /// A camera task cancelled while its alert is being committed (the
    /// stream ended): the row still goes in, and what the bound policy
    /// dropped to make room is still counted. Before, the count and the
    /// warning were in the cancelled future: the drop went unrecorded.
    #[tokio::test]
    async fn a_cancelled_send_still_counts_what_it_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Store::open(
                dir.path(),
                crate::store::Limits {
                    max_rows: 1,
                    max_bytes: 1 << 20,
                },
            )
            .unwrap(),
        );
        let h = PublisherHandle {
            store: store.clone(),
            wake: Arc::new(Notify::new()),
            counters: Arc::new(PublishCounters::default()),
            topics: Topics::new("ioc/v1", "w", TopicLayout::Flat),
            max_packet: 1 << 20,
        };
        assert!(h.enqueue(row("A")).await);
        // Polled once (the commit starts), then dropped, as a cancelled task is.
        {
            let fut = h.enqueue(row("B"));
            tokio::pin!(fut);
            let _ = futures::poll!(fut.as_mut());
        }
        for _ in 0..200 {
            if h.counters.queued.load(Ordering::Relaxed) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(store.depth().unwrap().0, 1, "the second row is stored");
        assert_eq!(
            h.counters.queued.load(Ordering::Relaxed),
            2,
            "B counted as queued"
        );
        assert_eq!(
            h.counters.dropped.load(Ordering::Relaxed),
            1,
            "A, dropped for B, is counted"
        );
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            BrokerAddress::parse("mqtt://10.1.2.3:1884").unwrap(),
            BrokerAddress {
                host: "10.1.2.3".into(),
                port: 1884,
                tls: false
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
        let t = Topics::new("ioc/v1", "ward-7", TopicLayout::Flat);
        assert_eq!(t.event("cam1", "object.line_cross"), "ioc/v1/ward-7/events");
        assert_eq!(t.status(), "ioc/v1/ward-7/status");
        assert_eq!(t.thumbnail("01ABC"), "ioc/v1/ward-7/events/01ABC/thumbnail");
        let t = Topics::new("ioc/v1", "ward-7", TopicLayout::ByCamera);
        assert_eq!(
            t.event("cam1", "object.line_cross"),
            "ioc/v1/ward-7/events/cam1/object.line_cross"
        );
        assert_eq!(t.thumbnail("01ABC"), "ioc/v1/ward-7/thumbnails/01ABC");
    }
}
