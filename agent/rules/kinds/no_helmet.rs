//! `no_helmet`: a cascade `model` on crops of each tracked rider (the
//! `region` of its box, by default the upper half) finds one of `labels`
//! `min_votes` times. At most one run per track per `interval`, at most
//! [`MAX_CASCADES_PER_FRAME`] per frame, least recently checked first. Once
//! per track; the alert carries the best confidence.

use std::collections::HashMap;

use super::Judge;
use crate::rules::common::{FrameCtx, PerTrack, Verdict};
use crate::rules::{CascadeRequest, CropRegion, Firing, MAX_CASCADES_PER_FRAME, Rule};
use crate::track::Track;

/// The cascade's answers for one track.
#[derive(Debug, Clone, Copy)]
struct Votes {
    positives: u32,
    /// Stream time of the last request.
    last_request: f64,
    /// Best confidence among the positives.
    best: f32,
}

#[derive(Debug, Default)]
struct NoHelmet {
    once: PerTrack,
    votes: HashMap<u64, Votes>,
}

pub(super) fn judge() -> Box<dyn Judge> {
    Box::new(NoHelmet::default())
}

impl Judge for NoHelmet {
    fn evaluate(&mut self, rule: &Rule, ctx: &FrameCtx) -> Vec<Firing> {
        self.votes.retain(|id, _| ctx.is_live(*id));
        let need = rule.cascade.as_ref().map_or(2, |c| c.min_votes);
        let votes = &self.votes;
        self.once
            .judge(rule, ctx, |tr, _, _| match votes.get(&tr.id) {
                Some(v) if v.positives >= need => {
                    let mut f = ctx.fire(tr);
                    f.confidence = Some(v.best);
                    Verdict::Fire(f)
                }
                _ => Verdict::Wait,
            })
    }

    fn cascade_requests(
        &mut self,
        rule: &Rule,
        tracks: &[Track],
        [w, h]: [f64; 2],
        t: f64,
    ) -> Vec<CascadeRequest> {
        let Some(c) = &rule.cascade else {
            return Vec::new();
        };
        let last = |id: u64| self.votes.get(&id).map(|v| v.last_request);
        let mut cands: Vec<&Track> = tracks
            .iter()
            .filter(|tr| {
                tr.matched
                    && tr.confirmed(rule.min_hits)
                    && !self.once.is_done(tr.id)
                    && tr.best_score >= rule.min_score
            })
            .filter(|tr| rule.applies_to(tr.class()))
            .filter(|tr| last(tr.id).is_none_or(|l| t - l >= c.interval))
            .collect();
        cands.sort_by(|a, b| {
            let la = last(a.id).unwrap_or(f64::NEG_INFINITY);
            let lb = last(b.id).unwrap_or(f64::NEG_INFINITY);
            la.total_cmp(&lb).then(a.id.cmp(&b.id))
        });
        let mut out = Vec::new();
        for tr in cands.into_iter().take(MAX_CASCADES_PER_FRAME) {
            let b = tr.bbox;
            let (x1, y1, x2, y2) = (
                b[0] as f64 / w,
                b[1] as f64 / h,
                b[2] as f64 / w,
                b[3] as f64 / h,
            );
            let y2 = match c.region {
                CropRegion::Box => y2,
                CropRegion::UpperHalf => y1 + (y2 - y1) / 2.0,
                CropRegion::UpperThird => y1 + (y2 - y1) / 3.0,
            };
            let v = self.votes.entry(tr.id).or_insert(Votes {
                positives: 0,
                last_request: t,
                best: 0.0,
            });
            v.last_request = t;
            out.push(CascadeRequest {
                rule: 0,
                track: Some(tr.id),
                crop: [x1, y1, x2, y2],
            });
        }
        out
    }

    fn cascade_result(&mut self, track: Option<u64>, confidence: f32, positive: bool) {
        let Some(id) = track else { return };
        let v = self.votes.entry(id).or_insert(Votes {
            positives: 0,
            last_request: f64::NEG_INFINITY,
            best: 0.0,
        });
        if positive {
            v.positives += 1;
            v.best = v.best.max(confidence);
        }
    }
}
