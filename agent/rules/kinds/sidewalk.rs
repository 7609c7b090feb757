//! `sidewalk`: a vehicle stays in the (pedestrian) zone for `min_secs`.
//! Once per track.

use super::Judge;
use crate::rules::common::{FrameCtx, PerTrack};
use crate::rules::{Firing, Rule};

#[derive(Debug, Default)]
struct Sidewalk {
    once: PerTrack,
}

pub(super) fn judge() -> Box<dyn Judge> {
    Box::new(Sidewalk::default())
}

impl Judge for Sidewalk {
    fn evaluate(&mut self, rule: &Rule, ctx: &FrameCtx) -> Vec<Firing> {
        let need = rule.params.min_secs;
        self.once.judge(rule, ctx, |tr, spot, held| {
            held.hold(tr.id, spot.inside, ctx.t, spot.point, need, f64::INFINITY)
                .map(|_| ctx.fire(tr))
                .into()
        })
    }
}
