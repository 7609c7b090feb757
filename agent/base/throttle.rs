//! Keeping repeated warnings out of the log: the first occurrence is
//! logged in full, later ones are counted and summed up at most once per
//! period, so a flood (a misconfigured or hostile client) costs a few lines.

use std::time::{Duration, Instant};

/// One kind of warning's throttle. Sans-IO: the caller passes the time.
#[derive(Debug, Clone)]
pub struct Throttle {
    every: Duration,
    /// When the last line (full or summary) was logged; `None` when quiet.
    since: Option<Instant>,
    /// Occurrences held back since then.
    held: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            since: None,
            held: 0,
        }
    }

    /// One occurrence: true when it should be logged in full now (the first
    /// after a quiet period); otherwise it is counted for the next summary.
    pub fn note(&mut self, now: Instant) -> bool {
        let quiet = match self.since {
            None => true,
            Some(t) => self.held == 0 && now.duration_since(t) >= self.every,
        };
        if quiet {
            self.since = Some(now);
        } else {
            self.held += 1;
        }
        quiet
    }

    /// The occurrences held back, once a period has passed since the last
    /// line: log a summary with this count. Call it now and then.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        let t = self.since?;
        if now.duration_since(t) < self.every {
            return None;
        }
        if self.held == 0 {
            self.since = None;
            return None;
        }
        self.since = Some(now);
        Some(std::mem::take(&mut self.held))
    }

    pub fn every(&self) -> Duration {
        self.every
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_in_full_then_one_summary_per_period() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = Throttle::new(s(60));
        assert!(t.note(t0));
        for i in 1..=1000 {
            assert!(!t.note(t0 + Duration::from_millis(i * 10)));
        }
        assert_eq!(t.due(t0 + s(30)), None);
        assert_eq!(t.due(t0 + s(60)), Some(1000));
        // Still flooding: held, summed up a period after the summary.
        assert!(!t.note(t0 + s(61)));
        assert!(!t.note(t0 + s(62)));
        assert_eq!(t.due(t0 + s(100)), None);
        assert_eq!(t.due(t0 + s(120)), Some(2));
        // A quiet period closes the window: the next one is logged in full.
        assert_eq!(t.due(t0 + s(180)), None);
        assert!(t.note(t0 + s(500)));
        assert_eq!(t.due(t0 + s(600)), None);
    }
}
