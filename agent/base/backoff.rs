//! Reconnect delays shared by every stage that retries (camera sessions,
//! MQTT connections, the signal reader).

use std::time::Duration;

use rand::Rng;

/// Jittered exponential backoff: `min`, `2·min`, … up to `max`, each ±25%.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }
    pub fn reset(&mut self) {
        self.next = self.min;
    }
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::rng().random_range(0.75..1.25);
        base.mul_f64(jitter)
    }
}
