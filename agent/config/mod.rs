//! Typed TOML configuration.
//!
//! Every field is documented with its default; defaults live in the `default_*`
//! functions of this module and nowhere else. Unknown keys are refused, and every
//! problem is reported as `file:line:column: what is wrong — how to fix it`.
//! Relative paths are resolved against the directory of the config file.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::infer::manifest::Manifest;

pub use crate::base::secret::Secret;
pub use crate::evidence::config::{EvidenceConfig, PlatesConfig};
pub use crate::infer::ORT_VERSION;
pub use crate::publish::{MqttSettings, TopicLayout};

/// The agent's whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Unique id of this agent in the province (letters, digits, `-`, `_`). Required.
    pub agent_id: Spanned<String>,
    /// Where the agent keeps its state. Default `data` (next to the config file).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Folder with model manifests (`<name>.toml`). Default `models`.
    #[serde(default = "default_manifest_dir")]
    pub manifest_dir: PathBuf,
    /// Folder with verified model files (filled by `ioc-agent models pull`).
    /// Default `<data_dir>/models`.
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
    /// Path of the ONNX Runtime shared library (version 1.31.x).
    /// Default: `$ORT_DYLIB_PATH`, else `libonnxruntime.so.1.31.1` on the loader's search path.
    #[serde(default)]
    pub onnxruntime: Option<PathBuf>,
    /// Log filter (`tracing` syntax). Default `info`; `RUST_LOG` overrides it.
    #[serde(default = "default_log")]
    pub log: String,
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    #[serde(default)]
    pub evidence: EvidenceConfig,
    /// The agent's HTTP server (evidence files and the review page). Off unless given.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// Directory of the config file, used to resolve relative paths (not a TOML key).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker address, `mqtt://host:port` (port default 1883) or
    /// `mqtts://host:port` (TLS, port default 8883). Required.
    pub url: Spanned<String>,
    /// Topic prefix. Default `ioc/v1`.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// MQTT client id. Default `ioc-agent-<agent_id>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Keep-alive interval in seconds. Default 30.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// How often the retained status is refreshed, seconds. Default 30.
    #[serde(default = "default_status_interval")]
    pub status_interval_secs: u64,
    /// Largest MQTT packet the agent sends or accepts, bytes. Default 4 MiB
    /// (thumbnails are JPEG bytes in one packet).
    #[serde(default = "default_max_packet")]
    pub max_packet_bytes: usize,
    /// `flat`: alerts on `{prefix}/{agent_id}/events`, thumbnails on
    /// `.../events/{id}/thumbnail`. `by_camera`: alerts on
    /// `{prefix}/{agent_id}/events/{camera}/{type}`, thumbnails on
    /// `.../thumbnails/{id}`, so the IOC can subscribe per camera or per event
    /// type with wildcards. Default `flat`.
    #[serde(default)]
    pub topic_layout: TopicLayout,
    /// Seconds between `stats` messages. Default 60.
    #[serde(default = "default_stats_interval")]
    pub stats_interval_secs: u64,
    /// Clean session (true) or a persistent session the broker keeps across
    /// reconnects (false). Delivery of alerts does not depend on it: the
    /// outbox re-sends whatever the broker has not acknowledged. Default true.
    #[serde(default = "default_true")]
    pub clean_session: bool,
    /// Most alerts kept in the durable outbox while the broker is away. When
    /// full, the oldest alert of the lowest severity is dropped (counted and
    /// logged). Default 100000.
    #[serde(default = "default_outbox_rows")]
    pub outbox_max_rows: u64,
    /// Most bytes (alerts + thumbnails) kept in the outbox. Default 1 GiB.
    #[serde(default = "default_outbox_bytes")]
    pub outbox_max_bytes: u64,
    /// `mqtts://`: PEM file of the CA(s) that signed the broker's certificate.
    /// Default: the system bundle /etc/ssl/certs/ca-certificates.crt.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `mqtts://` with mutual TLS: this agent's certificate chain (PEM).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// `mqtts://` with mutual TLS: this agent's private key (PEM). Keep it 0600.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Broker login name. Default: none (anonymous).
    #[serde(default)]
    pub username: Option<String>,
    /// Broker password. Prefer `password_file` or `password_env`, which keep it
    /// out of the config. Never logged.
    #[serde(default)]
    pub password: Option<String>,
    /// File holding the broker password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the broker password.
    #[serde(default)]
    pub password_env: Option<String>,
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("url", self.url.get_ref())
            .field("topic_prefix", &self.topic_prefix)
            .field("topic_layout", &self.topic_layout)
            .field("username", &self.username)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .finish_non_exhaustive()
    }
}

/// The agent's HTTP server.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on. Default `127.0.0.1:8080`; use `0.0.0.0:8080` to
    /// reach it from the ward network.
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// Bearer token for every page and file. Give it one way: `token`,
    /// `token_file` or `token_env`. Never logged.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub token_env: Option<String>,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_file", &self.token_file)
            .field("token_env", &self.token_env)
            .finish()
    }
}

fn default_http_listen() -> String {
    "127.0.0.1:8080".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Manifest name: `<manifest_dir>/<name>.toml`. Required.
    pub name: Spanned<String>,
    /// ONNX Runtime intra-op threads for this model. Default 1.
    #[serde(default = "default_one")]
    pub intra_threads: usize,
    /// Minimum detection score; overrides the manifest's default.
    #[serde(default)]
    pub score_threshold: Option<f32>,
    /// ONNX Runtime execution providers to prefer, best first, from
    /// `tensorrt`, `cuda`, `openvino`, `cpu`. Those the installed ONNX Runtime
    /// library lacks, or that fail to start, are skipped (logged); the CPU
    /// is always the last resort. Default `["cuda", "cpu"]`.
    #[serde(default = "default_providers")]
    pub providers: Vec<Spanned<String>>,
    /// Inference threads (one ONNX Runtime session each) sharing this
    /// model's queue; 0 (default) = one per core, at most 4, and no more
    /// than the cameras that use the model.
    #[serde(default)]
    pub workers: usize,
}

fn default_providers() -> Vec<Spanned<String>> {
    ["cuda", "cpu"]
        .iter()
        .map(|s| Spanned::new(0..0, s.to_string()))
        .collect()
}

impl ModelConfig {
    /// Inference threads for this model when `users` cameras use it.
    pub fn worker_count(&self, users: usize, cores: usize) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        cores.min(users).clamp(1, 4)
    }

    /// The preference list, parsed (names are validated at load).
    pub fn provider_list(&self) -> Vec<crate::infer::providers::Provider> {
        self.providers
            .iter()
            .filter_map(|p| crate::infer::providers::Provider::parse(p.get_ref()))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Camera id, unique in this agent; used in topics and logs. Required.
    pub id: Spanned<String>,
    /// RTSP URL of the camera (main stream). Credentials may be given as
    /// `rtsp://user:pass@host/...`; they are never logged. Required.
    pub url: Spanned<String>,
    /// Optional lower-resolution sub-stream used for detection; the main
    /// stream (`url`) is then recorded for evidence clips.
    #[serde(default)]
    pub detect_url: Option<Spanned<String>>,
    /// Frames per second given to the model. Default 5.
    #[serde(default = "default_detect_fps")]
    pub detect_fps: Spanned<f64>,
    /// Model name (one of `[[models]]`). Default: the first model.
    #[serde(default)]
    pub model: Option<Spanned<String>>,
    /// Set to false to keep the camera in the config but not run it. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Share of a busy model this camera gets relative to the others
    /// (weight; 2 = twice the detections of a camera with 1 when the model
    /// cannot serve everyone). Default 1.
    #[serde(default = "default_priority")]
    pub priority: f64,
    /// Seconds allowed for connecting and each RTSP request. Default 10.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: f64,
    /// Seconds without a frame before the session is dropped and reopened. Default 10.
    #[serde(default = "default_inactivity")]
    pub inactivity_timeout_secs: f64,
    /// Reconnect backoff: first delay and ceiling, seconds (jittered ±25%). Default 1 and 30.
    #[serde(default = "default_backoff_min")]
    pub backoff_min_secs: f64,
    #[serde(default = "default_backoff_max")]
    pub backoff_max_secs: f64,
    /// Decoder element to use instead of the automatic choice (e.g. `avdec_h264`).
    #[serde(default)]
    pub decoder: Option<String>,
    /// This camera's own decoder ranking, best first (default: the built-in
    /// one, hardware first). A decoder that fails at run time is skipped
    /// for the next session.
    #[serde(default)]
    pub decoders: Vec<String>,
    /// Software decoder threads for this stream; 0 (default) shares the
    /// cores among the enabled cameras (one each when there are more cameras
    /// than cores).
    #[serde(default)]
    pub decoder_threads: u32,
    /// Longest side of the thumbnail JPEG in pixels. Default 640.
    #[serde(default = "default_thumb")]
    pub thumbnail_max_side: u32,
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    #[serde(default)]
    pub lines: Vec<LineConfig>,
    #[serde(default)]
    pub lanes: Vec<LaneConfig>,
    /// Ground-plane calibration, needed by `speeding`.
    #[serde(default)]
    pub calibration: Option<CalibrationConfig>,
    /// Traffic-signal state, needed by `red_light`.
    #[serde(default)]
    pub signal: Option<SignalConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub name: Spanned<String>,
    /// Polygon corners as normalised `[x, y]` pairs (0..1, origin top-left), at least 3.
    pub polygon: Spanned<Vec<[f64; 2]>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    pub name: Spanned<String>,
    /// Two normalised `[x, y]` points.
    pub points: Spanned<Vec<[f64; 2]>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// An object of the given classes enters a zone.
    ZoneEnter,
    /// An object of the given classes crosses a line in the given direction.
    LineCross,
    /// A vehicle moves against its lane's direction.
    WrongWay,
    /// A vehicle crosses a solid lane line.
    LaneLine,
    /// A class drives in a lane that does not allow it.
    LaneClass,
    /// A vehicle stands still in a zone (no stopping) beyond `dwell_secs`.
    IllegalStop,
    /// Same as `illegal_stop`, with a longer default dwell (parking).
    IllegalParking,
    /// A vehicle in a pedestrian zone (sidewalk).
    Sidewalk,
    /// Calibrated speed over `speed_limit_kmh` for `min_secs`.
    Speeding,
    /// More than `max_count` persons on one motorbike.
    Overload,
    /// More than `max_count` persons in a zone for `min_secs`.
    Crowd,
    /// One person dwelling in a zone beyond `dwell_secs`.
    Loitering,
    /// Entering a restricted zone while its `schedule` is active.
    Intrusion,
    /// Crossing the stop line (`line`, in `direction`) while the signal is red.
    RedLight,
    /// Standing on or past the stop line while the signal is red (or always,
    /// without a signal) for `min_secs`.
    StopLine,
    /// A rider without a helmet: a cascade `model` on crops of tracked
    /// objects finds one of `labels` (e.g. `no_helmet`).
    NoHelmet,
    /// Fire or smoke: a `model` on the whole frame (or a zone) finds one of `labels`.
    FireSmoke,
    /// A fight: a `model` on the whole frame (or a zone) finds one of `labels`.
    Fight,
}

/// Which part of a tracked object's box a cascade model sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CropRegion {
    #[default]
    Box,
    UpperHalf,
    UpperThird,
}

impl RuleKind {
    pub fn event_type(self) -> &'static str {
        match self {
            RuleKind::ZoneEnter => "object.zone_enter",
            RuleKind::LineCross => "object.line_cross",
            RuleKind::WrongWay => "traffic.wrong_way",
            RuleKind::LaneLine => "traffic.lane_line",
            RuleKind::LaneClass => "traffic.lane_class",
            RuleKind::IllegalStop => "traffic.illegal_stop",
            RuleKind::IllegalParking => "traffic.illegal_parking",
            RuleKind::Sidewalk => "traffic.sidewalk",
            RuleKind::Speeding => "traffic.speeding",
            RuleKind::Overload => "traffic.overload",
            RuleKind::Crowd => "order.crowd",
            RuleKind::Loitering => "order.loitering",
            RuleKind::Intrusion => "order.intrusion",
            RuleKind::RedLight => "traffic.red_light",
            RuleKind::StopLine => "traffic.stop_line",
            RuleKind::NoHelmet => "traffic.no_helmet",
            RuleKind::FireSmoke => "order.fire_smoke",
            RuleKind::Fight => "order.fight",
        }
    }
    pub fn as_str(self) -> &'static str {
        self.event_type().split('.').nth(1).unwrap_or("")
    }
    /// Display names for operators: (English, Vietnamese).
    pub fn display_names(self) -> (&'static str, &'static str) {
        match self {
            RuleKind::ZoneEnter => ("Object entered zone", "Đối tượng vào khu vực"),
            RuleKind::LineCross => ("Object crossed line", "Đối tượng vượt qua vạch"),
            RuleKind::WrongWay => ("Wrong-way driving", "Đi ngược chiều"),
            RuleKind::LaneLine => ("Crossing a lane line", "Lấn làn, đè vạch"),
            RuleKind::LaneClass => ("Wrong lane for vehicle type", "Đi sai làn đường quy định"),
            RuleKind::IllegalStop => ("Illegal stopping", "Dừng xe sai quy định"),
            RuleKind::IllegalParking => ("Illegal parking", "Đỗ xe sai quy định"),
            RuleKind::Sidewalk => ("Riding on the sidewalk", "Đi trên vỉa hè"),
            RuleKind::Speeding => ("Speeding", "Chạy quá tốc độ"),
            RuleKind::Overload => ("Too many riders", "Chở quá số người quy định"),
            RuleKind::Crowd => ("Crowd gathering", "Tụ tập đông người"),
            RuleKind::Loitering => ("Loitering", "Lảng vảng, tụ tập kéo dài"),
            RuleKind::Intrusion => ("Intrusion into a restricted area", "Xâm nhập khu vực cấm"),
            RuleKind::RedLight => ("Running a red light", "Vượt đèn đỏ"),
            RuleKind::StopLine => ("Crossing the stop line", "Vượt vạch dừng"),
            RuleKind::NoHelmet => ("Riding without a helmet", "Không đội mũ bảo hiểm"),
            RuleKind::FireSmoke => ("Fire or smoke", "Cháy, khói"),
            RuleKind::Fight => ("Fight", "Đánh nhau, gây rối"),
        }
    }
    /// Which geometry the rule needs.
    pub fn needs(self) -> Needs {
        match self {
            RuleKind::ZoneEnter
            | RuleKind::IllegalStop
            | RuleKind::IllegalParking
            | RuleKind::Sidewalk
            | RuleKind::Crowd
            | RuleKind::Loitering
            | RuleKind::Intrusion => Needs::Zone,
            RuleKind::LineCross | RuleKind::LaneLine | RuleKind::RedLight | RuleKind::StopLine => {
                Needs::Line
            }
            RuleKind::WrongWay | RuleKind::LaneClass => Needs::Lane,
            RuleKind::Speeding
            | RuleKind::Overload
            | RuleKind::NoHelmet
            | RuleKind::FireSmoke
            | RuleKind::Fight => Needs::Nothing,
        }
    }
}

/// The geometry a rule kind refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Zone,
    Line,
    Lane,
    Nothing,
}

/// A lane: where it is, which way traffic must move, which classes may use it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneConfig {
    pub name: Spanned<String>,
    /// Normalised polygon of the lane, at least 3 points.
    pub polygon: Spanned<Vec<[f64; 2]>>,
    /// Allowed direction of travel: an arrow `[[x1, y1], [x2, y2]]` from tail to head.
    #[serde(default)]
    pub direction: Option<Spanned<Vec<[f64; 2]>>>,
    /// Classes allowed in the lane (for `lane_class`). Default: every class.
    #[serde(default = "default_classes")]
    pub classes: Spanned<Vec<String>>,
}

/// Ground-plane calibration: image points (normalised) and their positions on
/// the road in metres, at least four, no three on one line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationConfig {
    pub image: Spanned<Vec<[f64; 2]>>,
    pub world: Spanned<Vec<[f64; 2]>>,
}

/// Where a camera's traffic-signal state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalSource {
    /// The signal head seen in the picture: `red_lamp` and `green_lamp` boxes.
    Image,
    /// Published by the traffic controller on an MQTT `topic` of the agent's broker.
    Mqtt,
}

/// Traffic-signal state for `red_light` and `stop_line`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalConfig {
    pub source: Spanned<SignalSource>,
    /// `image`: box `[[x1, y1], [x2, y2]]` (normalised) around the red lamp.
    #[serde(default)]
    pub red_lamp: Option<Spanned<Vec<[f64; 2]>>>,
    /// `image`: box around the green lamp.
    #[serde(default)]
    pub green_lamp: Option<Spanned<Vec<[f64; 2]>>>,
    /// `mqtt`: topic carrying `red`, `yellow` or `green` (plain or JSON `{"state": "red"}`).
    #[serde(default)]
    pub topic: Option<Spanned<String>>,
    /// `image`: frames a new colour must persist before the state changes. Default 3.
    #[serde(default = "default_hold")]
    pub hold_frames: u32,
    /// `mqtt`: seconds after which a state not refreshed counts as unknown. Default 10.
    #[serde(default = "default_signal_age")]
    pub max_age_secs: f64,
}

fn default_hold() -> u32 {
    3
}
fn default_signal_age() -> f64 {
    10.0
}

/// Local-time window in which a rule is active, e.g. 22:00–05:00 Asia/Ho_Chi_Minh.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// `HH:MM`, local time.
    pub start: Spanned<String>,
    /// `HH:MM`, local time; may be earlier than `start` (the window crosses midnight).
    pub end: Spanned<String>,
    /// IANA time zone, e.g. `Asia/Ho_Chi_Minh`.
    pub tz: Spanned<String>,
}

/// Direction of travel across a line, in image terms.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Any,
    LeftToRight,
    RightToLeft,
    TopToBottom,
    BottomToTop,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule name, used in alerts. Default `<kind>:<zone or line>`.
    #[serde(default)]
    pub name: Option<String>,
    pub kind: Spanned<RuleKind>,
    /// Zone name (for zone rules: zone_enter, illegal_stop, illegal_parking,
    /// sidewalk, crowd, loitering, intrusion).
    #[serde(default)]
    pub zone: Option<Spanned<String>>,
    /// Line name (for line rules: line_cross, lane_line, red_light, stop_line).
    #[serde(default)]
    pub line: Option<Spanned<String>>,
    /// Model labels this rule applies to. Default: every class.
    #[serde(default = "default_classes")]
    pub classes: Spanned<Vec<String>>,
    /// `any`, `left_to_right`, `right_to_left`, `top_to_bottom`, `bottom_to_top`
    /// (for line_cross, lane_line, red_light — required there — and stop_line). Default `any`.
    #[serde(default)]
    pub direction: Direction,
    /// Minimum detection score of the object. Default 0 (the model's threshold applies).
    #[serde(default)]
    pub min_score: f32,
    /// `low`, `normal` or `high`: decides what the outbox drops first when it
    /// is full during a long outage. Default `normal`.
    #[serde(default)]
    pub severity: crate::store::Severity,
    /// Frames the object must be tracked before it may trigger. Default 3.
    #[serde(default = "default_min_hits")]
    pub min_hits: u32,
    /// Lane name (for `wrong_way`, `lane_class`).
    #[serde(default)]
    pub lane: Option<Spanned<String>>,
    /// Seconds a condition must hold before the rule fires. Defaults per kind:
    /// wrong_way 1, lane_class 1, sidewalk 1, speeding 1, overload 1,
    /// stop_line 2, crowd 5.
    #[serde(default)]
    pub min_secs: Option<f64>,
    /// Seconds an object must stay (illegal_stop 30, illegal_parking 300, loitering 60).
    #[serde(default)]
    pub dwell_secs: Option<f64>,
    /// For `wrong_way`: distance moved against the lane, frame-normalised. Default 0.05.
    #[serde(default)]
    pub min_distance: Option<f64>,
    /// For stops: how far (frame-normalised) an object may drift and still
    /// count as standing still. Default 0.02.
    #[serde(default)]
    pub max_move: Option<f64>,
    /// For `crowd` and `overload`: the most persons allowed (crowd: required;
    /// overload default 2).
    #[serde(default)]
    pub max_count: Option<u32>,
    /// For `speeding`: the limit in km/h (needs the camera's calibration).
    #[serde(default)]
    pub speed_limit_kmh: Option<f64>,
    /// For `intrusion` (and `zone_enter`): when the rule is active. Default: always.
    #[serde(default)]
    pub schedule: Option<ScheduleConfig>,
    /// Cascade (`no_helmet`, `fire_smoke`, `fight`): the second model, one of `[[models]]`.
    #[serde(default)]
    pub model: Option<Spanned<String>>,
    /// Cascade: labels of that model that mean a violation (e.g. `["no_helmet"]`).
    #[serde(default)]
    pub labels: Option<Spanned<Vec<String>>>,
    /// Cascade: score of a label needed to count as a positive. Default 0.6.
    #[serde(default)]
    pub min_confidence: Option<f32>,
    /// Cascade: positive results needed before the rule fires (and, for
    /// whole-frame rules, negatives before it ends). Default 2.
    #[serde(default)]
    pub min_votes: Option<u32>,
    /// Cascade: most model runs per second per tracked object (or per frame
    /// region). Default 1.
    #[serde(default)]
    pub max_rate_hz: Option<f64>,
    /// Cascade on tracks: `box`, `upper_half` or `upper_third` of the object's
    /// box. Default `upper_half` for no_helmet.
    #[serde(default)]
    pub region: Option<CropRegion>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_manifest_dir() -> PathBuf {
    PathBuf::from("models")
}
fn default_log() -> String {
    "info".into()
}
fn default_prefix() -> String {
    "ioc/v1".into()
}
fn default_keep_alive() -> u64 {
    30
}
fn default_status_interval() -> u64 {
    30
}
fn default_max_packet() -> usize {
    4 * 1024 * 1024
}
fn default_stats_interval() -> u64 {
    60
}
fn default_outbox_rows() -> u64 {
    100_000
}
fn default_outbox_bytes() -> u64 {
    1 << 30
}
fn default_one() -> usize {
    1
}
fn default_priority() -> f64 {
    1.0
}

fn default_detect_fps() -> Spanned<f64> {
    Spanned::new(0..0, 5.0)
}
fn default_classes() -> Spanned<Vec<String>> {
    Spanned::new(0..0, Vec::new())
}
fn default_true() -> bool {
    true
}
fn default_connect_timeout() -> f64 {
    10.0
}
fn default_inactivity() -> f64 {
    10.0
}
fn default_backoff_min() -> f64 {
    1.0
}
fn default_backoff_max() -> f64 {
    30.0
}
fn default_thumb() -> u32 {
    640
}
fn default_min_hits() -> u32 {
    3
}

/// One problem found in a config file, located in the file.
#[derive(Debug, Clone)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// A config that could not be read or is invalid; `Display` lists every problem
/// as `file:line:column: message`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {err} — check the path and its permissions")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("{}", format_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn format_problems(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}:{}:{}: {}", path.display(), p.line, p.column, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Byte offset → 1-based (line, column in characters).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

struct Collector<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Collector<'_> {
    /// Reports at `key` inside TOML table `[table]` (or at the table header,
    /// or the start of the file when neither is written).
    fn at_key(&mut self, table: &str, key: &str, message: impl Into<String>) {
        let header = format!("[{table}]");
        let start = self
            .text
            .match_indices(&header)
            .map(|(i, _)| i)
            .find(|&i| i == 0 || self.text.as_bytes()[i - 1] == b'\n');
        let pos = start.map(|s| {
            let body = &self.text[s + header.len()..];
            let end = body.find("\n[").unwrap_or(body.len());
            body[..end]
                .match_indices(key)
                .map(|(i, _)| i)
                .find(|&i| i == 0 || body.as_bytes()[i - 1] == b'\n')
                .map(|i| s + header.len() + i)
                .unwrap_or(s)
        });
        let p = pos.unwrap_or(0);
        self.at(p..p, message);
    }

    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_col(self.text, span.start);
        self.problems.push(Problem {
            line,
            column,
            message: message.into(),
        });
    }
}

impl Config {
    /// Reads, parses and validates a config file. Model manifests are loaded to
    /// check model names and classes.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, path, &base)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = match toml::from_str(text) {
            Ok(c) => c,
            Err(e) => {
                let (line, column) = line_col(text, e.span().map(|s| s.start).unwrap_or(0));
                let mut message = e.message().trim().to_string();
                if message.starts_with("unknown field") {
                    message.push_str(
                        " — remove it or fix its spelling (see README, Config reference)",
                    );
                }
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    problems: vec![Problem {
                        line,
                        column,
                        message,
                    }],
                });
            }
        };
        cfg.base_dir = base_dir.to_path_buf();
        let mut c = Collector {
            text,
            problems: Vec::new(),
        };
        cfg.validate(&mut c);
        if c.problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems: c.problems,
            })
        }
    }

    fn validate(&self, c: &mut Collector) {
        let id = self.agent_id.get_ref();
        if id.is_empty()
            || !id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            c.at(
                self.agent_id.span(),
                "agent_id must be non-empty and use only letters, digits, '-' and '_' (it is part of MQTT topics)",
            );
        }
        if let Err(msg) = crate::publish::BrokerAddress::parse(self.mqtt.url.get_ref()) {
            c.at(self.mqtt.url.span(), msg);
        }
        let secrets = [
            self.mqtt.password.is_some(),
            self.mqtt.password_file.is_some(),
            self.mqtt.password_env.is_some(),
        ];
        if secrets.iter().filter(|s| **s).count() > 1 {
            c.at(
                self.mqtt.url.span(),
                "give the MQTT password one way only: password, password_file or password_env",
            );
        }
        if secrets.iter().any(|s| *s) && self.mqtt.username.is_none() {
            c.at(self.mqtt.url.span(), "an MQTT password needs mqtt.username");
        }
        if self.mqtt.outbox_max_rows == 0 || self.mqtt.outbox_max_bytes < 64 * 1024 {
            c.at(
                self.mqtt.url.span(),
                "mqtt.outbox_max_rows must be at least 1 and mqtt.outbox_max_bytes at least 65536",
            );
        }
        if self.mqtt.cert_file.is_some() != self.mqtt.key_file.is_some() {
            c.at(
                self.mqtt.url.span(),
                "mqtt.cert_file and mqtt.key_file must be given together (mutual TLS)",
            );
        }
        if self.mqtt.topic_prefix.is_empty()
            || self.mqtt.topic_prefix.contains(['#', '+'])
            || self.mqtt.topic_prefix.ends_with('/')
        {
            c.at(
                0..0,
                "mqtt.topic_prefix must be non-empty, without '#', '+' or a trailing '/'",
            );
        }

        let ev = &self.evidence;
        if !(0.0..=120.0).contains(&ev.pre_secs) || !(0.0..=120.0).contains(&ev.post_secs) {
            c.at_key(
                "evidence",
                "pre_secs",
                "evidence.pre_secs and evidence.post_secs must be between 0 and 120",
            );
        }
        if ev.ring_bytes < (1 << 20) {
            c.at_key(
                "evidence",
                "ring_bytes",
                "evidence.ring_bytes must be at least 1048576 (1 MiB); a clip needs whole GOPs",
            );
        }
        if let Some(h) = &self.http {
            if h.listen.parse::<std::net::SocketAddr>().is_err() {
                c.at_key(
                    "http",
                    "listen",
                    format!(
                        "http.listen '{}' is not an address; write it as 127.0.0.1:8080",
                        h.listen
                    ),
                );
            }
            let n = [
                h.token.is_some(),
                h.token_file.is_some(),
                h.token_env.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if n != 1 {
                c.at_key(
                    "http",
                    "token",
                    "http needs a bearer token, given one way only: token, token_file or token_env",
                );
            }
            if h.token.as_ref().is_some_and(|t| t.len() < 16) {
                c.at_key("http", "token",  "http.token is too short; use at least 16 random characters (e.g. `openssl rand -hex 16`)");
            }
        }
        if let Some(p) = &ev.plates {
            for m in [&p.detector, &p.reader] {
                if !self.models.iter().any(|x| x.name.get_ref() == m.get_ref()) {
                    c.at(
                        m.span(),
                        format!(
                            "plate model '{}' is not in [[models]]; add it there",
                            m.get_ref()
                        ),
                    );
                }
            }
        }

        // Models: manifests must exist and parse.
        let mut manifests: Vec<(String, Option<Manifest>)> = Vec::new();
        for m in &self.models {
            let name = m.name.get_ref();
            if manifests.iter().any(|(n, _)| n == name) {
                c.at(m.name.span(), format!("model '{name}' is listed twice"));
                continue;
            }
            let mpath = self.manifest_path(name);
            match Manifest::load(&mpath) {
                Ok(man) => manifests.push((name.clone(), Some(man))),
                Err(e) => {
                    c.at(m.name.span(), format!("model '{name}': {e}"));
                    manifests.push((name.clone(), None));
                }
            }
            if m.intra_threads == 0 {
                c.at(m.name.span(), "intra_threads must be at least 1");
            }
            if m.workers > 16 {
                c.at(
                    m.name.span(),
                    format!("workers must be 0 (automatic) to 16, got {}", m.workers),
                );
            }
            for p in &m.providers {
                if crate::infer::providers::Provider::parse(p.get_ref()).is_none() {
                    c.at(
                        p.span(),
                        format!(
                            "unknown execution provider '{}'; use some of {:?} (best first)",
                            p.get_ref(),
                            crate::infer::providers::NAMES
                        ),
                    );
                }
            }
            if m.score_threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
                c.at(m.name.span(), "score_threshold must be between 0 and 1");
            }
        }

        let mut ids = HashSet::new();
        for cam in &self.cameras {
            let cid = cam.id.get_ref();
            if cid.is_empty()
                || !cid
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                c.at(
                    cam.id.span(),
                    "camera id must be non-empty and use only letters, digits, '-' and '_'",
                );
            }
            if !ids.insert(cid.clone()) {
                c.at(
                    cam.id.span(),
                    format!("camera id '{cid}' is used twice; ids must be unique"),
                );
            }
            for u in std::iter::once(&cam.url).chain(cam.detect_url.iter()) {
                if let Err(msg) = crate::source::parse_rtsp_url(u.get_ref()) {
                    c.at(u.span(), msg);
                }
            }
            let fps = *cam.detect_fps.get_ref();
            if !(fps > 0.0 && fps <= 60.0) {
                c.at(
                    cam.detect_fps.span(),
                    format!("detect_fps must be in (0, 60], got {fps}"),
                );
            }
            if cam.decoder.is_some() && !cam.decoders.is_empty() {
                c.at(
                    cam.id.span(),
                    "set either `decoder` (one element, no fallback) or `decoders` (a ranking with fallback), not both",
                );
            }
            if !(cam.priority > 0.0 && cam.priority <= 100.0) {
                c.at(
                    cam.id.span(),
                    format!(
                        "priority must be in (0, 100] (a weight; default 1), got {}",
                        cam.priority
                    ),
                );
            }
            if cam.connect_timeout_secs <= 0.0 || cam.inactivity_timeout_secs <= 0.0 {
                c.at(
                    cam.id.span(),
                    "connect_timeout_secs and inactivity_timeout_secs must be positive",
                );
            }
            if cam.backoff_min_secs <= 0.0 || cam.backoff_max_secs < cam.backoff_min_secs {
                c.at(
                    cam.id.span(),
                    "backoff_min_secs must be positive and not above backoff_max_secs",
                );
            }
            // Which model does this camera use?
            let manifest = match &cam.model {
                Some(m) => match manifests.iter().find(|(n, _)| n == m.get_ref()) {
                    Some((_, man)) => man.as_ref(),
                    None => {
                        c.at(
                            m.span(),
                            format!(
                                "camera '{cid}' uses model '{}', which is not in [[models]] — add it there or fix the name",
                                m.get_ref()
                            ),
                        );
                        None
                    }
                },
                None => {
                    if manifests.is_empty() && !cam.rules.is_empty() {
                        c.at(
                            cam.id.span(),
                            format!("camera '{cid}' has rules but no [[models]] are configured"),
                        );
                    }
                    manifests.first().and_then(|(_, m)| m.as_ref())
                }
            };
            if let Some(man) = manifest
                && man.output.kind() == "classifier"
            {
                c.at(
                    cam.model.as_ref().map(|m| m.span()).unwrap_or(cam.id.span()),
                    format!("camera '{cid}' would use classifier '{}' as its detector; set `model` to a detector (classifiers serve cascade rules)", man.name),
                );
            }

            let mut zone_names = HashSet::new();
            for z in &cam.zones {
                if !zone_names.insert(z.name.get_ref().clone()) {
                    c.at(
                        z.name.span(),
                        format!("zone '{}' is defined twice", z.name.get_ref()),
                    );
                }
                let poly = z.polygon.get_ref();
                if poly.len() < 3 {
                    c.at(
                        z.polygon.span(),
                        format!(
                            "zone '{}': a polygon needs at least 3 points, got {}",
                            z.name.get_ref(),
                            poly.len()
                        ),
                    );
                } else if let Some(msg) = check_points(poly) {
                    c.at(
                        z.polygon.span(),
                        format!("zone '{}': {msg}", z.name.get_ref()),
                    );
                } else if crate::rules::polygon_area(poly).abs() < 1e-6 {
                    c.at(
                        z.polygon.span(),
                        format!(
                            "zone '{}': the polygon has no area (points on one line?)",
                            z.name.get_ref()
                        ),
                    );
                }
            }
            let mut line_names = HashSet::new();
            for l in &cam.lines {
                if !line_names.insert(l.name.get_ref().clone()) {
                    c.at(
                        l.name.span(),
                        format!("line '{}' is defined twice", l.name.get_ref()),
                    );
                }
                let pts = l.points.get_ref();
                if pts.len() != 2 {
                    c.at(
                        l.points.span(),
                        format!(
                            "line '{}': needs exactly 2 points, got {}",
                            l.name.get_ref(),
                            pts.len()
                        ),
                    );
                } else if let Some(msg) = check_points(pts) {
                    c.at(
                        l.points.span(),
                        format!("line '{}': {msg}", l.name.get_ref()),
                    );
                } else if (pts[0][0] - pts[1][0]).hypot(pts[0][1] - pts[1][1]) < 1e-6 {
                    c.at(
                        l.points.span(),
                        format!("line '{}': its two points are the same", l.name.get_ref()),
                    );
                }
            }
            let mut lane_names = HashSet::new();
            for l in &cam.lanes {
                let ln = l.name.get_ref();
                if !lane_names.insert(ln.clone()) {
                    c.at(l.name.span(), format!("lane '{ln}' is defined twice"));
                }
                let poly = l.polygon.get_ref();
                if poly.len() < 3 {
                    c.at(
                        l.polygon.span(),
                        format!(
                            "lane '{ln}': a polygon needs at least 3 points, got {}",
                            poly.len()
                        ),
                    );
                } else if let Some(msg) = check_points(poly) {
                    c.at(l.polygon.span(), format!("lane '{ln}': {msg}"));
                }
                match &l.direction {
                    None => c.at(
                        l.name.span(),
                        format!("lane '{ln}' has no direction — add `direction = [[x1, y1], [x2, y2]]`, an arrow along the allowed travel"),
                    ),
                    Some(d) => {
                        let p = d.get_ref();
                        if p.len() != 2 {
                            c.at(d.span(), format!("lane '{ln}': direction needs exactly 2 points (tail, head), got {}", p.len()));
                        } else if let Some(msg) = check_points(p) {
                            c.at(d.span(), format!("lane '{ln}': direction {msg}"));
                        } else if (p[0][0] - p[1][0]).hypot(p[0][1] - p[1][1]) < 1e-6 {
                            c.at(d.span(), format!("lane '{ln}': direction has zero length"));
                        }
                    }
                }
                if let Some(man) = manifest {
                    for class in l.classes.get_ref() {
                        if !man.labels.iter().any(|x| x == class) {
                            c.at(
                                l.classes.span(),
                                format!("class '{class}' is not a label of model '{}'", man.name),
                            );
                        }
                    }
                }
            }
            if let Some(cal) = &cam.calibration {
                let (img, world) = (cal.image.get_ref(), cal.world.get_ref());
                if img.len() < 4 {
                    c.at(cal.image.span(), format!("calibration needs at least 4 image points with their road positions, got {}", img.len()));
                } else if img.len() != world.len() {
                    c.at(cal.world.span(), format!("calibration has {} image points but {} world points; give one world point (metres) per image point", img.len(), world.len()));
                } else if let Some(msg) = check_points(img) {
                    c.at(cal.image.span(), format!("calibration: {msg}"));
                } else if crate::rules::Homography::fit(img, world).is_none() {
                    c.at(
                        cal.image.span(),
                        "calibration points do not fit one ground-plane mapping (three on one line, or a point mistyped?); pick four corners of a road rectangle",
                    );
                }
            }
            if let Some(sig) = &cam.signal {
                match sig.source.get_ref() {
                    SignalSource::Image => {
                        if sig.hold_frames == 0 {
                            c.at(sig.source.span(), "signal hold_frames must be at least 1");
                        }
                        for (b, n) in [(&sig.red_lamp, "red_lamp"), (&sig.green_lamp, "green_lamp")]
                        {
                            match b {
                                None => c.at(sig.source.span(), format!("signal source 'image' needs `{n} = [[x1, y1], [x2, y2]]` around the lamp")),
                                Some(b) if b.get_ref().len() != 2 || check_points(b.get_ref()).is_some() => {
                                    c.at(b.span(), format!("{n} must be two normalised corners [[x1, y1], [x2, y2]]"))
                                }
                                _ => {}
                            }
                        }
                    }
                    SignalSource::Mqtt => {
                        if sig.max_age_secs.is_nan() || sig.max_age_secs <= 0.0 {
                            c.at(sig.source.span(), "signal max_age_secs must be above 0");
                        }
                        if sig.topic.as_ref().is_none_or(|t| {
                            t.get_ref().is_empty() || t.get_ref().contains(['#', '+'])
                        }) {
                            c.at(
                                sig.source.span(),
                                "signal source 'mqtt' needs `topic = \"...\"` (no wildcards)",
                            );
                        }
                    }
                }
            }
            for r in &cam.rules {
                let kind = *r.kind.get_ref();
                if kind == RuleKind::RedLight && cam.signal.is_none() {
                    c.at(r.kind.span(), format!("rule 'red_light' needs [cameras.signal] for camera '{cid}' (source = \"image\" or \"mqtt\")"));
                }
                if kind == RuleKind::RedLight && r.direction == Direction::Any {
                    c.at(
                        r.kind.span(),
                        "rule 'red_light' needs `direction`: the way traffic crosses the stop line into the junction (e.g. \"bottom_to_top\")",
                    );
                }
                let what = kind.as_str();
                match kind.needs() {
                    Needs::Zone => match &r.zone {
                        None => c.at(r.kind.span(), format!("rule '{what}' needs `zone = \"<zone name>\"`")),
                        Some(z) if !zone_names.contains(z.get_ref()) => c.at(
                            z.span(),
                            format!("zone '{}' is not defined for camera '{cid}' — add a [[cameras.zones]] with that name", z.get_ref()),
                        ),
                        _ => {}
                    },
                    Needs::Line => match &r.line {
                        None => c.at(r.kind.span(), format!("rule '{what}' needs `line = \"<line name>\"`")),
                        Some(l) if !line_names.contains(l.get_ref()) => c.at(
                            l.span(),
                            format!("line '{}' is not defined for camera '{cid}' — add a [[cameras.lines]] with that name", l.get_ref()),
                        ),
                        _ => {}
                    },
                    Needs::Lane => match &r.lane {
                        None => c.at(r.kind.span(), format!("rule '{what}' needs `lane = \"<lane name>\"`")),
                        Some(l) if !lane_names.contains(l.get_ref()) => c.at(
                            l.span(),
                            format!("lane '{}' is not defined for camera '{cid}' — add a [[cameras.lanes]] with that name", l.get_ref()),
                        ),
                        _ => {}
                    },
                    Needs::Nothing => {}
                }
                let cascade_kind = matches!(
                    kind,
                    RuleKind::NoHelmet | RuleKind::FireSmoke | RuleKind::Fight
                );
                if !cascade_kind && (r.model.is_some() || r.labels.is_some()) {
                    c.at(r.kind.span(), format!("`model` and `labels` apply to no_helmet, fire_smoke and fight only; remove them from this '{what}' rule"));
                }
                if r.min_votes == Some(0) {
                    c.at(r.kind.span(), "min_votes must be at least 1");
                }
                if cascade_kind {
                    match &r.model {
                        None => c.at(r.kind.span(), format!("rule '{what}' needs `model = \"<name>\"`: the model that judges it (see README, Cascades)")),
                        Some(m) => match manifests.iter().find(|(n, _)| n == m.get_ref()) {
                            None => c.at(m.span(), format!("model '{}' is not in [[models]] — add it there", m.get_ref())),
                            Some((_, Some(man))) => match &r.labels {
                                None => c.at(r.kind.span(), format!("rule '{what}' needs `labels = [...]`: the labels of model '{}' that mean a violation", man.name)),
                                Some(ls) => {
                                    for l in ls.get_ref() {
                                        if !man.labels.iter().any(|x| x == l) {
                                            c.at(ls.span(), format!("label '{l}' is not a label of model '{}'", man.name));
                                        }
                                    }
                                }
                            },
                            Some((_, None)) => {}
                        },
                    }
                    if let Some(z) = &r.zone
                        && !zone_names.contains(z.get_ref())
                    {
                        c.at(
                            z.span(),
                            format!("zone '{}' is not defined for camera '{cid}'", z.get_ref()),
                        );
                    }
                    if r.min_confidence.is_some_and(|v| !(0.0..=1.0).contains(&v))
                        || r.max_rate_hz.is_some_and(|v| v.is_nan() || v <= 0.0)
                    {
                        c.at(
                            r.kind.span(),
                            "min_confidence must be in 0..1 and max_rate_hz above 0",
                        );
                    }
                }
                if kind == RuleKind::Crowd && r.max_count.is_none() {
                    c.at(
                        r.kind.span(),
                        "rule 'crowd' needs `max_count`: the most persons allowed in the zone",
                    );
                }
                if kind == RuleKind::Speeding {
                    if r.speed_limit_kmh.is_none_or(|v| v <= 0.0) {
                        c.at(r.kind.span(), "rule 'speeding' needs `speed_limit_kmh` > 0");
                    }
                    if cam.calibration.is_none() {
                        c.at(r.kind.span(), format!("rule 'speeding' needs [cameras.calibration] for camera '{cid}' (image points and their road positions in metres)"));
                    }
                }
                for (v, n) in [
                    (r.min_secs, "min_secs"),
                    (r.dwell_secs, "dwell_secs"),
                    (r.min_distance, "min_distance"),
                    (r.max_move, "max_move"),
                ] {
                    if v.is_some_and(|x| x.is_nan() || x < 0.0 || !x.is_finite()) {
                        c.at(r.kind.span(), format!("{n} must be a non-negative number"));
                    }
                }
                if let Some(sch) = &r.schedule {
                    for t in [&sch.start, &sch.end] {
                        if crate::rules::parse_hhmm(t.get_ref()).is_none() {
                            c.at(
                                t.span(),
                                format!(
                                    "'{}' is not a time of day; write HH:MM, e.g. \"22:00\"",
                                    t.get_ref()
                                ),
                            );
                        }
                    }
                    if sch.tz.get_ref().parse::<chrono_tz::Tz>().is_err() {
                        c.at(sch.tz.span(), format!("'{}' is not a time zone; use an IANA name such as \"Asia/Ho_Chi_Minh\"", sch.tz.get_ref()));
                    }
                }
                if let Some(man) = manifest {
                    for class in r.classes.get_ref() {
                        if !man.labels.iter().any(|l| l == class) {
                            c.at(
                                r.classes.span(),
                                format!(
                                    "class '{class}' is not a label of model '{}' (e.g. {})",
                                    man.name,
                                    sample_labels(&man.labels)
                                ),
                            );
                        }
                    }
                }
                if !(0.0..=1.0).contains(&r.min_score) {
                    c.at(r.kind.span(), "min_score must be between 0 and 1");
                }
            }
        }
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.data_dir)
    }

    pub fn evidence_dir(&self) -> PathBuf {
        match &self.evidence.dir {
            Some(d) => self.resolve(d),
            None => self.data_dir().join("evidence"),
        }
    }

    /// The agent's Ed25519 evidence key.
    /// The evidence stage's settings with its folder and key resolved.
    pub fn evidence_place(&self) -> crate::evidence::EvidencePlace {
        crate::evidence::EvidencePlace {
            cfg: self.evidence.clone(),
            dir: self.evidence_dir(),
            key_path: self.key_path(),
            agent_id: self.agent_id.get_ref().clone(),
        }
    }

    pub fn key_path(&self) -> PathBuf {
        self.data_dir().join("agent.key")
    }

    /// The HTTP bearer token from `token`, `token_file` or `token_env`.
    pub fn http_token(&self) -> Result<Option<Secret>, String> {
        let Some(h) = &self.http else {
            return Ok(None);
        };
        if let Some(t) = &h.token {
            return Ok(Some(Secret(t.clone())));
        }
        if let Some(f) = &h.token_file {
            let path = self.resolve(f);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read http.token_file {}: {e}", path.display()))?;
            return Ok(Some(Secret(
                text.lines().next().unwrap_or("").trim().to_string(),
            )));
        }
        if let Some(v) = &h.token_env {
            return std::env::var(v)
                .map(|p| Some(Secret(p)))
                .map_err(|_| format!("http.token_env names ${v}, which is not set"));
        }
        Ok(None)
    }

    pub fn model_dir(&self) -> PathBuf {
        match &self.model_dir {
            Some(d) => self.resolve(d),
            None => self.data_dir().join("models"),
        }
    }

    pub fn manifest_path(&self, name: &str) -> PathBuf {
        self.resolve(&self.manifest_dir)
            .join(format!("{name}.toml"))
    }

    /// Path of the ONNX Runtime library to load.
    pub fn onnxruntime_path(&self) -> PathBuf {
        match &self.onnxruntime {
            Some(p) => self.resolve(p),
            None => default_onnxruntime_path(),
        }
    }

    /// `[mqtt]` as plain runtime values: paths resolved, the password read.
    pub fn mqtt_settings(&self) -> Result<MqttSettings, String> {
        let m = &self.mqtt;
        Ok(MqttSettings {
            url: m.url.get_ref().clone(),
            agent_id: self.agent_id.get_ref().clone(),
            client_id: self.client_id(),
            topic_prefix: m.topic_prefix.clone(),
            topic_layout: m.topic_layout,
            keep_alive_secs: m.keep_alive_secs,
            status_interval_secs: m.status_interval_secs,
            stats_interval_secs: m.stats_interval_secs,
            max_packet_bytes: m.max_packet_bytes,
            clean_session: m.clean_session,
            ca_file: m.ca_file.as_ref().map(|p| self.resolve(p)),
            cert_file: m.cert_file.as_ref().map(|p| self.resolve(p)),
            key_file: m.key_file.as_ref().map(|p| self.resolve(p)),
            username: m.username.clone(),
            password: if m.username.is_some() {
                self.mqtt_password()?
            } else {
                None
            },
        })
    }

    /// The MQTT topics of the enabled cameras' signal states, sorted, once each.
    pub fn signal_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .cameras
            .iter()
            .filter(|c| c.enabled)
            .filter_map(|c| c.signal.as_ref())
            .filter(|s| *s.source.get_ref() == SignalSource::Mqtt)
            .filter_map(|s| s.topic.as_ref().map(|t| t.get_ref().clone()))
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// The MQTT password from `password`, `password_file` or `password_env`.
    pub fn mqtt_password(&self) -> Result<Option<Secret>, String> {
        let m = &self.mqtt;
        if let Some(p) = &m.password {
            return Ok(Some(Secret(p.clone())));
        }
        if let Some(f) = &m.password_file {
            let path = self.resolve(f);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read mqtt.password_file {}: {e}", path.display()))?;
            return Ok(Some(Secret(text.lines().next().unwrap_or("").to_string())));
        }
        if let Some(v) = &m.password_env {
            return std::env::var(v)
                .map(|p| Some(Secret(p)))
                .map_err(|_| format!("mqtt.password_env names ${v}, which is not set"));
        }
        Ok(None)
    }

    /// The camera's detector: its `model`, else the first of `[[models]]`.
    pub fn camera_model<'a>(&'a self, cam: &'a CameraConfig) -> Option<&'a str> {
        cam.model
            .as_ref()
            .map(|m| m.get_ref().as_str())
            .or_else(|| self.models.first().map(|m| m.name.get_ref().as_str()))
    }

    /// Everything but the cameras (to tell whether a reload changed settings
    /// that need a restart).
    pub fn without_cameras(&self) -> Config {
        Config {
            cameras: Vec::new(),
            ..self.clone()
        }
    }

    pub fn client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("ioc-agent-{}", self.agent_id.get_ref()))
    }
}

/// `$ORT_DYLIB_PATH`, else the library's soname (found by the dynamic loader).
pub fn default_onnxruntime_path() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("libonnxruntime.so.{ORT_VERSION}")))
}

fn check_points(points: &[[f64; 2]]) -> Option<String> {
    for (i, p) in points.iter().enumerate() {
        if !(0.0..=1.0).contains(&p[0]) || !(0.0..=1.0).contains(&p[1]) {
            return Some(format!(
                "point {} [{}, {}] is outside the frame; coordinates are normalised to 0..1 (x / width, y / height)",
                i + 1,
                p[0],
                p[1]
            ));
        }
    }
    None
}

fn sample_labels(labels: &[String]) -> String {
    let mut s = labels
        .iter()
        .take(4)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if labels.len() > 4 {
        s.push_str(", …");
    }
    s
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_and_http_problems_point_at_their_keys() {
        let text = "agent_id = \"a\"\n[mqtt]\nurl = \"mqtt://h\"\n[evidence]\npre_secs = 500.0\n[http]\nlisten = \"nowhere\"\ntoken = \"short\"\n";
        let e = Config::parse(text, Path::new("a.toml"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.toml:5:1: evidence.pre_secs"), "{e}");
        assert!(e.contains("a.toml:7:1: http.listen 'nowhere'"), "{e}");
        assert!(e.contains("a.toml:8:1: http.token is too short"), "{e}");
    }

    #[test]
    fn mqtt_password_sources_and_never_printed() {
        let dir = std::env::temp_dir().join(format!("ioc-cfg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pw"), "Fil3Secret\nignored\n").unwrap();
        let text = |extra: &str| {
            format!("agent_id = \"a\"\n[mqtt]\nurl = \"mqtt://b\"\nusername = \"u\"\n{extra}\n")
        };
        let cfg = Config::parse(
            &text("password = \"Lit3ralSecret\""),
            Path::new("a.toml"),
            &dir,
        )
        .unwrap();
        assert_eq!(cfg.mqtt_password().unwrap().unwrap().0, "Lit3ralSecret");
        let shown = format!("{cfg:?} {:?}", cfg.mqtt_password().unwrap());
        assert!(!shown.contains("Lit3ralSecret"), "{shown}");
        let cfg =
            Config::parse(&text("password_file = \"pw\""), Path::new("a.toml"), &dir).unwrap();
        assert_eq!(cfg.mqtt_password().unwrap().unwrap().0, "Fil3Secret");
        let cfg = Config::parse(
            &text("password_env = \"IOC_TEST_UNSET_VAR_X\""),
            Path::new("a.toml"),
            &dir,
        )
        .unwrap();
        assert!(
            cfg.mqtt_password()
                .unwrap_err()
                .contains("IOC_TEST_UNSET_VAR_X")
        );
        let err = Config::parse(
            &text("password = \"a\"\npassword_file = \"pw\""),
            Path::new("a.toml"),
            &dir,
        )
        .unwrap_err();
        assert!(err.to_string().contains("one way only"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
