//! `stop_line`: a vehicle stands on or past the stop line (the line passes
//! under the lower half of its box) while the signal is red, or always
//! without a signal, for `min_secs`. Once per track.

use super::Judge;
use crate::rules::common::{FrameCtx, PerTrack};
use crate::rules::{Firing, Geometry, Light, Rule, segments_cross};

#[derive(Debug, Default)]
struct StopLine {
    once: PerTrack,
}

pub(super) fn judge() -> Box<dyn Judge> {
    Box::new(StopLine::default())
}

impl Judge for StopLine {
    fn evaluate(&mut self, rule: &Rule, ctx: &FrameCtx) -> Vec<Firing> {
        let Geometry::Line { points, .. } = &rule.geometry else {
            return Vec::new();
        };
        let p = &rule.params;
        let light = ctx.light_at(ctx.t);
        let red = !ctx.has_signal || light.is_some_and(|(l, _)| l == Light::Red);
        let (w, h) = (ctx.w, ctx.h);
        self.once.judge(rule, ctx, |tr, spot, held| {
            let b = tr.bbox;
            let (l, r, bottom) = (
                [b[0] as f64 / w, b[3] as f64 / h],
                [b[2] as f64 / w, b[3] as f64 / h],
                b[3] as f64 / h,
            );
            let mid = [
                (b[0] + b[2]) as f64 / 2.0 / w,
                (b[1] as f64 / h + bottom) / 2.0,
            ];
            // On the line: it passes under the lower half of the box.
            let over = segments_cross(l, r, points[0], points[1])
                || segments_cross(mid, spot.point, points[0], points[1]);
            held.hold(
                tr.id,
                over && red,
                ctx.t,
                spot.point,
                p.min_secs,
                p.max_move,
            )
            .map(|_| {
                let mut f = ctx.fire(tr);
                f.signal = light.filter(|_| ctx.has_signal);
                f
            })
            .into()
        })
    }
}
