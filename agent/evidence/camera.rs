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
    /// The site's time zone, for the time in the banner.
    pub time_zone: chrono_tz::Tz,
}

/// The overview picture's banner: the camera and where it is, then the
/// time in the site's zone (offset written, dd/mm/yyyy) and the rule.
pub fn banner(
    camera: &str,
    place: Option<&crate::publish::payload::Place>,
    wall: std::time::SystemTime,
    tz: chrono_tz::Tz,
    rule: &str,
) -> String {
    let when = chrono::DateTime::<chrono::Utc>::from(wall)
        .with_timezone(&tz)
        .format("%d/%m/%Y %H:%M:%S%.3f UTC%:z");
    match place {
        Some(p) => format!("{camera} | {}\n{when} | {rule}", p.line()),
        None => format!("{camera}\n{when} | {rule}"),
    }
}

/// The package for one alert: the overview picture (geometry, boxes and a
/// [`banner`] burnt in), the close-up and the plate crop of the main object.
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
    let banner = banner(
        p.camera,
        p.alert.place.as_ref(),
        p.frame.wall,
        p.time_zone,
        &p.rule.name,
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

#[cfg(test)]
mod tests {
    use super::banner;
    use crate::publish::payload::{AdminUnit, Place};
    use std::time::{Duration, SystemTime};

    #[test]
    fn the_banner_says_where_and_when_in_the_site_zone() {
        // 2026-12-01T10:04:12.345Z is 17:04:12.345 in Vietnam.
        let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_119_452_345);
        let place = Place {
            name: "Ngã tư Hàng Bạc".into(),
            ward: Some(AdminUnit {
                code: "00070".into(),
                name: "Phường Hoàn Kiếm".into(),
            }),
            ..Place::default()
        };
        let b = banner(
            "cam-1",
            Some(&place),
            wall,
            chrono_tz::Asia::Ho_Chi_Minh,
            "red light",
        );
        assert_eq!(
            b,
            "cam-1 | Ngã tư Hàng Bạc, Phường Hoàn Kiếm\n01/12/2026 17:04:12.345 UTC+07:00 | red light"
        );
        let utc = banner("cam-1", None, wall, chrono_tz::UTC, "r");
        assert_eq!(utc, "cam-1\n01/12/2026 10:04:12.345 UTC+00:00 | r");
    }
}
