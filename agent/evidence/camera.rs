//! What the evidence stage keeps per camera while frames pass: the best
//! close-up of each track and, with `[evidence.plates]`, plate readings of
//! vehicle tracks. Both are optional enrichment: a failed plate read is
//! returned to the camera task, which logs and counts it and goes on.

use std::sync::Arc;

use crate::decode::Frame;
use crate::infer::InferError;
use crate::track::Track;

use super::config::PlatesConfig;
use super::plates::PlateModels;
use super::{BestShots, PlateBook};

/// The plate cascade with its limits.
#[derive(Clone)]
pub struct PlateSetup {
    pub models: PlateModels,
    pub cfg: PlatesConfig,
}

/// One camera's evidence state.
#[derive(Default)]
pub struct CameraEvidence {
    pub shots: BestShots,
    pub plates: PlateBook,
    setup: Option<Arc<PlateSetup>>,
}

impl CameraEvidence {
    pub fn new(setup: Option<Arc<PlateSetup>>) -> CameraEvidence {
        CameraEvidence {
            setup,
            ..CameraEvidence::default()
        }
    }

    /// Updates the close-ups with the tracks seen in `frame`, then reads the
    /// plates of the vehicles that are due (per-track interval and count).
    pub async fn observe(
        &mut self,
        frame: &Arc<Frame>,
        tracks: &[Track],
        labels: &[String],
    ) -> Result<(), InferError> {
        let seen: Vec<(u64, [f32; 4], f32)> = tracks
            .iter()
            .filter(|t| t.last_seen == frame.pts)
            .map(|t| (t.id, t.bbox, t.score))
            .collect();
        self.shots.update(frame, &seen);
        let Some(p) = &self.setup else {
            return Ok(());
        };
        let pc = &p.cfg;
        self.plates.retain(|id| tracks.iter().any(|t| t.id == id));
        for t in tracks.iter().filter(|t| t.last_seen == frame.pts) {
            let is_vehicle = labels
                .get(t.class())
                .is_some_and(|l| pc.classes.contains(l));
            if !is_vehicle
                || !self.plates.due(
                    t.id,
                    frame.pts,
                    pc.min_interval_secs,
                    pc.max_reads_per_track,
                )
            {
                continue;
            }
            let reading = p.models.read(frame.clone(), t.bbox).await?;
            let with_crop = reading.map(|r| {
                let crop = super::crop_rgb(frame, r.bbox, 0.1, 400)
                    .and_then(|img| super::encode_jpeg(&img, 90).ok());
                (r.plate, crop)
            });
            self.plates.record(t.id, frame.pts, with_crop);
        }
        Ok(())
    }
}

/// What an evidence package is made from, besides the camera's evidence state.
pub struct PackageInput<'a> {
    pub alert: crate::publish::Alert,
    pub frame: Arc<Frame>,
    pub camera: &'a str,
    pub rule: &'a crate::rules::Rule,
    pub firing: &'a crate::rules::Firing,
    /// The ring's session the event belongs to.
    pub session: u64,
    pub ring: Arc<std::sync::Mutex<super::ring::GopRing>>,
    pub overview_max_side: u32,
}

/// The package for one alert: the overview picture (geometry, boxes and a
/// banner burnt in), the close-up and the plate crop of the main object.
pub async fn package(p: PackageInput<'_>, ev: &CameraEvidence) -> super::Package {
    let track = p.firing.objects.first().map(|o| o.track_id).unwrap_or(0);
    let fr = p.frame.clone();
    let geometry = p.rule.geometry.clone();
    let boxes: Vec<([f32; 4], u64)> = p
        .firing
        .objects
        .iter()
        .map(|o| (o.bbox, o.track_id))
        .collect();
    let banner = format!(
        "{} {} {}",
        p.camera,
        chrono::DateTime::<chrono::Utc>::from(p.frame.wall).format("%Y-%m-%d %H:%M:%S%.3f UTC"),
        p.rule.name
    );
    let max_side = p.overview_max_side;
    let closeup = ev.shots.get(track).cloned();
    let plate_crop = ev.plates.best(track).and_then(|b| b.1.clone());
    let pictures = tokio::task::spawn_blocking(move || {
        let ov = super::overview(&fr, max_side, Some(&geometry), &boxes, &banner)
            .map(|j| j.bytes)
            .map_err(|e| tracing::warn!(error = %e, "overview picture failed"))
            .ok();
        let cu = closeup.and_then(|img| super::encode_jpeg(&img, 90).ok());
        (ov, cu)
    })
    .await
    .unwrap_or((None, None));
    super::Package {
        alert: p.alert,
        event_pts_ns: (p.frame.pts.max(0.0) * 1e9) as u64,
        event_wall: p.frame.wall,
        session: p.session,
        ring: p.ring,
        overview: pictures.0,
        closeup: pictures.1,
        plate_crop,
    }
}
