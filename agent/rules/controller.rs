//! Signed traffic-controller messages (sans-IO). MQTT 3.1.1 tells a
//! subscriber nothing about who published a message, so with
//! `[cameras.signal] controller_key` the controller signs what it says and
//! the agent takes a state only from a message that key signed, on its own
//! topic, recent and newer than the last one taken there.
//!
//! The message is a JSON object:
//!
//! ```json
//! {"state":"red","ts":"2026-03-01T08:00:00.000Z","controller":"junction-12","sig":"<128 hex digits>"}
//! ```
//!
//! - `state`: `red`, `yellow`/`amber`, `green`, `off`/`unknown`/`flashing`
//!   (as for unsigned messages, case-insensitive);
//! - `ts`: when the controller stated it, RFC 3339 (any offset);
//! - `controller`: the controller's name, for the log (non-empty);
//! - `sig`: the Ed25519 signature (hex) of the UTF-8 text
//!   `ioc.signal/1\n{topic}\n{controller}\n{state}\n{ts}` — the MQTT topic
//!   it is published on and the three fields exactly as they appear in the
//!   JSON strings (after JSON unescaping), separated by one line feed.
//!   `state`, `ts` and `controller` hold no control characters.
//!
//! Other fields are allowed and ignored (they are not signed). Signing the
//! topic stops a message for one approach being replayed on another.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signature, Signer};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Serialize;

use super::signal::Light;

/// The first line of every signed text (what is signed, and its version).
pub const CONTEXT: &str = "ioc.signal/1";

/// How far ahead of the agent's clock a controller's `ts` may be.
pub const MAX_AHEAD: Duration = Duration::from_secs(5);

/// What one signal topic trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTrust {
    /// The controller's public key; `None`: any message with a state counts
    /// (whoever the broker lets publish on the topic).
    pub key: Option<VerifyingKey>,
    /// Signed messages stated longer ago than this are stale (the longest
    /// `max_age_secs` of the cameras on the topic).
    pub max_age: Duration,
}

/// The signal topics of the running config and what each trusts.
pub type SignalTopics = BTreeMap<String, TopicTrust>;

/// Why a controller message was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// Not a signal state (or a signed message missing a field).
    Malformed,
    /// No signature on a topic with `controller_key`.
    Unsigned,
    /// Not signed by the topic's key, or signed for another topic, or altered.
    BadSignature,
    /// Signed longer than `max_age_secs` ago.
    Stale,
    /// Signed more than [`MAX_AHEAD`] ahead of the agent's clock.
    Future,
    /// Not newer than the last message taken on the topic.
    Replayed,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::Malformed,
        Refusal::Unsigned,
        Refusal::BadSignature,
        Refusal::Stale,
        Refusal::Future,
        Refusal::Replayed,
    ];

    /// The `reason` label in `/metrics` and the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Unsigned => "unsigned",
            Refusal::BadSignature => "bad_signature",
            Refusal::Stale => "stale",
            Refusal::Future => "future",
            Refusal::Replayed => "replayed",
        }
    }

    /// Index into per-reason counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// What is wrong and what to do, for the log.
    pub fn why(self) -> &'static str {
        match self {
            Refusal::Malformed => {
                "not a signal state (red, yellow, green, off; plain or JSON {\"state\": ...}; signed: with ts, controller and sig) — fix what the controller publishes (see Traffic signal)"
            }
            Refusal::Unsigned => {
                "unsigned, but the topic has a controller_key — if this is the controller, have it sign its messages (see Traffic signal, signed messages); else someone else publishes there: restrict publishing with the broker ACL"
            }
            Refusal::BadSignature => {
                "not signed by this topic's controller_key (forged, signed for another topic, or altered) — if the controller was given a new key, put its public key in controller_key"
            }
            Refusal::Stale => {
                "signed longer than max_age_secs ago — check that the controller's and the agent's clocks are synchronised (NTP) and the delay between them"
            }
            Refusal::Future => {
                "dated more than 5 s ahead of the agent's clock — synchronise the controller's and the agent's clocks (NTP)"
            }
            Refusal::Replayed => {
                "not newer than the last message taken on this topic (a replay, or the controller's clock went back) — each message needs a later ts"
            }
        }
    }
}

/// A state taken from a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    pub light: Light,
    /// How long ago the controller stated it (signed messages, by `ts`;
    /// zero for unsigned ones, which count from their arrival).
    pub age: Duration,
}

/// The controller's public key from its hex form (`controller_key`).
pub fn parse_key(hex_key: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(hex_key.trim()).map_err(|_| {
        "controller_key is not hex — give the controller's Ed25519 public key as 64 hex digits"
            .to_string()
    })?;
    let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "controller_key has {} bytes — an Ed25519 public key is 32 bytes (64 hex digits)",
            bytes.len()
        )
    })?;
    let key = VerifyingKey::from_bytes(&arr).map_err(|_| {
        "controller_key is not a valid Ed25519 public key — copy it again from the controller (`ioc-agent signal keygen` prints it)".to_string()
    })?;
    if key.is_weak() {
        return Err("controller_key is a weak Ed25519 key that anyone can sign for — make the controller a new key pair (`ioc-agent signal keygen`)".into());
    }
    Ok(key)
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// The text a controller signs.
fn signed_text(topic: &str, controller: &str, state: &str, ts: &str) -> String {
    format!("{CONTEXT}\n{topic}\n{controller}\n{state}\n{ts}")
}

#[derive(Serialize)]
struct Signed<'a> {
    state: &'a str,
    ts: &'a str,
    controller: &'a str,
    sig: String,
}

/// A signed controller message stating `light` on `topic` at `ts` (what a
/// controller, a gateway in front of it, or a test publishes).
pub fn sign(
    key: &SigningKey,
    topic: &str,
    controller: &str,
    light: Light,
    ts: DateTime<Utc>,
) -> Result<String, String> {
    if controller.is_empty() || has_control(controller) {
        return Err(
            "the controller name must be non-empty, without control characters".to_string(),
        );
    }
    let ts = ts.to_rfc3339_opts(SecondsFormat::Millis, true);
    let state = light.as_str();
    let sig = key.sign(signed_text(topic, controller, state, &ts).as_bytes());
    serde_json::to_string(&Signed {
        state,
        ts: &ts,
        controller,
        sig: hex::encode(sig.to_bytes()),
    })
    .map_err(|e| e.to_string())
}

/// Decides, per topic, which controller messages to take; remembers the
/// last signed `ts` taken on each topic (replays must be newer).
#[derive(Debug, Default)]
pub struct Gate {
    last: HashMap<String, (DateTime<Utc>, [u8; 64])>,
}

impl Gate {
    /// Forgets a topic (removed, or its key changed).
    pub fn forget(&mut self, topic: &str) {
        self.last.remove(topic);
    }

    /// The state in `payload` on `topic`, or why it is refused; `now` is the
    /// agent's clock.
    pub fn check(
        &mut self,
        topic: &str,
        payload: &[u8],
        trust: &TopicTrust,
        now: DateTime<Utc>,
    ) -> Result<Taken, Refusal> {
        let Some(key) = &trust.key else {
            let light = Light::parse(payload).ok_or(Refusal::Malformed)?;
            return Ok(Taken {
                light,
                age: Duration::ZERO,
            });
        };
        let unsigned_or_malformed = || match Light::parse(payload) {
            Some(_) => Refusal::Unsigned,
            None => Refusal::Malformed,
        };
        let text = std::str::from_utf8(payload).map_err(|_| Refusal::Malformed)?;
        if !text.trim_start().starts_with('{') {
            return Err(unsigned_or_malformed());
        }
        let v: serde_json::Value = serde_json::from_str(text).map_err(|_| Refusal::Malformed)?;
        let Some(sig) = v.get("sig") else {
            return Err(unsigned_or_malformed());
        };
        let field = |name: &str| {
            v.get(name)
                .and_then(|f| f.as_str())
                .filter(|s| !s.is_empty() && !has_control(s))
                .ok_or(Refusal::Malformed)
        };
        let (state, ts, controller) = (field("state")?, field("ts")?, field("controller")?);
        let sig: [u8; 64] = sig
            .as_str()
            .and_then(|s| hex::decode(s).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or(Refusal::BadSignature)?;
        key.verify_strict(
            signed_text(topic, controller, state, ts).as_bytes(),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| Refusal::BadSignature)?;
        let light = Light::from_word(state).ok_or(Refusal::Malformed)?;
        let at = DateTime::parse_from_rfc3339(ts)
            .map_err(|_| Refusal::Malformed)?
            .with_timezone(&Utc);
        let age = (now - at).to_std();
        let age = match age {
            Ok(a) if a > trust.max_age => return Err(Refusal::Stale),
            Ok(a) => a,
            Err(_) if (at - now).to_std().is_ok_and(|ahead| ahead > MAX_AHEAD) => {
                return Err(Refusal::Future);
            }
            Err(_) => Duration::ZERO,
        };
        if let Some((last, last_sig)) = self.last.get(topic)
            && (at < *last || (at == *last && sig != *last_sig))
        {
            return Err(Refusal::Replayed);
        }
        self.last.insert(topic.to_string(), (at, sig));
        Ok(Taken { light, age })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "controllers/junction-12/north/signal";

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn trust(key: &SigningKey) -> TopicTrust {
        TopicTrust {
            key: Some(key.verifying_key()),
            max_age: Duration::from_secs(10),
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const NOW: &str = "2026-03-01T08:00:00Z";

    #[test]
    fn a_signed_state_is_taken_with_its_age() {
        let (k, mut g) = (key(), Gate::default());
        let m = sign(
            &k,
            TOPIC,
            "junction-12",
            Light::Red,
            t("2026-03-01T07:59:58.5Z"),
        )
        .unwrap();
        let got = g.check(TOPIC, m.as_bytes(), &trust(&k), t(NOW)).unwrap();
        assert_eq!(got.light, Light::Red);
        assert_eq!(got.age, Duration::from_millis(1500));
        // Extra fields and another offset for ts are fine when signed as sent.
        let ts = "2026-03-01T15:00:00.250+07:00";
        let sig = k.sign(signed_text(TOPIC, "j12", "GREEN", ts).as_bytes());
        let m = format!(
            r#"{{"phase": 2, "state": "GREEN", "ts": "{ts}", "controller": "j12", "sig": "{}"}}"#,
            hex::encode(sig.to_bytes())
        );
        let got = g.check(TOPIC, m.as_bytes(), &trust(&k), t(NOW)).unwrap();
        assert_eq!(got.light, Light::Green);
        assert_eq!(got.age, Duration::ZERO); // 250 ms ahead: taken as now
    }

    #[test]
    fn forgeries_are_refused_by_reason() {
        let (k, forger) = (key(), SigningKey::from_bytes(&[9; 32]));
        let tr = trust(&k);
        let now = t(NOW);
        let check = |m: &str| Gate::default().check(TOPIC, m.as_bytes(), &tr, now);
        assert_eq!(check("red"), Err(Refusal::Unsigned));
        assert_eq!(check(r#"{"state": "red"}"#), Err(Refusal::Unsigned));
        assert_eq!(check("purple"), Err(Refusal::Malformed));
        assert_eq!(
            check(r#"{"state": "red", "sig": "#),
            Err(Refusal::Malformed)
        );
        let by_forger = sign(&forger, TOPIC, "j", Light::Red, now).unwrap();
        assert_eq!(check(&by_forger), Err(Refusal::BadSignature));
        let other_topic = sign(
            &k,
            "controllers/junction-12/east/signal",
            "j",
            Light::Red,
            now,
        );
        assert_eq!(check(&other_topic.unwrap()), Err(Refusal::BadSignature));
        let genuine = sign(&k, TOPIC, "j", Light::Green, now).unwrap();
        assert!(check(&genuine).is_ok());
        let altered = genuine.replace("\"green\"", "\"red\"");
        assert_eq!(check(&altered), Err(Refusal::BadSignature));
        let redated = genuine.replace("08:00:00.000Z", "08:00:00.001Z");
        assert_eq!(check(&redated), Err(Refusal::BadSignature));
        let short_sig = genuine.replace("\"sig\":\"", "\"sig\":\"00");
        assert_eq!(check(&short_sig), Err(Refusal::BadSignature));
        let stale = sign(
            &k,
            TOPIC,
            "j",
            Light::Red,
            now - chrono::Duration::seconds(11),
        );
        assert_eq!(check(&stale.unwrap()), Err(Refusal::Stale));
        let ahead = sign(
            &k,
            TOPIC,
            "j",
            Light::Red,
            now + chrono::Duration::seconds(6),
        );
        assert_eq!(check(&ahead.unwrap()), Err(Refusal::Future));
        // A signed text with a line feed in a field could be read two ways.
        let sig = k.sign(signed_text(TOPIC, "a\nb", "red", NOW).as_bytes());
        let m = format!(
            r#"{{"state":"red","ts":"{NOW}","controller":"a\nb","sig":"{}"}}"#,
            hex::encode(sig.to_bytes())
        );
        assert_eq!(check(&m), Err(Refusal::Malformed));
        assert!(sign(&k, TOPIC, "a\nb", Light::Red, now).is_err());
    }

    #[test]
    fn replays_and_going_back_are_refused_duplicates_are_harmless() {
        let (k, mut g) = (key(), Gate::default());
        let tr = trust(&k);
        let now = t(NOW);
        let at = |ms: i64, l: Light| {
            sign(&k, TOPIC, "j", l, now - chrono::Duration::milliseconds(ms)).unwrap()
        };
        let red_old = at(3000, Light::Red);
        let green = at(1000, Light::Green);
        assert!(g.check(TOPIC, green.as_bytes(), &tr, now).is_ok());
        // The same message again (a QoS 1 duplicate, a retained one after a
        // reconnect): taken, with the same age, so it extends nothing.
        let again = g.check(TOPIC, green.as_bytes(), &tr, now).unwrap();
        assert_eq!(again.age, Duration::from_secs(1));
        assert_eq!(
            g.check(TOPIC, red_old.as_bytes(), &tr, now),
            Err(Refusal::Replayed)
        );
        // Another state at the very same ts: refused.
        let red_same = at(1000, Light::Red);
        assert_eq!(
            g.check(TOPIC, red_same.as_bytes(), &tr, now),
            Err(Refusal::Replayed)
        );
        assert!(
            g.check(TOPIC, at(500, Light::Red).as_bytes(), &tr, now)
                .is_ok()
        );
        // Topics are separate; a forgotten topic starts afresh.
        g.forget(TOPIC);
        assert!(g.check(TOPIC, red_old.as_bytes(), &tr, now).is_ok());
    }

    #[test]
    fn without_a_key_anything_with_a_state_counts_as_before() {
        let mut g = Gate::default();
        let tr = TopicTrust {
            key: None,
            max_age: Duration::from_secs(10),
        };
        let now = t(NOW);
        for (m, l) in [
            ("red", Light::Red),
            (r#"{"state": "green", "phase": 2}"#, Light::Green),
            (
                &sign(&key(), TOPIC, "j", Light::Yellow, now).unwrap(),
                Light::Yellow,
            ),
        ] {
            let got = g.check(TOPIC, m.as_bytes(), &tr, now).unwrap();
            assert_eq!((got.light, got.age), (l, Duration::ZERO));
        }
        assert_eq!(g.check(TOPIC, b"purple", &tr, now), Err(Refusal::Malformed));
    }

    /// The example in docs/src/reference/traffic-signal.md (a test vector
    /// for controller gateways): private key 0707…07, public key below.
    #[test]
    fn the_documented_example_is_what_sign_makes() {
        let k = key();
        assert_eq!(
            hex::encode(k.verifying_key().as_bytes()),
            "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
        );
        let m = sign(&k, TOPIC, "junction-12", Light::Red, t(NOW)).unwrap();
        assert_eq!(
            m,
            r#"{"state":"red","ts":"2026-03-01T08:00:00.000Z","controller":"junction-12","sig":"8252893b74d99be214daee934798e9db160a365e8508dde3efed01cfa4a79035c8d51f073ed7ee5cf0f0eacb5550ce507ab25e3eb5c58ebc13e1aa143bfc5f0f"}"#
        );
        let docs = include_str!("../../docs/src/reference/traffic-signal.md");
        assert!(docs.contains(&m), "the docs' example is not this message");
    }

    #[test]
    fn keys_parse_from_hex_and_bad_ones_say_why() {
        let public = hex::encode(key().verifying_key().as_bytes());
        assert_eq!(
            parse_key(&format!(" {public}\n")).unwrap(),
            key().verifying_key()
        );
        assert!(parse_key("xyz").unwrap_err().contains("not hex"));
        assert!(parse_key("abcd").unwrap_err().contains("2 bytes"));
        // The identity point: a weak key.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert!(parse_key(&hex::encode(weak)).unwrap_err().contains("weak"));
    }
}
