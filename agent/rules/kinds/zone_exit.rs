//! `zone_exit`: a tracked object that was seen in the zone (while confirmed)
//! is seen outside it. Once per track.

use std::collections::HashSet;

use super::Judge;
use crate::rules::common::{FrameCtx, PerTrack, Verdict};
use crate::rules::{Firing, Rule};

#[derive(Debug, Default)]
struct ZoneExit {
    once: PerTrack,
    /// Tracks seen in the zone.
    were_inside: HashSet<u64>,
}

pub(super) fn judge() -> Box<dyn Judge> {
    Box::new(ZoneExit::default())
}

impl Judge for ZoneExit {
    fn evaluate(&mut self, rule: &Rule, ctx: &FrameCtx) -> Vec<Firing> {
        self.were_inside.retain(|id| ctx.is_live(*id));
        let were_inside = &mut self.were_inside;
        self.once.judge(rule, ctx, |tr, spot, _| {
            if spot.inside {
                were_inside.insert(tr.id);
                Verdict::Wait
            } else if were_inside.remove(&tr.id) {
                Verdict::Fire(ctx.fire(tr))
            } else {
                Verdict::Wait
            }
        })
    }
}
