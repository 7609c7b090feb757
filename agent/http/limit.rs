//! Failed logins per client address: a token bucket of `BURST` tries that
//! refills one every `REFILL`; an address out of tries gets 429 with
//! `Retry-After` until the next one. A right token does not consume a try.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens an address may send in a row.
pub const BURST: f64 = 5.0;
/// One more try per this long.
pub const REFILL: Duration = Duration::from_secs(2);
/// Addresses remembered at most (the oldest are forgotten first).
const MAX_CLIENTS: usize = 4096;

#[derive(Default)]
pub struct LoginLimiter {
    clients: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl LoginLimiter {
    /// Whether `ip` may try now; `Err(wait)` when it must wait.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&ip) {
            Some(&(tokens, at)) => {
                let t = refill(tokens, at, now);
                if t >= 1.0 {
                    Ok(())
                } else {
                    Err(REFILL.mul_f64(1.0 - t))
                }
            }
            None => Ok(()),
        }
    }

    /// Records a wrong token from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CLIENTS
            && !map.contains_key(&ip)
            && let Some(oldest) = map.iter().min_by_key(|(_, v)| v.1).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        let e = map.entry(ip).or_insert((BURST, now));
        let t = refill(e.0, e.1, now);
        *e = ((t - 1.0).max(0.0), now);
    }
}

fn refill(tokens: f64, at: Instant, now: Instant) -> f64 {
    let gained = now.saturating_duration_since(at).as_secs_f64() / REFILL.as_secs_f64();
    (tokens + gained).min(BURST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guesser_is_slowed_to_one_try_per_refill_and_others_are_not() {
        let l = LoginLimiter::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.7".parse().unwrap(), "10.0.0.8".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..BURST as usize {
            assert!(l.check(a, t0).is_ok());
            l.failed(a, t0);
        }
        let wait = l.check(a, t0).unwrap_err();
        assert!(wait <= REFILL && wait > Duration::ZERO);
        assert!(l.check(b, t0).is_ok(), "another address is not limited");
        assert!(l.check(a, t0 + REFILL).is_ok(), "one try back after REFILL");
        l.failed(a, t0 + REFILL);
        assert!(l.check(a, t0 + REFILL).is_err());
    }
}
