//! `red_light`: a track crosses the stop line (in `direction`) while the
//! signal is red both just before and just after the crossing step (a light
//! that changed during the step gets the benefit of the doubt). A track that
//! crossed on another light is never judged again.

use super::Judge;
use crate::rules::common::{FrameCtx, PerTrack, Verdict, first_crossing};
use crate::rules::{Firing, Geometry, Light, Rule, observed_direction};

#[derive(Debug, Default)]
struct RedLight {
    once: PerTrack,
}

pub(super) fn judge() -> Box<dyn Judge> {
    Box::new(RedLight::default())
}

impl Judge for RedLight {
    fn evaluate(&mut self, rule: &Rule, ctx: &FrameCtx) -> Vec<Firing> {
        let Geometry::Line { points, .. } = &rule.geometry else {
            return Vec::new();
        };
        self.once.judge(rule, ctx, |tr, _, _| {
            let Some(step) = first_crossing(tr, *points, rule.direction, ctx) else {
                return Verdict::Wait;
            };
            match (ctx.light_at(step.t0), ctx.light_at(step.t1)) {
                (Some((Light::Red, src)), Some((Light::Red, _))) => {
                    let mut f = ctx.fire(tr);
                    f.direction = Some(observed_direction(step.from, step.to));
                    f.signal = Some((Light::Red, src));
                    Verdict::Fire(f)
                }
                _ => Verdict::Never,
            }
        })
    }
}
