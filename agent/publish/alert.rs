//! The alert a rule's firing becomes: type and names from the rule kind's
//! table, the objects with their labels, the measured values (speed, count,
//! dwell, signal, confidence) and references to the thumbnail and plate.

use std::time::SystemTime;

use super::payload::{
    ALERT_SCHEMA, Alert, AlertObject, EvidenceRef, FrameSize, ModelRef, Place, PlateInfo,
    SignalInfo, rfc3339,
};
use crate::rules::{Firing, Geometry, Rule};

/// Everything an alert is built from besides the rule and its firing.
pub struct AlertInput<'a> {
    pub id: String,
    pub agent_id: &'a str,
    pub camera: &'a str,
    pub place: Option<Place>,
    /// Model labels by class index.
    pub labels: &'a [String],
    /// Arrival time of the decision frame.
    pub wall: SystemTime,
    pub frame: FrameSize,
    pub thumbnail: Option<EvidenceRef>,
    pub plate: Option<PlateInfo>,
    pub evidence_pending: bool,
    pub model: ModelRef,
}

impl EvidenceRef {
    /// A JPEG published on `topic`.
    pub fn jpeg(topic: String, width: u32, height: u32, bytes: &[u8]) -> EvidenceRef {
        use sha2::Digest;
        EvidenceRef {
            topic,
            content_type: "image/jpeg".into(),
            width,
            height,
            bytes: bytes.len(),
            sha256: hex::encode(sha2::Sha256::digest(bytes)),
        }
    }
}

/// The label of class `c`, or its index when the model has no such label.
pub fn label(labels: &[String], c: usize) -> String {
    labels.get(c).cloned().unwrap_or_else(|| c.to_string())
}

/// The alert for `firing` of `rule`.
pub fn build(a: AlertInput<'_>, rule: &Rule, f: &Firing) -> Alert {
    let (mut zone, mut line, mut lane) = (None, None, None);
    match &rule.geometry {
        Geometry::Zone { name, .. } => zone = Some(name.clone()),
        Geometry::Line { name, .. } => line = Some(name.clone()),
        Geometry::Lane { name, .. } => lane = Some(name.clone()),
        Geometry::None => {}
    }
    let (name, name_vi) = rule.kind.display_names();
    Alert {
        schema: ALERT_SCHEMA.into(),
        id: a.id,
        kind: rule.kind.event_type().to_string(),
        name: name.to_string(),
        name_vi: name_vi.to_string(),
        agent_id: a.agent_id.to_string(),
        camera: a.camera.to_string(),
        place: a.place,
        rule: rule.name.clone(),
        time: rfc3339(a.wall),
        severity: rule.severity,
        time_source: "agent_clock".into(),
        zone,
        line,
        direction: f.direction,
        lane,
        speed_kmh: f.speed_kmh,
        count: f.count,
        phase: f.phase,
        end_reason: f.end_reason,
        dwell_secs: f.dwell_secs,
        confidence: f.confidence.map(|c| (c * 1000.0).round() / 1000.0),
        signal: f.signal.map(|(state, source)| SignalInfo { state, source }),
        objects: f
            .objects
            .iter()
            .map(|o| AlertObject {
                class: label(a.labels, o.class),
                score: (o.score * 1000.0).round() / 1000.0,
                track_id: o.track_id,
                bbox: o.bbox.map(|v| (v * 10000.0).round() / 10000.0),
            })
            .collect(),
        frame: a.frame,
        thumbnail: a.thumbnail,
        plate: a.plate,
        evidence_pending: a.evidence_pending,
        model: a.model,
        agent_version: env!("CARGO_PKG_VERSION").into(),
    }
}
