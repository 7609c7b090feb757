//! Staying in a zone for `dwell_secs`: `illegal_stop` and `illegal_parking`
//! (a vehicle standing still, drifting at most `max_move`), `loitering` (a
//! person, moving freely). Once per track; the alert carries the dwell.

use super::Judge;
use crate::rules::common::{FrameCtx, PerTrack};
use crate::rules::{Firing, Rule};

#[derive(Debug, Default)]
struct Dwell {
    once: PerTrack,
    /// Whether moving more than `max_move` restarts the clock.
    standing: bool,
}

/// `illegal_stop`, `illegal_parking`.
pub(super) fn standing() -> Box<dyn Judge> {
    Box::new(Dwell {
        standing: true,
        ..Dwell::default()
    })
}

/// `loitering`.
pub(super) fn loitering() -> Box<dyn Judge> {
    Box::new(Dwell::default())
}

impl Judge for Dwell {
    fn evaluate(&mut self, rule: &Rule, ctx: &FrameCtx) -> Vec<Firing> {
        let p = &rule.params;
        let drift = if self.standing {
            p.max_move
        } else {
            f64::INFINITY
        };
        self.once.judge(rule, ctx, |tr, spot, held| {
            held.hold(tr.id, spot.inside, ctx.t, spot.point, p.dwell_secs, drift)
                .map(|d| {
                    let mut f = ctx.fire(tr);
                    f.dwell_secs = Some((d * 10.0).round() / 10.0);
                    f
                })
                .into()
        })
    }
}
