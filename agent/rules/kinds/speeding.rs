//! `speeding`: calibrated ground speed above `speed_limit_kmh` for
//! `min_secs`. Once per track; the alert carries the speed.

use super::Judge;
use crate::rules::common::{FrameCtx, PerTrack, speed_kmh};
use crate::rules::{Firing, Rule};

#[derive(Debug, Default)]
struct Speeding {
    once: PerTrack,
}

pub(super) fn judge() -> Box<dyn Judge> {
    Box::new(Speeding::default())
}

impl Judge for Speeding {
    fn evaluate(&mut self, rule: &Rule, ctx: &FrameCtx) -> Vec<Firing> {
        let p = &rule.params;
        self.once.judge(rule, ctx, |tr, spot, held| {
            let speed = ctx
                .calibration
                .and_then(|hm| speed_kmh(tr, &hm, ctx.w, ctx.h));
            let over = speed.is_some_and(|v| v > p.speed_limit_kmh);
            held.hold(tr.id, over, ctx.t, spot.point, p.min_secs, f64::INFINITY)
                .map(|_| {
                    let mut f = ctx.fire(tr);
                    f.speed_kmh = speed.map(|v| (v * 10.0).round() / 10.0);
                    f
                })
                .into()
        })
    }
}
