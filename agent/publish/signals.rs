//! Traffic-signal states published by traffic controllers on the agent's
//! broker (`[cameras.signal] source = "mqtt"`): one subscriber for all
//! cameras, latest state per topic.
//!
//! The topics follow the running config: `run` sends each (re)loaded
//! config's topic set on a watch channel, and the subscriber subscribes the
//! added topics and unsubscribes the removed ones on its open connection.
//! It connects only while some camera takes its signal over MQTT.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::base::backoff::Backoff;
use crate::base::throttle::Throttle;
use crate::rules::controller::{Gate, Refusal, SignalTopics};

pub use crate::rules::signal::SignalBoard;

/// The signal topics the cameras of the running config read, and what each trusts.
pub type Topics = SignalTopics;

/// Requests (subscribe, unsubscribe) the client may queue; a reload that
/// needs more reconnects instead, subscribing the new set at once.
const REQUESTS: usize = 64;

/// The subscriber task: run it until `cancel` fires. It follows `topics`
/// and writes every state it takes to `board`.
pub fn subscriber(
    m: &super::MqttSettings,
    topics: watch::Receiver<Topics>,
    board: Arc<SignalBoard>,
    cancel: CancellationToken,
) -> Result<impl Future<Output = ()> + Send + 'static, String> {
    let mut opts = super::connection_options(m)?;
    opts.set_client_id(format!("{}-signals", m.client_id));
    opts.set_clean_session(true);
    Ok(run(opts, topics, board, cancel))
}

async fn run(
    opts: MqttOptions,
    mut topics: watch::Receiver<Topics>,
    board: Arc<SignalBoard>,
    cancel: CancellationToken,
) {
    let mut log = RefusalLog::new();
    let mut gate = Gate::default();
    loop {
        // No connection while no camera takes its signal over MQTT.
        while topics.borrow_and_update().is_empty() {
            board.counters.topics.store(0, Ordering::Relaxed);
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = topics.changed() => if r.is_err() { return },
            }
        }
        let mut s = Session::new(&opts, &board, &mut gate, &mut log);
        match s.run(&mut topics, &cancel).await {
            End::Stop => return,
            End::Again => {}
        }
    }
}

/// How a session ended.
enum End {
    /// The agent is stopping.
    Stop,
    /// Start over: no topics left (idle), or a reload's changes could not
    /// be queued (a new connection subscribes the new set).
    Again,
}

/// One client and its connection (which it re-opens itself).
struct Session<'a> {
    client: AsyncClient,
    el: EventLoop,
    board: &'a SignalBoard,
    log: &'a mut RefusalLog,
    connected: bool,
    /// Topics subscribed on this connection, and what each trusts.
    subscribed: Topics,
    /// Which signed messages to take (newer than the last, per topic; kept
    /// across connections, so a reconnect does not reopen old messages).
    gate: &'a mut Gate,
    /// Subscribe requests queued, oldest first, not yet sent.
    queued: VecDeque<Vec<String>>,
    /// Subscribe requests sent, by packet id, until their SUBACK.
    sent: HashMap<u16, Vec<String>>,
}

impl<'a> Session<'a> {
    fn new(
        opts: &MqttOptions,
        board: &'a SignalBoard,
        gate: &'a mut Gate,
        log: &'a mut RefusalLog,
    ) -> Session<'a> {
        let (client, el) = AsyncClient::new(opts.clone(), REQUESTS);
        Session {
            client,
            el,
            board,
            log,
            connected: false,
            subscribed: Topics::new(),
            gate,
            queued: VecDeque::new(),
            sent: HashMap::new(),
        }
    }

    async fn run(
        &mut self,
        topics: &mut watch::Receiver<Topics>,
        cancel: &CancellationToken,
    ) -> End {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut summaries = tokio::time::interval(Duration::from_secs(1));
        summaries.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return End::Stop,
                _ = summaries.tick() => {
                    self.log.summaries();
                    continue;
                }
                r = topics.changed() => {
                    if r.is_err() {
                        return End::Stop;
                    }
                    let wanted = topics.borrow_and_update().clone();
                    if wanted.is_empty() {
                        info!("no camera takes its signal over MQTT any more; signal subscriber disconnected");
                        return End::Again;
                    }
                    if self.connected && !self.follow(&wanted) {
                        return End::Again;
                    }
                    continue;
                }
                ev = self.el.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    self.connected = true;
                    self.subscribed.clear();
                    self.queued.clear();
                    self.sent.clear();
                    let wanted = topics.borrow().clone();
                    if !self.follow(&wanted) {
                        return End::Again;
                    }
                }
                Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => {
                    if let Some(t) = self.queued.pop_front() {
                        self.sent.insert(pkid, t);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let topics = self.sent.remove(&ack.pkid).unwrap_or_default();
                    for (t, code) in topics.iter().zip(&ack.return_codes) {
                        if *code == SubscribeReasonCode::Failure {
                            warn!(topic = %t, "the broker refused the subscription to this signal topic — allow the agent's MQTT user to read it in the broker's ACL (see Traffic signal, broker ACL)");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => self.message(&p.topic, &p.payload),
                Ok(_) => {}
                Err(e) => {
                    self.connected = false;
                    let d = backoff.next_delay();
                    warn!(error = %e, retry_in_ms = d.as_millis() as u64, "signal subscriber lost the broker; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return End::Stop,
                        _ = tokio::time::sleep(d) => {}
                    }
                }
            }
        }
    }

    /// Subscribes the topics of `wanted` not yet subscribed and unsubscribes
    /// the others; false when the requests could not be queued.
    fn follow(&mut self, wanted: &Topics) -> bool {
        let add: Vec<String> = wanted
            .keys()
            .filter(|t| !self.subscribed.contains_key(*t))
            .cloned()
            .collect();
        let remove: Vec<String> = self
            .subscribed
            .keys()
            .filter(|t| !wanted.contains_key(*t))
            .cloned()
            .collect();
        for t in &remove {
            if self.client.try_unsubscribe(t.clone()).is_err() {
                return false;
            }
            self.board.forget(t);
            self.gate.forget(t);
        }
        if !add.is_empty() {
            let filters = add
                .iter()
                .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
            if self.client.try_subscribe_many(filters).is_err() {
                return false;
            }
            self.queued.push_back(add.clone());
        }
        // A topic whose controller key changed starts afresh: a state taken
        // under the old key (or none) is not kept under the new one.
        for (t, trust) in wanted {
            if self
                .subscribed
                .get(t)
                .is_some_and(|old| old.key != trust.key)
            {
                self.gate.forget(t);
                self.board.forget(t);
            }
        }
        if !add.is_empty() || !remove.is_empty() {
            info!(subscribed = ?add, unsubscribed = ?remove, "signal subscriptions updated");
        }
        self.subscribed = wanted.clone();
        self.board
            .counters
            .topics
            .store(self.subscribed.len() as u64, Ordering::Relaxed);
        true
    }

    /// A message on a subscribed topic.
    fn message(&mut self, topic: &str, payload: &[u8]) {
        let Session {
            subscribed,
            gate,
            board,
            log,
            ..
        } = self;
        let Some(trust) = subscribed.get(topic) else {
            return; // in flight when its topic was unsubscribed
        };
        let c = &board.counters;
        match gate.check(topic, payload, trust, chrono::Utc::now()) {
            Ok(t) => {
                board.set_aged(topic, t.light, t.age);
                c.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(r) => {
                c.refused[r.index()].fetch_add(1, Ordering::Relaxed);
                log.refused(topic, r);
            }
        }
    }
}

/// How often a refusal reason is summed up in the log while messages keep
/// being refused for it (the first is logged at once).
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Refused messages in the log: the first per reason in full, then one
/// summary with a count per [`REFUSAL_LOG_EVERY`].
struct RefusalLog {
    /// Per reason: its throttle and the topic of the last refusal.
    by_reason: Vec<(Throttle, String)>,
}

impl RefusalLog {
    fn new() -> RefusalLog {
        RefusalLog {
            by_reason: Refusal::ALL
                .iter()
                .map(|_| (Throttle::new(REFUSAL_LOG_EVERY), String::new()))
                .collect(),
        }
    }

    fn refused(&mut self, topic: &str, r: Refusal) {
        let Some((t, last)) = self.by_reason.get_mut(r.index()) else {
            return;
        };
        if t.note(Instant::now()) {
            warn!(%topic, reason = %r.as_str(), "signal message refused: {} (more are summed up every {} s)", r.why(), REFUSAL_LOG_EVERY.as_secs());
        } else if last != topic {
            *last = topic.to_string();
        }
    }

    /// Logs the summaries that are due.
    fn summaries(&mut self) {
        let now = Instant::now();
        for (r, (t, last)) in Refusal::ALL.iter().zip(self.by_reason.iter_mut()) {
            if let Some(n) = t.due(now) {
                warn!(
                    reason = %r.as_str(),
                    count = n,
                    last_topic = %last,
                    "{n} more signal messages refused in the last {} s: {}",
                    t.every().as_secs(),
                    r.why()
                );
            }
        }
    }
}
