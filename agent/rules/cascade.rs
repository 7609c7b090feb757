//! Running the cascade models a camera's rules ask for (no_helmet on crops of
//! tracked objects, fire_smoke / fight on the frame or a zone) and feeding
//! the results back to the rules. A failed model run is returned to the
//! camera task, which logs and counts it: cascades are enrichment, they
//! never end a camera session.

use std::collections::HashMap;
use std::sync::Arc;

use crate::decode::Frame;
use crate::infer::{DetectorHandle, InferError};
use crate::track::Track;

use super::RuleEngine;

/// The cascade runs due for this frame, run and fed back to `rules`.
pub async fn run(
    rules: &mut RuleEngine,
    tracks: &[Track],
    frame: &Arc<Frame>,
    models: &HashMap<String, DetectorHandle>,
    camera: &str,
    priority: f64,
) -> Result<(), InferError> {
    for req in rules.cascade_requests(tracks, frame.width, frame.height, frame.pts) {
        let Some(c) = rules.rules[req.rule].cascade.clone() else {
            continue;
        };
        let Some(model) = models.get(&c.model) else {
            continue;
        };
        let (fw, fh) = (frame.width as f64, frame.height as f64);
        let crop = [
            (req.crop[0] * fw).max(0.0) as usize,
            (req.crop[1] * fh).max(0.0) as usize,
            ((req.crop[2] - req.crop[0]) * fw).max(1.0) as usize,
            ((req.crop[3] - req.crop[1]) * fh).max(1.0) as usize,
        ];
        let out = model
            .for_camera(camera, priority)
            .infer(frame.clone(), Some(crop))
            .await?;
        let labels = &model.manifest.labels;
        let wanted = |i: usize| labels.get(i).is_some_and(|l| c.labels.contains(l));
        let conf = if out.scores.is_empty() {
            out.detections
                .iter()
                .filter(|d| wanted(d.class))
                .map(|d| d.score)
                .fold(0.0, f32::max)
        } else {
            out.scores
                .iter()
                .enumerate()
                .filter(|(i, _)| wanted(*i))
                .map(|(_, s)| *s)
                .fold(0.0, f32::max)
        };
        rules.cascade_result(&req, conf);
    }
    Ok(())
}
