//! `line_cross` and `lane_line`: a track's history crosses the line in the
//! rule's `direction`. Once per track.

use super::Judge;
use crate::rules::common::{FrameCtx, PerTrack, first_crossing};
use crate::rules::{Firing, Geometry, Rule, observed_direction};

#[derive(Debug, Default)]
struct LineCross {
    once: PerTrack,
}

pub(super) fn judge() -> Box<dyn Judge> {
    Box::new(LineCross::default())
}

impl Judge for LineCross {
    fn evaluate(&mut self, rule: &Rule, ctx: &FrameCtx) -> Vec<Firing> {
        let Geometry::Line { points, .. } = &rule.geometry else {
            return Vec::new();
        };
        self.once.judge(rule, ctx, |tr, _, _| {
            first_crossing(tr, *points, rule.direction, ctx)
                .map(|step| {
                    let mut f = ctx.fire(tr);
                    f.direction = Some(observed_direction(step.from, step.to));
                    f
                })
                .into()
        })
    }
}
