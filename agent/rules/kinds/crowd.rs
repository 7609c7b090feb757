//! `crowd`: more than `max_count` persons in the zone for `min_secs` starts
//! the event; `max_count` or fewer for `min_secs` ends it (`cleared`). Every
//! live track seen in the last second counts, so that one missed detection
//! does not restart the timers.

use super::Judge;
use crate::rules::common::FrameCtx;
use crate::rules::{EndReason, Firing, Phase, Rule};
use crate::track::Track;

/// The zone-level event of one crowd rule.
#[derive(Debug, Default)]
struct CrowdState {
    /// A `start` was sent and no `end` yet.
    active: bool,
    /// Since when the zone has been over `max_count`.
    since: Option<f64>,
    /// Since when an active crowd has been at or under `max_count`.
    clear_since: Option<f64>,
    /// Persons counted in the zone at the last frame (an `end` for a stop
    /// or a lost stream reports it).
    count: u32,
}

pub(super) fn judge() -> Box<dyn Judge> {
    Box::new(CrowdState::default())
}

impl Judge for CrowdState {
    fn evaluate(&mut self, rule: &Rule, ctx: &FrameCtx) -> Vec<Firing> {
        let (p, t) = (&rule.params, ctx.t);
        let counted = |tr: &Track| {
            t - tr.last_seen <= 1.0
                && tr.confirmed(rule.min_hits)
                && rule.applies_to(tr.class())
                && tr.best_score >= rule.min_score
        };
        let inside: Vec<&Track> = ctx
            .tracks
            .iter()
            .filter(|tr| counted(tr) && rule.geometry.contains(ctx.norm(tr.anchor())))
            .collect();
        let n = inside.len() as u32;
        self.count = n;
        let firing = |phase| {
            let mut f = Firing::new(inside.iter().map(|tr| ctx.object(tr)).collect());
            f.count = Some(n);
            f.phase = Some(phase);
            f
        };
        let mut out = Vec::new();
        if n > p.max_count {
            self.clear_since = None;
            let s0 = *self.since.get_or_insert(t);
            if !self.active && t - s0 >= p.min_secs {
                self.active = true;
                out.push(firing(Phase::Start));
            }
        } else {
            self.since = None;
            if self.active {
                let c0 = *self.clear_since.get_or_insert(t);
                if t - c0 >= p.min_secs {
                    self.active = false;
                    self.clear_since = None;
                    let mut f = firing(Phase::End);
                    f.end_reason = Some(EndReason::Cleared);
                    out.push(f);
                }
            }
        }
        out
    }

    fn is_open(&self) -> bool {
        self.active
    }

    fn end_open(&mut self, reason: EndReason) -> Option<Firing> {
        let (open, count) = (self.active, self.count);
        *self = CrowdState::default();
        open.then(|| {
            let mut f = Firing::new(Vec::new());
            f.phase = Some(Phase::End);
            f.end_reason = Some(reason);
            f.count = Some(count);
            f
        })
    }
}
