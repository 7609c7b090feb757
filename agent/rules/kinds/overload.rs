//! `overload`: more than `max_count` persons ride one motorbike for
//! `min_secs`. Once per bike; the riders are objects of the alert too.

use super::Judge;
use crate::rules::common::{FrameCtx, PerTrack, on_bike};
use crate::rules::{Firing, Rule};
use crate::track::Track;

#[derive(Debug, Default)]
struct Overload {
    once: PerTrack,
}

pub(super) fn judge() -> Box<dyn Judge> {
    Box::new(Overload::default())
}

impl Judge for Overload {
    fn evaluate(&mut self, rule: &Rule, ctx: &FrameCtx) -> Vec<Firing> {
        let p = &rule.params;
        self.once.judge(rule, ctx, |tr, spot, held| {
            let riders: Vec<&Track> = ctx
                .tracks
                .iter()
                .filter(|o| {
                    o.matched && Some(o.class()) == ctx.person && on_bike(&o.bbox, &tr.bbox)
                })
                .collect();
            let over = riders.len() as u32 > p.max_count;
            held.hold(tr.id, over, ctx.t, spot.point, p.min_secs, f64::INFINITY)
                .map(|_| {
                    let mut f = ctx.fire(tr);
                    f.objects.extend(riders.iter().map(|r| ctx.object(r)));
                    f.count = Some(riders.len() as u32);
                    f
                })
                .into()
        })
    }
}
