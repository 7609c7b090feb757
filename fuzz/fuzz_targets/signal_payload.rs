//! Traffic-controller messages on MQTT: any payload, on a topic with and
//! without a controller key, is a state or a refusal — never a panic.
#![no_main]
use std::time::Duration;

use ioc_agent::rules::controller::{Gate, TopicTrust};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
    let now = chrono::Utc::now();
    let mut gate = Gate::default();
    for trust in [
        TopicTrust {
            key: None,
            max_age: Duration::from_secs(10),
        },
        TopicTrust {
            key: Some(key),
            max_age: Duration::from_secs(10),
        },
    ] {
        let _ = gate.check("controllers/j1/g1/signal", data, &trust, now);
    }
});
