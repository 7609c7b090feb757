//! Sharing one model among cameras. Each camera keeps at most one frame in
//! flight (it waits for its result and then takes its newest frame, counting
//! the ones it passed over), so nothing queues up behind a slow model; this
//! queue decides whose frame runs next. It is start-time fair queuing: a
//! camera's job gets a start tag `max(virtual time − 1, its previous finish
//! tag)` and a finish tag `start + 1/weight`; the smallest start tag runs
//! next. A camera is briefly absent after each result (it is tracking and
//! waiting for a newer frame), so plain SFQ (`max(virtual time, …)`) would
//! forget its credit every time and serve everyone equally; the lag of one
//! virtual unit keeps that credit while bounding what a camera that was idle
//! for long can claim (at most `weight` extra jobs). When the model keeps up,
//! every camera gets every frame it asks for; when it cannot, each camera's
//! detection rate drops in proportion to its weight (its `priority`).

use std::collections::HashMap;
use std::sync::Arc;

/// How far (in virtual time) a camera's start tag may trail the queue's.
const MAX_LAG: f64 = 1.0;

struct Entry<T> {
    start: f64,
    seq: u64,
    item: T,
}

/// A weighted fair queue of jobs keyed by flow (camera).
pub struct FairQueue<T> {
    pending: Vec<Entry<T>>,
    finish: HashMap<Arc<str>, f64>,
    vtime: f64,
    seq: u64,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            pending: Vec::new(),
            finish: HashMap::new(),
            vtime: 0.0,
            seq: 0,
        }
    }
}

impl<T> FairQueue<T> {
    /// Queues `item` for flow `key` with `weight` (> 0; larger runs more often).
    pub fn push(&mut self, key: &Arc<str>, weight: f64, item: T) {
        let w = if weight.is_finite() && weight > 0.0 {
            weight
        } else {
            1.0
        };
        let prev = self.finish.get(key).copied().unwrap_or(0.0);
        let start = (self.vtime - MAX_LAG).max(prev);
        self.finish.insert(key.clone(), start + 1.0 / w);
        self.seq += 1;
        self.pending.push(Entry {
            start,
            seq: self.seq,
            item,
        });
    }

    /// The job to run next: smallest start tag, then first come.
    pub fn pop(&mut self) -> Option<T> {
        let i = self
            .pending
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| a.start.total_cmp(&b.start).then(a.seq.cmp(&b.seq)))
            .map(|(i, _)| i)?;
        let e = self.pending.swap_remove(i);
        self.vtime = self.vtime.max(e.start);
        Some(e.item)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flows that each keep one job in flight, as cameras do; the model
    /// serves `capacity` jobs per round of demand. Returns serves per flow.
    fn simulate(weights: &[f64], rounds: usize) -> Vec<usize> {
        let keys: Vec<Arc<str>> = (0..weights.len())
            .map(|i| Arc::from(format!("cam{i}").as_str()))
            .collect();
        let mut q = FairQueue::default();
        for (i, k) in keys.iter().enumerate() {
            q.push(k, weights[i], i);
        }
        let mut served = vec![0; weights.len()];
        for _ in 0..rounds {
            let i = q.pop().unwrap();
            served[i] += 1;
            // The camera gets its result and immediately asks again.
            q.push(&keys[i], weights[i], i);
        }
        served
    }

    #[test]
    fn equal_weights_share_equally() {
        let s = simulate(&[1.0, 1.0, 1.0, 1.0], 1000);
        assert!(s.iter().all(|&n| n == 250), "{s:?}");
    }

    #[test]
    fn weights_set_the_shares_under_overload() {
        let s = simulate(&[2.0, 1.0, 1.0], 1200);
        assert_eq!(s[0] + s[1] + s[2], 1200);
        assert!((595..=605).contains(&s[0]), "{s:?}");
        assert!(
            (295..=305).contains(&s[1]) && (295..=305).contains(&s[2]),
            "{s:?}"
        );
    }

    #[test]
    fn an_idle_camera_gets_a_bounded_burst_on_return() {
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let mut q = FairQueue::default();
        // `a` runs alone for a while.
        for _ in 0..100 {
            q.push(&a, 1.0, 'a');
            assert_eq!(q.pop(), Some('a'));
        }
        // `b` arrives: it may catch up by one job, then they alternate;
        // it does not get the 100 it "missed".
        q.push(&a, 1.0, 'a');
        q.push(&b, 1.0, 'b');
        let mut order = String::new();
        for _ in 0..20 {
            let c = q.pop().unwrap();
            order.push(c);
            q.push(if c == 'a' { &a } else { &b }, 1.0, c);
        }
        let nb = order.matches('b').count();
        assert!((10..=11).contains(&nb), "{order}");
        assert!(!order.contains("bbb"), "{order}");
        assert!(!order[4..].contains("bb"), "{order}");
    }

    /// Cameras are absent for a moment after each result (they track and
    /// wait for a newer frame); the weights must still hold.
    #[test]
    fn weights_hold_when_cameras_return_one_job_late() {
        let keys: Vec<Arc<str>> = ["p2", "a", "b", "c", "d", "e"]
            .iter()
            .map(|s| Arc::from(*s))
            .collect();
        let w = |i: usize| if i == 0 { 2.0 } else { 1.0 };
        let mut q = FairQueue::default();
        for (i, k) in keys.iter().enumerate() {
            q.push(k, w(i), i);
        }
        let mut served = [0usize; 6];
        let mut away: Option<usize> = None;
        for _ in 0..7000 {
            let i = q.pop().unwrap();
            served[i] += 1;
            // The camera served last time comes back now, during this job.
            if let Some(j) = away.take() {
                q.push(&keys[j], w(j), j);
            }
            away = Some(i);
        }
        // Shares 2:1:1:1:1:1 of 7000.
        assert!((1950..=2050).contains(&served[0]), "{served:?}");
        for n in &served[1..] {
            assert!((970..=1030).contains(n), "{served:?}");
        }
    }

    #[test]
    fn first_come_first_served_among_equals() {
        let mut q = FairQueue::default();
        let keys: Vec<Arc<str>> = ["x", "y", "z"].iter().map(|s| Arc::from(*s)).collect();
        for (i, k) in keys.iter().enumerate() {
            q.push(k, 1.0, i);
        }
        assert_eq!(
            (q.pop(), q.pop(), q.pop(), q.pop()),
            (Some(0), Some(1), Some(2), None)
        );
        assert!(q.is_empty());
    }

    #[test]
    fn bad_weights_count_as_one() {
        let s = simulate(&[0.0, f64::NAN, 1.0], 300);
        assert!(s.iter().all(|&n| n == 100), "{s:?}");
    }
}
