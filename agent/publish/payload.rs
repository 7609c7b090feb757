//! Payloads of the MQTT contract (schema `ioc.alert/1`, `ioc.status/1`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::config::Direction;

pub const ALERT_SCHEMA: &str = "ioc.alert/1";
pub const STATUS_SCHEMA: &str = "ioc.status/1";

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One alert on `{prefix}/{agent_id}/events`.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub schema: &'static str,
    /// ULID: unique and sortable by time; the IOC de-duplicates by it.
    pub id: String,
    /// `object.zone_enter` or `object.line_cross`.
    #[serde(rename = "type")]
    pub kind: String,
    pub agent_id: String,
    pub camera: String,
    /// Rule name from the config.
    pub rule: String,
    /// Time of the decision frame (agent clock at receipt), RFC 3339 UTC.
    pub time: String,
    /// Where `time` comes from: `agent_clock`.
    pub time_source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    pub objects: Vec<AlertObject>,
    /// Size of the analysed frame in pixels.
    pub frame: FrameSize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<EvidenceRef>,
    pub model: ModelRef,
    pub agent_version: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertObject {
    pub class: String,
    pub score: f32,
    pub track_id: u64,
    /// `[x1, y1, x2, y2]`, normalised to 0..1 of the frame.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct FrameSize {
    pub width: u32,
    pub height: u32,
}

/// A piece of evidence published or stored beside the alert.
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceRef {
    pub topic: String,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
    pub bytes: usize,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
}

/// Per-camera state for the status message.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CameraStatus {
    /// `connecting`, `streaming`, `retrying` or `stopped`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<[u32; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_frame_at: Option<String>,
    /// Last error, with credentials removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub frames_received: u64,
    pub frames_decoded: u64,
    pub frames_inferred: u64,
    /// Frames not given to the model, by reason: `rate` (not due at
    /// detect_fps), `busy` (replaced by a newer frame), `backlog` (whole GOPs
    /// dropped in front of a slow decoder), `no_keyframe` (before the first keyframe).
    pub frames_skipped: SkipCounts,
    pub alerts: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct SkipCounts {
    pub rate: u64,
    pub busy: u64,
    pub backlog: u64,
    pub no_keyframe: u64,
}

#[derive(Debug, Serialize)]
struct StatusMsg<'a> {
    schema: &'static str,
    agent_id: &'a str,
    state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    version: &'static str,
    time: String,
    started_at: String,
    uptime_secs: u64,
    cameras: BTreeMap<String, CameraStatus>,
    alerts_published: u64,
    alerts_dropped: u64,
}

/// Shared, always-current picture of the agent for the status message.
pub struct StatusBoard {
    pub agent_id: String,
    pub started: SystemTime,
    cameras: Mutex<BTreeMap<String, CameraStatus>>,
    pub counters: std::sync::Arc<super::PublishCounters>,
}

impl StatusBoard {
    pub fn new(agent_id: &str) -> StatusBoard {
        StatusBoard {
            agent_id: agent_id.to_string(),
            started: SystemTime::now(),
            cameras: Mutex::new(BTreeMap::new()),
            counters: Default::default(),
        }
    }

    pub fn update(&self, camera: &str, f: impl FnOnce(&mut CameraStatus)) {
        let mut map = match self.cameras.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        f(map.entry(camera.to_string()).or_default());
    }

    pub fn snapshot(&self) -> BTreeMap<String, CameraStatus> {
        match self.cameras.lock() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn json(
        &self,
        state: &str,
        reason: Option<&str>,
        cameras: BTreeMap<String, CameraStatus>,
    ) -> Vec<u8> {
        let now = SystemTime::now();
        let msg = StatusMsg {
            schema: STATUS_SCHEMA,
            agent_id: &self.agent_id,
            state,
            reason,
            version: env!("CARGO_PKG_VERSION"),
            time: rfc3339(now),
            started_at: rfc3339(self.started),
            uptime_secs: now
                .duration_since(self.started)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            cameras,
            alerts_published: self.counters.published.load(Ordering::Relaxed),
            alerts_dropped: self.counters.dropped.load(Ordering::Relaxed),
        };
        serde_json::to_vec(&msg).unwrap_or_default()
    }

    pub fn online_json(&self) -> Vec<u8> {
        self.json("online", None, self.snapshot())
    }

    /// The offline status (also the Last Will).
    pub fn offline_json(&self, reason: &str) -> Vec<u8> {
        self.json("offline", Some(reason), BTreeMap::new())
    }
}
