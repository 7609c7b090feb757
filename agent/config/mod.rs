//! Typed TOML configuration.
//!
//! Every field is documented with its default; defaults live in the `default_*`
//! functions of this module and nowhere else. Unknown keys are refused, and every
//! problem is reported as `file:line:column: what is wrong — how to fix it`.
//! Relative paths are resolved against the directory of the config file.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_spanned::Spanned;

mod check;
mod setup_file;

pub use setup_file::{SETUP_FILE, Setup, SetupLayer};

use crate::infer::manifest::Manifest;
use crate::publish::payload::Place;
use crate::rules::config::ModelLabels;

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
    /// The site's time zone (IANA name): times on the review page, in the
    /// overview picture's banner and in an exported record are shown in it,
    /// with the offset written. Payloads and manifests stay RFC 3339 UTC.
    /// Default `Asia/Ho_Chi_Minh`.
    #[serde(default = "default_time_zone")]
    pub time_zone: Spanned<String>,
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
    /// The installer-edited `<data_dir>/setup.toml` merged over this file,
    /// when there is one (not a TOML key).
    #[serde(skip)]
    pub setup: Option<SetupLayer>,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker address, `mqtt://host:port` (port default 1883) or
    /// `mqtts://host:port` (TLS, port default 8883). Required.
    pub url: Spanned<String>,
    /// More brokers, tried in order when the one in use is away: a
    /// cluster's other nodes, or a standby. Same login and TLS settings as
    /// `url`. The outbox keeps every alert across a move. Default none.
    #[serde(default)]
    pub failover_urls: Vec<Spanned<String>>,
    /// On a failover broker, seconds between checks (a TCP connect, no MQTT
    /// session) that `url` is back; the agent moves back when it is. 0
    /// stays on the failover broker. Default 60.
    #[serde(default = "default_failback")]
    pub failback_secs: u64,
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
    /// MQTT version the publisher speaks: `auto` (default: 5, or 3.1.1 when
    /// the broker does not speak 5), `5` or `3.1.1`. Over 5 a publish the
    /// broker refuses (its ACL, a limit) is seen and kept; over 3.1.1 a
    /// broker acknowledges such a publish and drops it unseen.
    #[serde(default)]
    pub protocol: crate::publish::link::Protocol,
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
            .field(
                "failover_urls",
                &self
                    .failover_urls
                    .iter()
                    .map(|u| u.get_ref())
                    .collect::<Vec<_>>(),
            )
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
    /// One token for every role (viewer, reviewer, installer, scraper), as
    /// user `admin`. Fine for a lab; on a ward give each person and each
    /// scraper their own `[[http.users]]` instead. Give it one way at most:
    /// `token`, `token_file` or `token_env`. Never logged.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub token_env: Option<String>,
    /// The people and programs that may log in, each with a role and their
    /// own token.
    #[serde(default)]
    pub users: Vec<HttpUser>,
    /// PEM certificate chain: with `tls_key_file`, serve HTTPS (the session
    /// cookie is then `Secure`).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file` (0640 root:ioc-agent).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Connections served at once (1–10000, default 512). At the cap a new
    /// connection closes the oldest one that has not sent a request yet.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client has to send its request headers, or finish its TLS
    /// handshake, and to send the next request on a kept-alive connection
    /// (1–300, default 10).
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: f64,
    /// Hours a login session lasts (0.1–168, default 12).
    #[serde(default = "default_session_hours")]
    pub session_hours: f64,
}

/// Who may use the HTTP server.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpUser {
    /// The user's name, recorded on every review they make
    /// (letters, digits, `.`, `-`, `_`; up to 64).
    pub name: String,
    /// `viewer` (events and evidence), `reviewer` (viewer + confirm, reject,
    /// hold), `installer` (the setup page) or `scraper` (`/metrics`).
    pub role: HttpRole,
    /// The user's token (at least 16 characters), one way: `token`,
    /// `token_file` or `token_env`.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub token_env: Option<String>,
}

impl std::fmt::Debug for HttpUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpUser")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_file", &self.token_file)
            .field("token_env", &self.token_env)
            .finish()
    }
}

/// What an HTTP user may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum HttpRole {
    Viewer,
    Reviewer,
    Installer,
    Scraper,
    /// Every role: the single `[http] token`.
    Admin,
}

impl HttpRole {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpRole::Viewer => "viewer",
            HttpRole::Reviewer => "reviewer",
            HttpRole::Installer => "installer",
            HttpRole::Scraper => "scraper",
            HttpRole::Admin => "admin",
        }
    }
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_file", &self.token_file)
            .field("token_env", &self.token_env)
            .field("users", &self.users)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("max_connections", &self.max_connections)
            .field("header_timeout_secs", &self.header_timeout_secs)
            .field("session_hours", &self.session_hours)
            .finish()
    }
}

fn default_max_connections() -> usize {
    512
}

fn default_header_timeout() -> f64 {
    10.0
}

fn default_session_hours() -> f64 {
    12.0
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

impl CameraConfig {
    /// The rule part of this camera's config, as the rule engine reads it.
    pub fn rule_setup(&self) -> RuleSetup<'_> {
        RuleSetup {
            zones: &self.zones,
            lines: &self.lines,
            lanes: &self.lanes,
            calibration: self.calibration.as_ref(),
            signal: self.signal.as_ref(),
            rules: &self.rules,
        }
    }
}

/// What the rule checks need of a model manifest.
fn model_labels(m: &Manifest) -> ModelLabels<'_> {
    ModelLabels {
        name: &m.name,
        labels: &m.labels,
    }
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
    /// Where the camera is: a name people know it by, address, coordinates,
    /// viewing direction and administrative units (`[cameras.place]`).
    /// Optional, but a violation record needs it: it goes into every alert,
    /// event update, signed manifest, overview picture and the review page.
    #[serde(default)]
    pub place: Option<Spanned<Place>>,
    /// RTSP URL of the camera (main stream). Credentials may be given as
    /// `rtsp://user:pass@host/...`; they are never logged. Required.
    pub url: Spanned<String>,
    /// Optional lower-resolution sub-stream used for detection; the main
    /// stream (`url`) is then recorded for evidence clips.
    #[serde(default)]
    pub detect_url: Option<Spanned<String>>,
    /// RTSP user name, with `password_file` or `password_env`: credentials
    /// kept out of the URL (and out of a ConfigMap). Not with credentials
    /// written in the URL.
    #[serde(default)]
    pub username: Option<String>,
    /// A file whose first line is the camera's RTSP password (0640
    /// root:ioc-agent).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the camera's RTSP password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The password read from `password_file` / `password_env` at load.
    #[serde(skip)]
    pub password: Option<Secret>,
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
    /// How RTP is carried: `auto` (default: TCP interleaved, UDP when the
    /// camera answers SETUP with 461 Unsupported Transport), `tcp` or `udp`.
    #[serde(default)]
    pub transport: crate::source::RtspTransport,
    /// Seconds a session may wait for its first keyframe (IDR) or recovery
    /// point (intra refresh) before it is dropped and reopened as not live.
    /// Default 30 (a GOP up to 30 s).
    #[serde(default = "default_keyframe_timeout")]
    pub keyframe_timeout_secs: f64,
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
    /// Frames due at `detect_fps` that show no change since the model last
    /// saw the camera skip the model; its last answer stands for them, so
    /// still objects stay tracked. Default false (being measured, #19).
    #[serde(default)]
    pub skip_quiet_frames: bool,
    /// With `skip_quiet_frames`, the model still sees the camera at least
    /// this often (seconds, 0.1–60). Default 2.
    #[serde(default = "default_quiet_refresh")]
    pub quiet_refresh_secs: f64,
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

impl CameraConfig {
    /// `url` with `username` and the password from `password_file` /
    /// `password_env` put in (the source takes them out again and never logs
    /// them); unchanged without them or when the URL has its own.
    fn with_credentials(&self, raw: &str) -> String {
        let (Some(user), Some(pw)) = (&self.username, &self.password) else {
            return raw.to_string();
        };
        match url::Url::parse(raw) {
            Ok(mut u) if u.username().is_empty() => {
                let _ = u.set_username(user);
                let _ = u.set_password(Some(&pw.0));
                u.to_string()
            }
            _ => raw.to_string(),
        }
    }

    /// The camera's source settings as plain values.
    pub fn source_settings(&self) -> crate::source::SourceSettings {
        let secs = crate::base::secs;
        crate::source::SourceSettings {
            url: self.with_credentials(self.url.get_ref()),
            detect_url: self
                .detect_url
                .as_ref()
                .map(|u| self.with_credentials(u.get_ref())),
            connect_timeout: secs(self.connect_timeout_secs),
            inactivity_timeout: secs(self.inactivity_timeout_secs),
            keyframe_timeout: secs(self.keyframe_timeout_secs),
            transport: self.transport,
            backoff_min: secs(self.backoff_min_secs),
            backoff_max: secs(self.backoff_max_secs),
        }
    }
}

pub use crate::rules::config::{
    CalibrationConfig, CropRegion, Direction, LaneConfig, LineConfig, Needs, RuleConfig, RuleKind,
    RuleSetup, ScheduleConfig, SignalConfig, SignalSource, ZoneConfig,
};

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_manifest_dir() -> PathBuf {
    PathBuf::from("models")
}
fn default_time_zone() -> Spanned<String> {
    Spanned::new(0..0, "Asia/Ho_Chi_Minh".into())
}
/// The site's time zone; the default when the name is not one (check-config
/// refuses it first).
pub fn site_time_zone(cfg: &Config) -> chrono_tz::Tz {
    cfg.time_zone
        .get_ref()
        .parse()
        .unwrap_or(chrono_tz::Asia::Ho_Chi_Minh)
}
fn default_log() -> String {
    "info".into()
}
fn default_prefix() -> String {
    "ioc/v1".into()
}
fn default_failback() -> u64 {
    60
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
fn default_true() -> bool {
    true
}
fn default_connect_timeout() -> f64 {
    10.0
}
fn default_inactivity() -> f64 {
    10.0
}
fn default_keyframe_timeout() -> f64 {
    30.0
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
fn default_quiet_refresh() -> f64 {
    2.0
}

pub use crate::base::diag::{Collector, Problem, line_col};

/// A config that could not be read or is invalid; `Display` lists every problem
/// as `file:line:column: message`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {err} — check the path and its permissions")]
    Read { path: PathBuf, err: std::io::Error },
    #[error(
        "cannot read the setup page's settings {path}: {err} — it is in the agent's data_dir, readable by the service user: run this as that user (sudo -u ioc-agent ioc-agent …) or fix the file's owner (ioc-agent)"
    )]
    ReadSetup { path: PathBuf, err: std::io::Error },
    #[error("{}", format_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn format_problems(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| {
            let file = p.file.as_deref().unwrap_or(path);
            format!("{}:{}:{}: {}", file.display(), p.line, p.column, p.message)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads, parses and validates a config file, with the installer-edited
    /// `<data_dir>/setup.toml` merged over it when there is one. Model
    /// manifests are loaded to check model names and classes.
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
        Self::parse_with(&text, path, &base, Setup::FromDataDir)
    }

    /// Parses and validates config text alone; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        Self::parse_with(text, path, base_dir, Setup::None)
    }

    /// Parses config text, merges the setup file `setup` names over it and
    /// validates the result; each problem names the file it is in.
    pub fn parse_with(
        text: &str,
        path: &Path,
        base_dir: &Path,
        setup: Setup<'_>,
    ) -> Result<Config, ConfigError> {
        let syntax = |file: &Path, t: &str, offset: usize, e: toml::de::Error| {
            let at = e
                .span()
                .map(|s| s.start)
                .unwrap_or(0)
                .saturating_sub(offset);
            let (line, column) = line_col(t, at);
            let mut message = e.message().trim().to_string();
            if message.starts_with("unknown field") {
                message.push_str(" — remove it or fix its spelling (see README, Config reference)");
            }
            ConfigError::Invalid {
                path: file.to_path_buf(),
                problems: vec![Problem {
                    file: None,
                    line,
                    column,
                    message,
                }],
            }
        };
        let mut cfg: Config = toml::from_str(text).map_err(|e| syntax(path, text, 0, e))?;
        cfg.base_dir = base_dir.to_path_buf();
        // The setup file: its text, and where it is.
        let from_dir;
        let layer: Option<(&str, PathBuf)> = match setup {
            Setup::None => None,
            Setup::Text(t, p) => Some((t, p.to_path_buf())),
            Setup::FromDataDir => {
                let p = cfg.data_dir().join(SETUP_FILE);
                match std::fs::read_to_string(&p) {
                    Ok(t) => {
                        from_dir = t;
                        Some((from_dir.as_str(), p))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(err) => return Err(ConfigError::ReadSetup { path: p, err }),
                }
            }
        };
        let padded;
        let mut c = match &layer {
            Some((ltext, lpath)) => {
                let (p, offset) = crate::base::diag::pad_for_layer(text, ltext);
                padded = p;
                let file: setup_file::SetupFile =
                    toml::from_str(&padded).map_err(|e| syntax(lpath, ltext, offset, e))?;
                cfg.setup = Some(file.merge_into(&mut cfg.cameras, lpath, ltext, offset));
                Collector::with_layer(text, ltext, offset, lpath.clone())
            }
            None => Collector::new(text),
        };
        let mut read_errors = Vec::new();
        for i in 0..cfg.cameras.len() {
            let cam = &cfg.cameras[i];
            let what = format!("camera '{}': password", cam.id.get_ref());
            match cfg.secret(&what, &None, &cam.password_file, &cam.password_env) {
                Ok(pw) => cfg.cameras[i].password = pw,
                Err(e) => read_errors.push((cfg.cameras[i].id.span(), e)),
            }
        }
        cfg.validate(&mut c);
        for (span, e) in read_errors {
            c.at(span, e);
        }
        let problems = c.into_problems();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
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

    /// The evidence stage's settings with its folder resolved.
    pub fn evidence_place(&self) -> crate::evidence::EvidencePlace {
        crate::evidence::EvidencePlace {
            cfg: self.evidence.clone(),
            dir: self.evidence_dir(),
            agent_id: self.agent_id.get_ref().clone(),
        }
    }

    pub fn key_path(&self) -> PathBuf {
        self.data_dir().join("agent.key")
    }

    /// The signer's socket (`evidence.signer_socket`), resolved.
    pub fn signer_socket(&self) -> Option<PathBuf> {
        self.evidence
            .signer_socket
            .as_ref()
            .map(|p| self.resolve(p))
    }

    /// The key this agent signs with now: asked of the signer process when
    /// `evidence.signer_socket` is set, else read from `agent.key` (never
    /// created here). None when there is no key yet.
    pub fn current_public_key(
        &self,
    ) -> Result<Option<ed25519_dalek::VerifyingKey>, crate::evidence::sign::SignError> {
        use crate::evidence::sign::Sign;
        match self.signer_socket() {
            Some(s) => {
                crate::evidence::signer::Remote::connect(&s, std::time::Duration::from_secs(2))
                    .map(|r| Some(r.public()))
            }
            None if self.key_path().exists() => {
                crate::evidence::sign::public_key_of(&self.key_path()).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The public keys this agent signed with before a `key rotate`.
    pub fn retired_keys_path(&self) -> PathBuf {
        self.data_dir().join("retired-keys.trust")
    }

    /// A secret given inline, in a file (its first line) or in an
    /// environment variable; `what` names the keys in errors.
    fn secret(
        &self,
        what: &str,
        inline: &Option<String>,
        file: &Option<PathBuf>,
        env: &Option<String>,
    ) -> Result<Option<Secret>, String> {
        if let Some(t) = inline {
            return Ok(Some(Secret(t.clone())));
        }
        if let Some(f) = file {
            let path = self.resolve(f);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "cannot read {what}_file {}: {e} — the service user must be able to read it (e.g. chmod 0640, chown root:ioc-agent)",
                    path.display()
                )
            })?;
            return Ok(Some(Secret(
                text.lines().next().unwrap_or("").trim().to_string(),
            )));
        }
        if let Some(v) = env {
            return std::env::var(v)
                .map(|p| Some(Secret(p)))
                .map_err(|_| format!("{what}_env names ${v}, which is not set"));
        }
        Ok(None)
    }

    /// The single `[http]` token (user `admin`, every role).
    pub fn http_token(&self) -> Result<Option<Secret>, String> {
        let Some(h) = &self.http else {
            return Ok(None);
        };
        self.secret("http.token", &h.token, &h.token_file, &h.token_env)
    }

    /// Every HTTP user with its token: `[[http.users]]`, and `admin` for the
    /// single `[http] token`.
    pub fn http_users(&self) -> Result<Vec<(String, HttpRole, Secret)>, String> {
        let Some(h) = &self.http else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if let Some(t) = self.http_token()? {
            out.push(("admin".to_string(), HttpRole::Admin, t));
        }
        for u in &h.users {
            let what = format!("http.users '{}': token", u.name);
            let t = self
                .secret(&what, &u.token, &u.token_file, &u.token_env)?
                .ok_or_else(|| format!("{what}: none given; set token, token_file or token_env"))?;
            out.push((u.name.clone(), u.role, t));
        }
        Ok(out)
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
            failover_urls: m
                .failover_urls
                .iter()
                .map(|u| u.get_ref().clone())
                .collect(),
            failback_secs: m.failback_secs,
            agent_id: self.agent_id.get_ref().clone(),
            client_id: self.client_id(),
            topic_prefix: m.topic_prefix.clone(),
            topic_layout: m.topic_layout,
            keep_alive_secs: m.keep_alive_secs,
            status_interval_secs: m.status_interval_secs,
            stats_interval_secs: m.stats_interval_secs,
            max_packet_bytes: m.max_packet_bytes,
            clean_session: m.clean_session,
            protocol: m.protocol,
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

    /// A signal's traffic-controller key, from `controller_key` or
    /// `controller_key_file`; `None` when it has neither.
    pub fn signal_key(
        &self,
        sig: &SignalConfig,
    ) -> Result<Option<crate::rules::controller::VerifyingKey>, String> {
        use crate::rules::controller::parse_key;
        if let Some(k) = &sig.controller_key {
            return parse_key(k.get_ref()).map(Some);
        }
        let Some(f) = &sig.controller_key_file else {
            return Ok(None);
        };
        let path = self.resolve(f.get_ref());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read controller_key_file {}: {e} — check the path and its permissions",
                path.display()
            )
        })?;
        parse_key(text.lines().next().unwrap_or(""))
            .map(Some)
            .map_err(|m| format!("controller_key_file {}: {m}", path.display()))
    }

    /// The enabled cameras' MQTT signals, as `(camera, signal, topic)`.
    fn mqtt_signals(&self) -> impl Iterator<Item = (&CameraConfig, &SignalConfig, &str)> {
        self.cameras
            .iter()
            .filter(|c| c.enabled)
            .filter_map(|c| Some((c, c.signal.as_ref()?)))
            .filter(|(_, s)| *s.source.get_ref() == SignalSource::Mqtt)
            .filter_map(|(c, s)| Some((c, s, s.topic.as_ref()?.get_ref().as_str())))
    }

    /// The MQTT topics of the enabled cameras' signal states, once each,
    /// with the controller key each trusts and the longest `max_age_secs`
    /// of the cameras reading it.
    pub fn signal_topics(&self) -> Result<crate::rules::controller::SignalTopics, String> {
        use crate::rules::controller::TopicTrust;
        let mut out = crate::rules::controller::SignalTopics::new();
        for (_, sig, topic) in self.mqtt_signals() {
            let key = self.signal_key(sig)?;
            let max_age = crate::base::secs(sig.max_age_secs.max(0.1));
            let t = out
                .entry(topic.to_string())
                .or_insert(TopicTrust { key, max_age });
            t.max_age = t.max_age.max(max_age);
        }
        Ok(out)
    }

    /// Signal topics whose states are taken from any client the broker
    /// lets publish there (no `controller_key`), once each.
    pub fn untrusted_signal_topics(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .mqtt_signals()
            .filter(|(_, s, _)| s.controller_key.is_none() && s.controller_key_file.is_none())
            .map(|(_, _, t)| t.to_string())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Things that are allowed but worth knowing (check-config prints them,
    /// `run` logs them once at start).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let open = self.untrusted_signal_topics();
        if !open.is_empty() {
            out.push(untrusted_signal_warning(&open));
        }
        if let Some(s) = &self.setup {
            out.extend(s.ignored.iter().cloned());
        }
        out
    }

    /// The MQTT password from `password`, `password_file` or `password_env`.
    pub fn mqtt_password(&self) -> Result<Option<Secret>, String> {
        let m = &self.mqtt;
        self.secret(
            "mqtt.password",
            &m.password,
            &m.password_file,
            &m.password_env,
        )
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

/// The warning for signal topics without `controller_key`.
pub fn untrusted_signal_warning(topics: &[String]) -> String {
    format!(
        "signal states on {} are trusted from any client the broker lets publish there, so a broker user could fake a red light — set controller_key in [cameras.signal] (signed controller messages) and restrict publishing with the broker ACL (docs: Traffic signal, \"Trusting the controller\")",
        topics.join(", ")
    )
}

/// `$ORT_DYLIB_PATH`, else the library's soname (found by the dynamic loader).
pub fn default_onnxruntime_path() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("libonnxruntime.so.{ORT_VERSION}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just("nan".to_string()),
            Just("inf".to_string()),
            Just("-inf".to_string()),
            Just("1e19".to_string()),
            Just("-1.0".to_string()),
            Just("0.0".to_string()),
            (-1e6f64..1e6).prop_map(|v| format!("{v:.3}")),
        ]
    }

    #[test]
    fn camera_password_comes_from_a_file_and_never_prints() {
        let dir = std::env::temp_dir().join(format!("ioc-campw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cam.pw"), "p@ss:w/rd\n").unwrap();
        let text = "agent_id = \"a\"\n[mqtt]\nurl = \"mqtt://b\"\n[[cameras]]\nid = \"c\"\n\
                    url = \"rtsp://10.0.0.1:554/s\"\ndetect_url = \"rtsp://10.0.0.1:554/sub\"\n\
                    username = \"ioc\"\npassword_file = \"cam.pw\"\n";
        let cfg = Config::parse(text, Path::new("a.toml"), &dir).unwrap();
        let s = cfg.cameras[0].source_settings();
        let (u, creds) = crate::source::parse_rtsp_url(&s.url).unwrap();
        let creds = creds.unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("ioc", "p@ss:w/rd")
        );
        assert_eq!(u.as_str(), "rtsp://10.0.0.1:554/s");
        assert!(s.detect_url.as_deref().unwrap().contains("ioc:"));
        assert!(
            !format!("{:?}", cfg.cameras[0]).contains("p@ss"),
            "the password is in Debug"
        );
        // Missing file: located on the camera, naming the file and the fix.
        let bad = text.replace("cam.pw", "nope.pw");
        let e = Config::parse(&bad, Path::new("a.toml"), &dir)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a.toml:5:") && e.contains("nope.pw") && e.contains("0640"),
            "{e}"
        );
        // Both in the URL and in username: refused.
        let both = text.replace("rtsp://10.0.0.1:554/s\"", "rtsp://x:y@10.0.0.1:554/s\"");
        let e = Config::parse(&both, Path::new("a.toml"), &dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("one way"), "{e}");
        // A password without a user name: refused.
        let nouser = text.replace("username = \"ioc\"\n", "");
        let e = Config::parse(&nouser, Path::new("a.toml"), &dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("go together"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]
        /// No number in a camera's or the signal's settings panics the
        /// checker, and whatever it accepts converts to settings without a
        /// panic (the camera task's start).
        #[test]
        fn no_number_panics_the_checker_or_the_start(
            key in proptest::sample::select(vec![
                "connect_timeout_secs", "inactivity_timeout_secs", "keyframe_timeout_secs", "backoff_min_secs",
                "backoff_max_secs", "detect_fps", "priority", "quiet_refresh_secs",
            ]),
            v in number(),
            age in number(),
        ) {
            let text = format!(
                "agent_id = \"a\"\n[mqtt]\nurl = \"mqtt://b\"\n[[cameras]]\nid = \"c\"\nurl = \"rtsp://10.0.0.1/s\"\n{key} = {v}\n\
                 [cameras.signal]\nsource = \"mqtt\"\ntopic = \"t/s\"\nmax_age_secs = {age}\n"
            );
            if let Ok(cfg) = Config::parse(&text, Path::new("a.toml"), Path::new(".")) {
                for cam in &cfg.cameras {
                    let _ = cam.source_settings();
                }
                let _ = cfg.signal_topics();
            }
        }
    }

    #[test]
    fn setup_file_replaces_geometry_and_problems_name_their_file() {
        let text = "agent_id = \"a\"\n[mqtt]\nurl = \"mqtt://h\"\n[[models]]\nname = \"yolox_nano\"\n\n[[cameras]]\nid = \"c\"\nurl = \"rtsp://c/1\"\n[[cameras.zones]]\nname = \"gate\"\npolygon = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]\n[[cameras.rules]]\nname = \"in gate\"\nkind = \"zone_enter\"\nzone = \"gate\"\nclasses = [\"person\"]\n";
        let setup_path = Path::new("/var/lib/x/setup.toml");
        let parse = |setup: &str| {
            Config::parse_with(
                text,
                Path::new("agent.toml"),
                Path::new("."),
                Setup::Text(setup, setup_path),
            )
        };
        // The zone keeps its name, moves: the setup file wins.
        let cfg = parse("[[cameras]]\nid = \"c\"\n[[cameras.zones]]\nname = \"gate\"\npolygon = [[0.2, 0.2], [0.9, 0.2], [0.9, 0.9], [0.2, 0.9]]\n").unwrap();
        assert_eq!(cfg.cameras[0].zones[0].polygon.get_ref().len(), 4);
        assert_eq!(
            cfg.cameras[0].rules.len(),
            1,
            "rules stay the config file's"
        );
        let layer = cfg.setup.as_ref().unwrap();
        assert_eq!(layer.applied, vec![("c".to_string(), vec!["zones"])]);
        // A bad polygon in the setup file is reported in the setup file.
        let e = parse("# note\n[[cameras]]\nid = \"c\"\n[[cameras.zones]]\nname = \"gate\"\npolygon = [[0.2, 0.2], [0.9, 0.2]]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/var/lib/x/setup.toml:6:11: zone 'gate'"),
            "{e}"
        );
        // A rule whose zone the setup file renamed away: reported at the
        // rule, in the config file.
        let e = parse("[[cameras]]\nid = \"c\"\n[[cameras.zones]]\nname = \"other\"\npolygon = [[0.2, 0.2], [0.9, 0.2], [0.9, 0.9]]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent.toml:1"), "{e}");
        assert!(!e.contains("setup.toml"), "{e}");
        // Syntax and unknown keys: the setup file's line.
        let e = parse("\n[[cameras]]\nid = \"c\"\nurl = \"rtsp://elsewhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/var/lib/x/setup.toml:4:1: unknown field `url`"),
            "{e}"
        );
        // A camera the config file no longer has: a warning, not a refusal.
        let cfg = parse("[[cameras]]\nid = \"gone\"\nzones = []\n").unwrap();
        let w = cfg.warnings().join("\n");
        assert!(
            w.contains("setup.toml:2: camera 'gone' is not in the config file"),
            "{w}"
        );
    }

    #[test]
    fn load_reads_the_setup_file_from_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("agent.toml");
        std::fs::write(&cfg_path, "agent_id = \"a\"\ndata_dir = \"state\"\n[mqtt]\nurl = \"mqtt://h\"\n[[cameras]]\nid = \"c\"\nurl = \"rtsp://c/1\"\n").unwrap();
        let cfg = Config::load(&cfg_path).unwrap();
        assert!(cfg.setup.is_none(), "no setup file: none merged");
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("state/setup.toml"), "[[cameras]]\nid = \"c\"\n[[cameras.lines]]\nname = \"stop\"\npoints = [[0.0, 0.5], [1.0, 0.5]]\n").unwrap();
        let cfg = Config::load(&cfg_path).unwrap();
        assert_eq!(cfg.cameras[0].lines[0].name.get_ref(), "stop");
        assert!(cfg.setup.unwrap().summary().contains("c (lines)"));
        // Unreadable (a directory in its place): refused, naming the file and the fix.
        std::fs::remove_file(dir.path().join("state/setup.toml")).unwrap();
        std::fs::create_dir(dir.path().join("state/setup.toml")).unwrap();
        let e = Config::load(&cfg_path).unwrap_err().to_string();
        assert!(
            e.contains("setup.toml") && e.contains("sudo -u ioc-agent"),
            "{e}"
        );
    }

    #[test]
    fn place_and_time_zone_problems_name_the_fix() {
        let good = "agent_id = \"a\"\ntime_zone = \"Asia/Ho_Chi_Minh\"\n[mqtt]\nurl = \"mqtt://h\"\n[[cameras]]\nid = \"c\"\nurl = \"rtsp://10.0.0.1/s\"\n\
            [cameras.place]\nname = \"Ngã tư Hàng Bạc\"\nlat = 21.0341\nlon = 105.852\nheading_deg = 90.0\n\
            ward = { code = \"00070\", name = \"Phường Hoàn Kiếm\" }\nprovince = { code = \"01\", name = \"Thành phố Hà Nội\" }\n";
        let cfg = Config::parse(good, Path::new("a.toml"), Path::new(".")).unwrap();
        let place = cfg.cameras[0].place.as_ref().unwrap().get_ref();
        assert_eq!(
            place.line(),
            "Ngã tư Hàng Bạc, Phường Hoàn Kiếm, Thành phố Hà Nội"
        );
        assert_eq!(site_time_zone(&cfg), chrono_tz::Asia::Ho_Chi_Minh);
        for (from, to, want) in [
            ("lat = 21.0341", "lat = 121.0", "`lat` must be a latitude"),
            ("lat = 21.0341\n", "", "give `lat` and `lon` together"),
            ("lon = 105.852", "lon = nan", "`lon` must be a longitude"),
            (
                "heading_deg = 90.0",
                "heading_deg = 360.0",
                "`heading_deg` must be degrees",
            ),
            (
                "\"00070\"",
                "\"70\"",
                "`ward.code` must be the official 5-digit code",
            ),
            (
                "\"01\"",
                "\"1A\"",
                "`province.code` must be the official 2-digit code",
            ),
            (
                "name = \"Ngã tư Hàng Bạc\"",
                "name = \" \"",
                "`name` must be 1 to 200 characters",
            ),
            (
                "Asia/Ho_Chi_Minh",
                "Asia/Hanoi_City",
                "time_zone 'Asia/Hanoi_City' is not a time zone",
            ),
        ] {
            assert!(good.contains(from), "{from}");
            let e = Config::parse(
                &good.replacen(from, to, 1),
                Path::new("a.toml"),
                Path::new("."),
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains(want) && e.contains("a.toml:"),
                "{from} -> {to}: {e}"
            );
        }
        let unknown = good.replace("heading_deg", "heading");
        let e = Config::parse(&unknown, Path::new("a.toml"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("heading"), "{e}");
    }

    #[test]
    fn failover_brokers_are_checked_and_named() {
        let text = |extra: &str| format!("agent_id = \"a\"\n[mqtt]\nurl = \"mqtt://h\"\n{extra}\n");
        let cfg = Config::parse(
            &text("failover_urls = [\"mqtt://standby:1884\", \"mqtts://c\"]\nfailback_secs = 0"),
            Path::new("a.toml"),
            Path::new("."),
        )
        .unwrap();
        let m = cfg.mqtt_settings().unwrap();
        assert_eq!(m.failover_urls, ["mqtt://standby:1884", "mqtts://c"]);
        assert_eq!(m.failback_secs, 0);
        for (extra, want) in [
            (
                "failover_urls = [\"http://x\"]",
                "a.toml:4:18: mqtt.failover_urls[0]:",
            ),
            (
                "failover_urls = [\"mqtt://h\"]",
                "mqtt.failover_urls[0] (mqtt://h) is already in the list",
            ),
            (
                "failover_urls = [\"mqtt://s\", \"mqtt://s\"]",
                "mqtt.failover_urls[1] (mqtt://s) is already in the list",
            ),
            (
                "failback_secs = 90000",
                "mqtt.failback_secs must be between 0 and 86400",
            ),
        ] {
            let e = Config::parse(&text(extra), Path::new("a.toml"), Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{extra}: {e}");
        }
    }

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
    fn signal_topics_carry_their_key_and_longest_max_age() {
        let public = hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&[7; 32])
                .verifying_key()
                .as_bytes(),
        );
        let cam = |id: &str, topic: &str, age: u32, extra: &str| {
            format!(
                "[[cameras]]\nid = \"{id}\"\nurl = \"rtsp://h/{id}\"\n{extra}\n[cameras.signal]\nsource = \"mqtt\"\ntopic = \"{topic}\"\nmax_age_secs = {age}\n"
            )
        };
        let key = format!("controller_key = \"{public}\"");
        let text = format!(
            "agent_id = \"a\"\n[mqtt]\nurl = \"mqtt://b\"\n{}{}{}{}",
            cam("n1", "j/north", 5, ""),
            cam("n2", "j/north", 20, ""),
            cam("e1", "j/east", 10, "")
                .replace("max_age_secs = 10", &format!("max_age_secs = 10\n{key}")),
            cam("off", "j/west", 10, "enabled = false"),
        );
        let cfg = Config::parse(&text, Path::new("a.toml"), Path::new(".")).unwrap();
        let t = cfg.signal_topics().unwrap();
        assert_eq!(t.keys().collect::<Vec<_>>(), ["j/east", "j/north"]);
        assert_eq!(t["j/north"].max_age, std::time::Duration::from_secs(20));
        assert_eq!(t["j/north"].key, None);
        assert_eq!(
            t["j/east"].key.map(|k| hex::encode(k.as_bytes())),
            Some(public)
        );
        assert_eq!(cfg.untrusted_signal_topics(), ["j/north"]);
        let w = cfg.warnings();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("j/north") && !w[0].contains("j/east"),
            "{w:?}"
        );
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
