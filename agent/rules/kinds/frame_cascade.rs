//! `fire_smoke` and `fight`: a cascade `model` on the whole frame (or the
//! bounding box of the rule's zone), at most once per `interval`.
//! `min_votes` positives in a row start the event, as many negatives in a
//! row end it (`cleared`).

use super::Judge;
use crate::rules::common::FrameCtx;
use crate::rules::{CascadeRequest, EndReason, Firing, Geometry, Phase, Rule};
use crate::track::Track;

/// The cascade's answers on the frame.
#[derive(Debug)]
struct FrameVotes {
    /// Stream time of the last request.
    last_request: f64,
    /// Positives in a row.
    positives: u32,
    /// Negatives in a row.
    negatives: u32,
    /// Best confidence since the event started (or since the last end).
    best: f32,
}

#[derive(Debug)]
struct FrameCascade {
    /// A `start` was sent and no `end` yet.
    active: bool,
    votes: FrameVotes,
}

pub(super) fn judge() -> Box<dyn Judge> {
    Box::new(FrameCascade {
        active: false,
        votes: FrameVotes {
            last_request: f64::NEG_INFINITY,
            positives: 0,
            negatives: 0,
            best: 0.0,
        },
    })
}

impl Judge for FrameCascade {
    fn evaluate(&mut self, rule: &Rule, _ctx: &FrameCtx) -> Vec<Firing> {
        let need = rule.cascade.as_ref().map_or(2, |c| c.min_votes);
        let v = &mut self.votes;
        if !self.active && v.positives >= need {
            self.active = true;
            let mut f = Firing::new(Vec::new());
            f.phase = Some(Phase::Start);
            f.confidence = Some(v.best);
            vec![f]
        } else if self.active && v.negatives >= need {
            self.active = false;
            v.best = 0.0;
            let mut f = Firing::new(Vec::new());
            f.phase = Some(Phase::End);
            f.end_reason = Some(EndReason::Cleared);
            vec![f]
        } else {
            Vec::new()
        }
    }

    fn cascade_requests(
        &mut self,
        rule: &Rule,
        _tracks: &[Track],
        _size: [f64; 2],
        t: f64,
    ) -> Vec<CascadeRequest> {
        let Some(c) = &rule.cascade else {
            return Vec::new();
        };
        if t - self.votes.last_request < c.interval {
            return Vec::new();
        }
        self.votes.last_request = t;
        let crop = match &rule.geometry {
            Geometry::Zone { polygon, .. } => {
                polygon.iter().fold([1.0f64, 1.0, 0.0, 0.0], |b, p| {
                    [
                        b[0].min(p[0]),
                        b[1].min(p[1]),
                        b[2].max(p[0]),
                        b[3].max(p[1]),
                    ]
                })
            }
            _ => [0.0, 0.0, 1.0, 1.0],
        };
        vec![CascadeRequest {
            rule: 0,
            track: None,
            crop,
        }]
    }

    fn cascade_result(&mut self, track: Option<u64>, confidence: f32, positive: bool) {
        if track.is_some() {
            return;
        }
        let v = &mut self.votes;
        if positive {
            v.positives += 1;
            v.negatives = 0;
            v.best = v.best.max(confidence);
        } else {
            v.negatives += 1;
            v.positives = 0;
        }
    }

    fn is_open(&self) -> bool {
        self.active
    }

    fn end_open(&mut self, reason: EndReason) -> Option<Firing> {
        let open = self.active;
        self.active = false;
        self.votes.best = 0.0;
        open.then(|| {
            let mut f = Firing::new(Vec::new());
            f.phase = Some(Phase::End);
            f.end_reason = Some(reason);
            f
        })
    }
}
