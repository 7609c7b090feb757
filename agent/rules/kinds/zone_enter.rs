//! `zone_enter` and `intrusion`: a tracked object is in the zone while the
//! rule's `schedule` (if any) is active. Once per track.

use super::Judge;
use crate::rules::Firing;
use crate::rules::Rule;
use crate::rules::common::{FrameCtx, PerTrack, Verdict};

#[derive(Debug, Default)]
struct ZoneEnter {
    once: PerTrack,
}

pub(super) fn judge() -> Box<dyn Judge> {
    Box::new(ZoneEnter::default())
}

impl Judge for ZoneEnter {
    fn evaluate(&mut self, rule: &Rule, ctx: &FrameCtx) -> Vec<Firing> {
        let scheduled = rule.params.schedule.is_none_or(|s| s.active(ctx.wall));
        self.once.judge(rule, ctx, |tr, spot, _| {
            if spot.inside && scheduled {
                Verdict::Fire(ctx.fire(tr))
            } else {
                Verdict::Wait
            }
        })
    }
}
