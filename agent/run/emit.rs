//! A firing leaves the camera: the alert (built by publish) with its
//! thumbnail goes to the outbox, then the evidence package (clip, pictures,
//! plate, signature) to the evidence store.

use std::sync::Arc;

use tracing::{info, warn};

use super::camera::Camera;
use crate::decode::Frame;
use crate::evidence::{self, camera::CameraEvidence};
use crate::publish::Outgoing;
use crate::publish::alert::{self, AlertInput};
use crate::publish::payload::{EvidenceRef, FrameSize, ModelRef};
use crate::rules::{Firing, Rule};

/// Says (once per process at warn, then at debug) that thumbnails are cut
/// down to fit the packet limit.
fn shrunk_note(side: u32, budget: usize) {
    static TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !TOLD.swap(true, std::sync::atomic::Ordering::Relaxed) {
        warn!(
            side,
            budget,
            "thumbnail shrunk to fit mqtt.max_packet_bytes; raise it (or lower thumbnail_max_side) for full-size thumbnails"
        );
    } else {
        tracing::debug!(
            side,
            budget,
            "thumbnail shrunk to fit mqtt.max_packet_bytes"
        );
    }
}

/// Publishes the alert for `f` and submits its evidence package.
pub(super) async fn emit(
    camera: &Camera,
    frame: &Arc<Frame>,
    rule: &Rule,
    f: &Firing,
    labels: &[String],
    ev: &CameraEvidence,
) {
    let id = ulid::Ulid::from_datetime(frame.wall).to_string();
    let track = f.objects.first().map(|o| o.track_id).unwrap_or(0);
    let geometry = rule.geometry.clone();
    let boxes: Vec<[f32; 4]> = f.objects.iter().map(|o| o.bbox).collect();
    let max_side = camera.cam.thumbnail_max_side;
    let fr = frame.clone();
    let topic = camera.sh.publisher.topics.thumbnail(&id);
    // A thumbnail must fit one MQTT packet: one that does not would break
    // the connection, and be re-sent first on every reconnect.
    let budget = camera.sh.publisher.thumbnail_budget(&topic);
    let jpeg = tokio::task::spawn_blocking(move || {
        evidence::thumbnail_within(&fr, max_side, Some(&geometry), &boxes, budget)
    })
    .await
    .ok()
    .and_then(|r| r.map_err(|e| warn!(error = %e, "thumbnail failed")).ok())
    .and_then(|t| match t {
        Some((j, shrunk)) => {
            if shrunk {
                shrunk_note(j.width.max(j.height), budget);
            }
            Some(j)
        }
        None => {
            warn!(event_id = %id, budget, "no thumbnail fits the MQTT packet limit; the alert goes without one — raise mqtt.max_packet_bytes");
            None
        }
    });
    let manifest = &camera.detector.manifest;
    let input = AlertInput {
        id: id.clone(),
        agent_id: &camera.sh.agent_id,
        camera: camera.id(),
        place: camera
            .cam
            .config
            .place
            .as_ref()
            .map(|p| p.get_ref().clone()),
        labels,
        wall: frame.wall,
        frame: FrameSize {
            width: frame.width,
            height: frame.height,
        },
        thumbnail: jpeg
            .as_ref()
            .map(|j| EvidenceRef::jpeg(topic, j.width, j.height, &j.bytes)),
        plate: ev.plates.best(track).map(|b| b.0.clone()),
        evidence_pending: camera.sh.evidence.is_some(),
        model: ModelRef {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
        },
    };
    let alert = alert::build(input, rule, f);
    let class = f
        .objects
        .first()
        .map(|o| alert::label(labels, o.class))
        .unwrap_or_default();
    info!(event_id = %id, r#type = %alert.kind, rule = %rule.name, severity = %rule.severity.as_str(), class = %class, track, "alert");
    camera.status(|s| {
        s.alerts += 1;
        *s.events.entry(alert.kind.clone()).or_default() += 1;
    });
    let for_evidence = camera.sh.evidence.as_ref().map(|_| alert.clone());
    camera
        .sh
        .publisher
        .send(Outgoing {
            alert,
            thumbnail: jpeg.map(|j| j.bytes),
        })
        .await;
    if let (Some(store), Some(alert)) = (&camera.sh.evidence, for_evidence) {
        let session = evidence::lock_ring(&camera.ring).session();
        let pkg = evidence::camera::package(
            evidence::camera::PackageInput {
                alert,
                frame: frame.clone(),
                camera: camera.id(),
                rule,
                firing: f,
                session,
                ring: camera.ring.clone(),
                overview_max_side: camera.sh.evidence_cfg.overview_max_side,
                time_zone: camera.sh.time_zone,
            },
            ev,
        )
        .await;
        store.submit(pkg);
    }
}
