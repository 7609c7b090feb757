//! `lane_class`: a vehicle of a class the lane does not allow stays in the
//! lane for `min_secs`. Once per track.

use super::Judge;
use crate::rules::common::{FrameCtx, PerTrack};
use crate::rules::{Firing, Geometry, Rule};

#[derive(Debug, Default)]
struct LaneClass {
    once: PerTrack,
}

pub(super) fn judge() -> Box<dyn Judge> {
    Box::new(LaneClass::default())
}

impl Judge for LaneClass {
    fn evaluate(&mut self, rule: &Rule, ctx: &FrameCtx) -> Vec<Firing> {
        let Geometry::Lane { allowed, .. } = &rule.geometry else {
            return Vec::new();
        };
        let need = rule.params.min_secs;
        self.once.judge(rule, ctx, |tr, spot, held| {
            let banned = !allowed.is_empty() && !allowed.contains(&tr.class());
            held.hold(
                tr.id,
                spot.inside && banned,
                ctx.t,
                spot.point,
                need,
                f64::INFINITY,
            )
            .map(|_| ctx.fire(tr))
            .into()
        })
    }
}
