//! Payloads of the MQTT contract: `ioc.alert/1`, `ioc.status/1`,
//! `ioc.stats/1`. JSON Schemas are generated from these types
//! (`ioc-agent schema`) and checked in under `deploy/schema/`; a test fails
//! when they drift.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules::config::Direction;
use crate::store::Severity;

pub const ALERT_SCHEMA: &str = "ioc.alert/1";
pub const STATUS_SCHEMA: &str = "ioc.status/1";
pub const STATS_SCHEMA: &str = "ioc.stats/1";

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One alert on `{prefix}/{agent_id}/events` (QoS 1, not retained).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "ioc.alert/1")]
pub struct Alert {
    /// Payload schema and version: `ioc.alert/1`.
    pub schema: String,
    /// ULID: unique and sortable by time; the IOC de-duplicates by it
    /// (delivery is at-least-once).
    pub id: String,
    /// `object.zone_enter`, `object.zone_exit`, `object.line_cross`,
    /// `traffic.*` or `order.*` (see README, Rules).
    #[serde(rename = "type")]
    pub kind: String,
    /// Display name of the type for operators, English (e.g. `Running a red light`).
    #[serde(default)]
    pub name: String,
    /// Display name of the type, Vietnamese (e.g. `Vượt đèn đỏ`).
    #[serde(default)]
    pub name_vi: String,
    pub agent_id: String,
    pub camera: String,
    /// Where the camera is (`[cameras.place]`); absent when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<Place>,
    /// Rule name from the config.
    pub rule: String,
    /// `low`, `normal` or `high`, from the rule.
    pub severity: Severity,
    /// Time of the decision frame (agent clock at receipt), RFC 3339 UTC.
    pub time: String,
    /// Where `time` comes from: `agent_clock`.
    pub time_source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// Direction observed when crossing a line (or moving against a lane).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Lane name (lane rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    /// Calibrated ground speed, km/h (`traffic.speeding`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_kmh: Option<f64>,
    /// Persons counted (`order.crowd`, `traffic.overload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// `start` or `end` of a zone-level event (`order.crowd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<crate::rules::Phase>,
    /// Why a zone-level event ended (with `phase: "end"`): `cleared` when the
    /// condition stopped holding, `stream_lost` when the camera's stream
    /// ended while it was open (it starts afresh when the camera is back),
    /// `camera_stopped` when the agent stopped or a reload restarted the camera.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<crate::rules::EndReason>,
    /// Seconds the object stayed (stops, parking, loitering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwell_secs: Option<f64>,
    /// Best score of the cascade model (`traffic.no_helmet`, `order.fire_smoke`, `order.fight`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// The signal state that decided (`traffic.red_light`, `traffic.stop_line`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<SignalInfo>,
    pub objects: Vec<AlertObject>,
    /// Size of the analysed frame in pixels.
    pub frame: FrameSize,
    /// The annotated JPEG published on its own topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<EvidenceRef>,
    /// The best plate reading of the object's track so far, if plates are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plate: Option<PlateInfo>,
    /// True when an evidence package (clip, pictures, signed manifest) is
    /// being sealed for this event; an `ioc.event_update/1` message with
    /// `kind = "evidence"` follows on the same topic when it is done.
    #[serde(default)]
    pub evidence_pending: bool,
    pub model: ModelRef,
    pub agent_version: String,
}

/// Where a camera is and what it looks at, as the installer set it
/// (`[cameras.place]`). Carried in every alert and event update, signed in
/// the evidence manifest, burnt into the overview picture and shown on the
/// review page, so that a violation record says where it happened.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Place {
    /// Name a person recognises, e.g. `Ngã tư Hàng Bạc – Đinh Liệt`. Required.
    pub name: String,
    /// Street address, e.g. `Số 2 Hàng Bạc, phường Hoàn Kiếm, Hà Nội`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Latitude, degrees (WGS 84, -90 to 90); with `lon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// Longitude, degrees (WGS 84, -180 to 180); with `lat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// The direction the camera looks, degrees clockwise from north (0 to below 360).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading_deg: Option<f64>,
    /// Ward or commune (phường / xã / đặc khu), with its 5-digit official code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ward: Option<AdminUnit>,
    /// District (quận / huyện / thị xã), with its 3-digit official code.
    /// Optional: the 2025 reform of local government removed the district level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<AdminUnit>,
    /// Province or centrally-run city (tỉnh / thành phố), with its 2-digit official code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub province: Option<AdminUnit>,
}

/// An administrative unit with its official code (the national list of
/// administrative unit codes: 2 digits for a province, 3 for a district,
/// 5 for a ward or commune).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminUnit {
    /// Official code, digits only, e.g. `01` (Hà Nội), `00070`. Required.
    pub code: String,
    /// Official name, e.g. `Phường Hoàn Kiếm`. Required.
    pub name: String,
}

impl Place {
    /// One line for a picture or a record: name, ward, district, province.
    pub fn line(&self) -> String {
        let mut parts = vec![self.name.clone()];
        for u in [&self.ward, &self.district, &self.province]
            .into_iter()
            .flatten()
        {
            parts.push(u.name.clone());
        }
        parts.join(", ")
    }
}

impl Alert {
    /// What the rule measured, for the review list: the keys the alert has
    /// of zone, line, lane, direction, speed, count, phase, end reason,
    /// dwell, confidence and signal.
    pub fn measured(&self) -> serde_json::Value {
        let mut all = serde_json::to_value(self).unwrap_or_default();
        let mut out = serde_json::Map::new();
        if let Some(m) = all.as_object_mut() {
            for k in MEASURED {
                if let Some(v) = m.remove(*k) {
                    out.insert((*k).to_string(), v);
                }
            }
        }
        serde_json::Value::Object(out)
    }
}

/// The alert's keys that carry a rule's measurement.
pub const MEASURED: &[&str] = &[
    "zone",
    "line",
    "lane",
    "direction",
    "speed_kmh",
    "count",
    "phase",
    "end_reason",
    "dwell_secs",
    "confidence",
    "signal",
];

pub const UPDATE_SCHEMA: &str = "ioc.event_update/1";

/// A plate reading.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct PlateInfo {
    /// Normalised text, e.g. `51F-123.45` or `59-X1 234.56`; when `valid` is
    /// false, the cleaned raw reading.
    pub text: String,
    /// 0..1; halved when the text does not match a Vietnamese plate pattern.
    pub confidence: f32,
    /// The text matches a Vietnamese plate pattern (province, series, number).
    pub valid: bool,
    /// A two-row (motorbike) plate.
    pub two_rows: bool,
}

/// A later fact about an event, on the same topic as its alert: the sealed
/// evidence package (`kind = "evidence"`) or an officer's review (`kind = "review"`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EventUpdate {
    /// Always `ioc.event_update/1`.
    pub schema: String,
    /// Unique id of this update (ULID).
    pub id: String,
    /// The alert's `id`.
    pub event_id: String,
    /// `evidence` or `review`.
    pub kind: String,
    pub agent_id: String,
    pub camera: String,
    /// The alert's `place`, repeated so an update read alone says where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<Place>,
    /// The alert's type, e.g. `traffic.red_light`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When this update was made, RFC 3339 UTC.
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewInfo>,
}

/// The sealed evidence folder of an event.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EvidenceSummary {
    /// Every file with its size and sha256 (as in the signed manifest).
    pub files: Vec<EvidenceFile>,
    /// sha256 of `manifest.json`, which `manifest.sig` signs.
    pub manifest_sha256: String,
    /// Hex Ed25519 public key of the agent (`ioc-agent key show`).
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<ClipSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plate: Option<PlateInfo>,
    /// Path of the folder on the agent's HTTP server, e.g. `/evidence/<event_id>/`.
    pub url_path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EvidenceFile {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ClipSummary {
    pub frames: usize,
    pub duration_secs: f64,
    /// Seconds of video before the event actually in the clip.
    pub pre_secs: f64,
    /// The ring did not reach back to the configured pre-roll.
    pub pre_truncated: bool,
    /// False when no keyframe lay within `evidence.max_clip_secs` before the
    /// event (a camera with a very long GOP or none, e.g. intra refresh): the
    /// clip then starts at the pre-roll on a frame that is not a keyframe,
    /// and a player shows pictures from the first keyframe or recovery
    /// point in it.
    #[serde(default = "yes")]
    pub starts_on_keyframe: bool,
    /// Media segments of the clip (`clip-NNN.m4s`), and how many of them are
    /// one stored copy shared with an earlier, overlapping event.
    #[serde(default)]
    pub segments: usize,
    #[serde(default)]
    pub shared_segments: usize,
}

fn yes() -> bool {
    true
}

/// An officer's decision on an event.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReviewInfo {
    /// `confirmed` or `rejected`.
    pub status: String,
    #[serde(default)]
    pub note: String,
    /// RFC 3339 UTC.
    pub at: String,
    /// Who decided: the reviewer's user name on the agent.
    #[serde(default)]
    pub reviewer: String,
    /// The signed record in the evidence folder: `review-<seq>.json`
    /// (1, 2, …; a later decision is a new record, the earlier ones stay).
    #[serde(default)]
    pub seq: u32,
}

/// A traffic-signal state and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SignalInfo {
    pub state: crate::rules::Light,
    /// `image` (the signal head in the picture) or `mqtt` (the traffic controller).
    pub source: crate::rules::SignalSource,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AlertObject {
    /// Model label, e.g. `car`.
    pub class: String,
    /// Best detection score of the track, 0..1.
    pub score: f32,
    /// Tracker id, unique per camera session.
    pub track_id: u64,
    /// `[x1, y1, x2, y2]`, normalised to 0..1 of the frame, origin top-left.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
pub struct FrameSize {
    pub width: u32,
    pub height: u32,
}

/// A piece of evidence published or stored beside the alert.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EvidenceRef {
    /// MQTT topic carrying the bytes.
    pub topic: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub bytes: usize,
    /// Lower-case hex sha256 of the bytes.
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
}

/// What a camera is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    /// Opening the RTSP session (first start or after a retry).
    #[default]
    Connecting,
    /// Decoded pictures advance and are analysed.
    Streaming,
    /// The session failed (`last_error`); waiting out the backoff.
    Retrying,
    /// The camera task panicked (`last_error` has the reason); it is
    /// restarted after the backoff.
    Failed,
    /// Stopped (shutdown, removed or disabled by a reload).
    Stopped,
}

impl CameraState {
    pub fn as_str(self) -> &'static str {
        match self {
            CameraState::Connecting => "connecting",
            CameraState::Streaming => "streaming",
            CameraState::Retrying => "retrying",
            CameraState::Failed => "failed",
            CameraState::Stopped => "stopped",
        }
    }
}

/// The record stream of a camera that detects on its sub-stream.
#[derive(Debug, Clone, Serialize, Deserialize, Default, JsonSchema, PartialEq)]
pub struct RecordStatus {
    /// `connecting` (first open), `streaming` (frames arriving) or
    /// `retrying` (it failed: `last_error` says why; no video is stopping
    /// it too, after `inactivity_timeout_secs`).
    pub state: CameraState,
    /// Why the record stream last failed, credentials removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Record sessions that failed and were retried since start.
    pub reconnects: u64,
}

/// A camera's pre-event ring: its hard byte cap and what staying within it cost.
#[derive(Debug, Clone, Serialize, Deserialize, Default, JsonSchema, PartialEq)]
pub struct RingStatus {
    /// Bytes of encoded video held now.
    pub bytes: u64,
    /// The cap: `evidence.ring_bytes` or the camera's share of
    /// `evidence.ring_total_bytes`.
    pub budget_bytes: u64,
    /// Whole GOPs evicted since start (normal).
    pub evicted_gops: u64,
    /// Frames cut from inside a GOP larger than the cap since start: the
    /// camera sends keyframes too rarely (or never, intra refresh) for the
    /// cap; its clips then start on a frame that is not a keyframe.
    pub cut_frames: u64,
    /// Why frames are being cut, when they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Per-camera state in the status message.
#[derive(Debug, Clone, Serialize, Deserialize, Default, JsonSchema)]
pub struct CameraStatus {
    pub state: CameraState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    /// How RTP arrives: `tcp` (interleaved) or `udp` (the camera refused
    /// TCP with 461, or the camera's `transport` says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// The decoder element in use (`libavcodec`, `avdec_h264`, `nvh264dec`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<String>,
    /// How that decoder runs: `libavcodec`, `gst_software` or `gst_hardware`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder_kind: Option<crate::decode::DecoderKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<[u32; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_frame_at: Option<String>,
    /// Last error, with credentials removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub frames_received: u64,
    pub frames_decoded: u64,
    pub frames_inferred: u64,
    /// Frames not given to the model, by reason.
    pub frames_skipped: SkipCounts,
    /// Access units the decoder refused as damaged (lost packets, a corrupt
    /// bitstream) since start; skipped, the session went on.
    #[serde(default)]
    pub frames_corrupt: u64,
    /// Access units over 16 MiB dropped since start (a broken or hostile
    /// stream); decoding restarted at the next keyframe.
    #[serde(default)]
    pub frames_oversized: u64,
    pub alerts: u64,
    /// The camera's traffic-signal state as last read (cameras with `[cameras.signal]`),
    /// so an installer can check the lamp boxes or the controller feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<SignalInfo>,
    /// Sessions that failed and were retried since start.
    #[serde(default)]
    pub reconnects: u64,
    /// Times the camera task panicked and was restarted since start.
    #[serde(default)]
    pub panics: u64,
    /// Sessions ended as not live since start, by reason: `no_video` (no
    /// video packet within `inactivity_timeout_secs`), `no_keyframe` (no
    /// keyframe or recovery point within `keyframe_timeout_secs`),
    /// `frozen_timestamps` (RTP time advanced under 10% of wall time over
    /// 5 s), `decoder_stalled` (no picture out of the decoder within
    /// `inactivity_timeout_secs` while frames went in).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stalls: BTreeMap<String, u64>,
    /// The camera's pre-event ring of encoded video (cameras with evidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring: Option<RingStatus>,
    /// The record stream (cameras with `detect_url`, evidence on): the
    /// main stream clips come from, read by its own session. Detection can
    /// stream while this one is down, and then events get no clip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordStatus>,
    /// Optional steps (`plate_read`, `cascade`) that failed since start, by
    /// step; the session went on without them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub enrichment_failures: BTreeMap<String, u64>,
    /// Sum of inference times, milliseconds (for `stats`).
    #[serde(skip)]
    pub inference_ms_sum: f64,
    /// Inferences per latency bucket (`LATENCY_BUCKETS_MS`, then +Inf), for `/metrics`.
    #[serde(skip)]
    pub inference_hist: [u64; LATENCY_BUCKETS_MS.len() + 1],
    /// Alerts by event type, for `/metrics`.
    #[serde(skip)]
    pub events: BTreeMap<String, u64>,
    /// Frame arrival → rules decided, per bucket of `LATENCY_SLO_BUCKETS_MS` (+Inf last).
    #[serde(skip)]
    pub latency_hist: [u64; LATENCY_SLO_BUCKETS_MS.len() + 1],
    #[serde(skip)]
    pub latency_ms_sum: f64,
}

/// Upper bounds of the frame-to-decision latency histogram, milliseconds.
pub const LATENCY_SLO_BUCKETS_MS: [f64; 10] = [
    10.0, 25.0, 50.0, 100.0, 150.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
];

/// Upper bounds of the inference latency histogram, milliseconds.
pub const LATENCY_BUCKETS_MS: [f64; 10] =
    [2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 250.0, 1000.0];

impl CameraStatus {
    /// Records one frame's arrival-to-decision time.
    pub fn observe_latency(&mut self, ms: f64) {
        self.latency_ms_sum += ms;
        let i = LATENCY_SLO_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_SLO_BUCKETS_MS.len());
        self.latency_hist[i] += 1;
    }

    /// Records one inference's latency.
    pub fn observe_inference(&mut self, ms: f64) {
        self.inference_ms_sum += ms;
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.inference_hist[i] += 1;
    }
}

/// Frames not given to the model: `rate` (not due at detect_fps), `busy`
/// (replaced by a newer frame while the model was busy), `backlog` (whole GOPs
/// dropped in front of a slow decoder), `no_keyframe` (before the first keyframe),
/// `quiet` (no change since the model last saw the camera: its last answer
/// stood for the frame; `skip_quiet_frames`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, JsonSchema)]
pub struct SkipCounts {
    pub rate: u64,
    pub busy: u64,
    pub backlog: u64,
    pub no_keyframe: u64,
    /// Absent in older agents' status: read as 0.
    #[serde(default)]
    pub quiet: u64,
}

impl SkipCounts {
    fn total(&self) -> u64 {
        self.rate + self.busy + self.backlog + self.no_keyframe + self.quiet
    }
}

/// Alerts waiting in the durable outbox.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct OutboxState {
    pub rows: u64,
    pub bytes: u64,
    /// Alerts dropped by the bound policy since start.
    pub dropped: u64,
    /// Messages moved out of the outbox since start because they cannot be
    /// delivered (larger than `mqtt.max_packet_bytes`, or refused by the
    /// broker: the connection lost three times in a row right after it was
    /// sent alone); kept in the store's `quarantine` table.
    #[serde(default)]
    pub quarantined: u64,
    /// Thumbnails left out since start because they did not fit one packet.
    #[serde(default)]
    pub thumbnails_dropped: u64,
    /// Publishes the broker refused since start with an MQTT 5 reason code
    /// (PUBACK), never counted delivered: the message stays in the outbox
    /// and goes again after a backoff; one refused three times in a row is
    /// quarantined, except for "not authorized" (the broker's ACL), which
    /// waits for the ACL to be fixed.
    #[serde(default)]
    pub refused: u64,
    /// The last refusal in words, with its reason code and the fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refusal: Option<String>,
}

/// Retained on `{prefix}/{agent_id}/status`; the Last Will sets it offline.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "ioc.status/1")]
pub struct Status {
    /// `ioc.status/1`.
    pub schema: String,
    pub agent_id: String,
    /// `online` or `offline`.
    pub state: String,
    /// Why offline: `shutdown` or `connection lost` (Last Will).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub version: String,
    pub time: String,
    pub started_at: String,
    /// This process (a ULID, new at each start): two statuses on one
    /// agent's topic with different instances that are both online are two
    /// boxes sharing one `agent_id`.
    #[serde(default)]
    pub instance: String,
    /// Set when another live agent publishes as this `agent_id`: who, and
    /// what to do. Alerts of both mix on one topic until one is renamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id_conflict: Option<String>,
    pub uptime_secs: u64,
    pub cameras: BTreeMap<String, CameraStatus>,
    /// Alerts the broker acknowledged since start.
    pub alerts_published: u64,
    /// Alerts dropped since start (outbox full or not storable).
    pub alerts_dropped: u64,
    pub outbox: OutboxState,
    /// The MQTT version the publisher's connection speaks, `5` or `3.1.1`
    /// (`mqtt.protocol`; `auto` falls back to 3.1.1 for a broker without 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_protocol: Option<String>,
    /// The broker connected to, `host:port`: `mqtt.url`'s, or one of
    /// `mqtt.failover_urls` while it is away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_broker: Option<String>,
    /// Times the publisher moved to another broker of the list since start
    /// (failover, and back).
    #[serde(default)]
    pub broker_switches: u64,
    /// The key this agent signs evidence with (when evidence is on), so the
    /// IOC can pin it: `verify --key <public_key>`. Retained with the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SigningKeyInfo>,
}

/// The agent's evidence signing key.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct SigningKeyInfo {
    /// Hex Ed25519 public key (64 digits), as `ioc-agent key show` prints it.
    pub public_key: String,
    /// The key id manifests carry (`key_id`): 16 hex digits of the key's sha256.
    pub key_id: String,
}

/// Per-camera rates over the last stats interval.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CameraStats {
    pub fps_decoded: f64,
    pub fps_inferred: f64,
    pub fps_skipped: f64,
    /// Mean inference time, milliseconds (0 when nothing was inferred).
    pub inference_ms: f64,
    pub alerts: u64,
}

/// Periodic `{prefix}/{agent_id}/stats` (QoS 0, not retained).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "ioc.stats/1")]
pub struct Stats {
    /// `ioc.stats/1`.
    pub schema: String,
    pub agent_id: String,
    pub time: String,
    pub interval_secs: f64,
    pub cameras: BTreeMap<String, CameraStats>,
    /// Alerts acknowledged by the broker during the interval.
    pub alerts_sent: u64,
    pub outbox: OutboxState,
}

/// Shared, always-current picture of the agent for status and stats.
pub struct StatusBoard {
    pub agent_id: String,
    pub started: SystemTime,
    cameras: Mutex<BTreeMap<String, CameraStatus>>,
    last_stats: Mutex<(std::time::Instant, BTreeMap<String, CameraStatus>, u64)>,
    pub counters: std::sync::Arc<super::PublishCounters>,
    signing_key: Mutex<Option<SigningKeyInfo>>,
    /// The connection's MQTT version and the last refusal.
    link: Mutex<(Option<&'static str>, Option<String>, Option<String>)>,
    /// This process, among agents that publish as `agent_id` (a ULID).
    pub instance: String,
    /// Another live agent publishing as this `agent_id`, in words.
    conflict: Mutex<Option<String>>,
}

impl StatusBoard {
    pub fn new(agent_id: &str) -> StatusBoard {
        StatusBoard {
            agent_id: agent_id.to_string(),
            started: SystemTime::now(),
            cameras: Mutex::new(BTreeMap::new()),
            last_stats: Mutex::new((std::time::Instant::now(), BTreeMap::new(), 0)),
            counters: Default::default(),
            signing_key: Mutex::new(None),
            link: Mutex::new((None, None, None)),
            instance: ulid::Ulid::new().to_string(),
            conflict: Mutex::new(None),
        }
    }

    /// Another agent publishes as this `agent_id` (seen on its status topic).
    pub fn set_conflict(&self, text: String) {
        match self.conflict.lock() {
            Ok(mut c) => *c = Some(text),
            Err(p) => *p.into_inner() = Some(text),
        }
    }

    fn conflict(&self) -> Option<String> {
        match self.conflict.lock() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Names the evidence signing key in every status from now on.
    pub fn set_signing_key(&self, info: SigningKeyInfo) {
        match self.signing_key.lock() {
            Ok(mut k) => *k = Some(info),
            Err(p) => *p.into_inner() = Some(info),
        }
    }

    fn signing_key(&self) -> Option<SigningKeyInfo> {
        match self.signing_key.lock() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Forgets a camera (removed from the config).
    pub fn remove(&self, camera: &str) {
        let mut map = match self.cameras.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.remove(camera);
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

    #[allow(clippy::type_complexity)]
    fn link(
        &self,
    ) -> std::sync::MutexGuard<'_, (Option<&'static str>, Option<String>, Option<String>)> {
        match self.link.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The MQTT version the publisher's connection speaks.
    pub fn set_protocol(&self, v: &'static str) {
        self.link().0 = Some(v);
    }

    /// The broker the publisher is connected to (`host:port`, one of
    /// `mqtt.url` and `mqtt.failover_urls`).
    pub fn set_broker(&self, b: &str) {
        self.link().2 = Some(b.to_string());
    }

    /// A publish the broker refused, in words.
    pub fn set_refusal(&self, text: &str) {
        self.link().1 = Some(text.to_string());
    }

    fn outbox(&self) -> OutboxState {
        OutboxState {
            refused: self.counters.refused.load(Ordering::Relaxed),
            last_refusal: self.link().1.clone(),
            rows: self.counters.outbox_rows.load(Ordering::Relaxed),
            bytes: self.counters.outbox_bytes.load(Ordering::Relaxed),
            dropped: self.counters.outbox_dropped.load(Ordering::Relaxed),
            quarantined: self.counters.quarantined.load(Ordering::Relaxed),
            thumbnails_dropped: self.counters.thumbnails_dropped.load(Ordering::Relaxed),
        }
    }

    fn json(
        &self,
        state: &str,
        reason: Option<&str>,
        cameras: BTreeMap<String, CameraStatus>,
    ) -> Vec<u8> {
        let now = SystemTime::now();
        // One look at the link (a guard held across the literal below would
        // deadlock the next `link()`).
        let link = self.link().clone();
        let msg = Status {
            schema: STATUS_SCHEMA.into(),
            agent_id: self.agent_id.clone(),
            state: state.into(),
            reason: reason.map(str::to_string),
            version: env!("CARGO_PKG_VERSION").into(),
            time: rfc3339(now),
            started_at: rfc3339(self.started),
            instance: self.instance.clone(),
            agent_id_conflict: self.conflict(),
            uptime_secs: now
                .duration_since(self.started)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            cameras,
            alerts_published: self.counters.published.load(Ordering::Relaxed),
            alerts_dropped: self.counters.dropped.load(Ordering::Relaxed),
            outbox: self.outbox(),
            mqtt_protocol: link.0.map(str::to_string),
            mqtt_broker: link.2,
            broker_switches: self.counters.broker_switches.load(Ordering::Relaxed),
            signing_key: self.signing_key(),
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

    /// Rates since the previous call.
    pub fn stats_json(&self, _every: Duration) -> Vec<u8> {
        let now = self.snapshot();
        let published = self.counters.published.load(Ordering::Relaxed);
        let mut last = match self.last_stats.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        let secs = last.0.elapsed().as_secs_f64().max(1e-3);
        let mut cameras = BTreeMap::new();
        for (id, c) in &now {
            let p = last.1.get(id).cloned().unwrap_or_default();
            let inferred = c.frames_inferred.saturating_sub(p.frames_inferred);
            let ms = c.inference_ms_sum - p.inference_ms_sum;
            cameras.insert(
                id.clone(),
                CameraStats {
                    fps_decoded: round2(
                        c.frames_decoded.saturating_sub(p.frames_decoded) as f64 / secs,
                    ),
                    fps_inferred: round2(inferred as f64 / secs),
                    fps_skipped: round2(
                        c.frames_skipped
                            .total()
                            .saturating_sub(p.frames_skipped.total())
                            as f64
                            / secs,
                    ),
                    inference_ms: if inferred > 0 {
                        round2(ms / inferred as f64)
                    } else {
                        0.0
                    },
                    alerts: c.alerts.saturating_sub(p.alerts),
                },
            );
        }
        let msg = Stats {
            schema: STATS_SCHEMA.into(),
            agent_id: self.agent_id.clone(),
            time: rfc3339(SystemTime::now()),
            interval_secs: round2(secs),
            cameras,
            alerts_sent: published.saturating_sub(last.2),
            outbox: self.outbox(),
        };
        *last = (std::time::Instant::now(), now, published);
        serde_json::to_vec(&msg).unwrap_or_default()
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// JSON Schemas of every payload, by file name under `deploy/schema/`.
pub fn schemas() -> Vec<(&'static str, String)> {
    let event_types: Vec<&str> = {
        let mut seen = std::collections::BTreeSet::new();
        crate::rules::KINDS
            .iter()
            .map(|k| k.event_type)
            .filter(|t| seen.insert(*t))
            .collect()
    };
    let pretty = |s: schemars::Schema, fixed: &[(&str, serde_json::Value)]| {
        let mut v = s.to_value();
        strict(&mut v);
        for (prop, extra) in fixed {
            if let Some(p) = v
                .get_mut("properties")
                .and_then(|p| p.get_mut(*prop))
                .and_then(|p| p.as_object_mut())
                && let Some(e) = extra.as_object()
            {
                p.remove("type");
                p.extend(e.clone());
            }
        }
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    };
    let c = |s: &str| serde_json::json!({"const": s});
    let types = serde_json::json!({"type": "string", "enum": event_types});
    vec![
        (
            "alert.schema.json",
            pretty(
                schemars::schema_for!(Alert),
                &[
                    ("schema", c(ALERT_SCHEMA)),
                    ("type", types.clone()),
                    ("time_source", c("agent_clock")),
                ],
            ),
        ),
        (
            "status.schema.json",
            pretty(
                schemars::schema_for!(Status),
                &[
                    ("schema", c(STATUS_SCHEMA)),
                    (
                        "state",
                        serde_json::json!({"type": "string", "enum": ["online", "offline"]}),
                    ),
                ],
            ),
        ),
        (
            "stats.schema.json",
            pretty(schemars::schema_for!(Stats), &[("schema", c(STATS_SCHEMA))]),
        ),
        (
            "event_update.schema.json",
            pretty(
                schemars::schema_for!(EventUpdate),
                &[
                    ("schema", c(UPDATE_SCHEMA)),
                    ("type", types),
                    (
                        "kind",
                        serde_json::json!({"type": "string", "enum": ["evidence", "review"]}),
                    ),
                ],
            ),
        ),
    ]
}

/// JSON Schema as strict validators (Ajv's strict mode) and code generators
/// take it: schemars' Rust-type formats (`uint32`, `double`, …) are not
/// JSON Schema formats, so they go; an unsigned one leaves `minimum: 0`.
fn strict(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            let rust_format = m.get("format").and_then(|f| f.as_str()).filter(|f| {
                matches!(
                    *f,
                    "uint"
                        | "uint8"
                        | "uint16"
                        | "uint32"
                        | "uint64"
                        | "int"
                        | "int8"
                        | "int16"
                        | "int32"
                        | "int64"
                        | "float"
                        | "double"
                )
            });
            if let Some(f) = rust_format.map(str::to_string) {
                m.remove("format");
                if f.starts_with("uint") && !m.contains_key("minimum") {
                    m.insert("minimum".into(), serde_json::json!(0));
                }
            }
            for x in m.values_mut() {
                strict(x);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strict),
        _ => {}
    }
}
