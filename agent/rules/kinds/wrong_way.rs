//! `wrong_way`: in the lane, a vehicle has moved at least `min_distance`
//! against the lane's arrow over at least `min_secs`. Once per track.

use super::Judge;
use crate::rules::common::{FrameCtx, PerTrack, Verdict};
use crate::rules::{Firing, Geometry, Rule, observed_direction, point_in_polygon};

#[derive(Debug, Default)]
struct WrongWay {
    once: PerTrack,
}

pub(super) fn judge() -> Box<dyn Judge> {
    Box::new(WrongWay::default())
}

impl Judge for WrongWay {
    fn evaluate(&mut self, rule: &Rule, ctx: &FrameCtx) -> Vec<Firing> {
        let Geometry::Lane { polygon, arrow, .. } = &rule.geometry else {
            return Vec::new();
        };
        let p = &rule.params;
        let (dx, dy) = (arrow[1][0] - arrow[0][0], arrow[1][1] - arrow[0][1]);
        let len = dx.hypot(dy);
        self.once.judge(rule, ctx, |tr, spot, _| {
            if !spot.inside {
                return Verdict::Wait;
            }
            // The stretch of history spent in the lane, up to now.
            let in_lane: Vec<(f64, [f64; 2])> = tr
                .history
                .iter()
                .rev()
                .map(|(ht, hp)| (*ht, ctx.norm(*hp)))
                .take_while(|(_, hp)| point_in_polygon(*hp, polygon))
                .collect();
            let (Some(last), Some(first)) = (in_lane.first(), in_lane.last()) else {
                return Verdict::Wait;
            };
            let along = ((last.1[0] - first.1[0]) * dx + (last.1[1] - first.1[1]) * dy) / len;
            if along <= -p.min_distance && last.0 - first.0 >= p.min_secs {
                let mut f = ctx.fire(tr);
                f.direction = Some(observed_direction(first.1, last.1));
                Verdict::Fire(f)
            } else {
                Verdict::Wait
            }
        })
    }
}
