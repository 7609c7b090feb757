//! `ioc-agent`: an edge video-analytics agent for city Intelligent Operations
//! Centers. One agent runs on each ward's edge box.
//!
//! The frame's journey, per camera:
//!
//! ```text
//!  camera ──RTSP/TCP──▶ source (retina, SIMPLE Annex B, waits for a keyframe)
//!                          │ encoded access units (whole GOPs dropped if the decoder is behind)
//!                          ▼
//!                      decode (GStreamer appsrc → parse → best decoder → I420 → appsink)
//!                          │ only frames due at detect_fps are copied; newest wins (watch)
//!                          ▼
//!                      infer (ort session on its own thread; fused letterbox + YUV→tensor;
//!                          │  manifest's output decoder + NMS)
//!                          ▼
//!                      track (ByteTrack-style, sans-IO) ──▶ rules (zones, lines; sans-IO)
//!                          │ one firing per object per rule
//!                          ▼
//!                      evidence (annotated JPEG thumbnail, only the thumbnail's pixels)
//!                          │ committed to the durable SQLite outbox (store; bounded, drops counted)
//!                          ▼
//!                      publish (MQTT QoS 1: alert JSON, thumbnail JPEG; a row is deleted only on
//!                               PUBACK; retained status + Last Will; periodic stats)
//! ```
//!
//! A supervisor per camera retries failed sessions with jittered backoff; one
//! camera failing never stops another.
//!
//! # The dependency direction
//!
//! Modules are layered. A module may use modules of *lower* layers only —
//! never its own layer or a higher one — so there are no module cycles.
//! `tests/it/layering.rs` reads this table and fails on any `crate::…` path
//! (or `super::` to the crate root) against the direction.
//!
//! ```text
//! layer 0: base notify
//! layer 1: decode store
//! layer 2: source infer
//! layer 3: track
//! layer 4: rules
//! layer 5: publish
//! layer 6: evidence
//! layer 7: config
//! layer 8: http
//! layer 9: run
//! layer 10: simulate probe
//! layer 11: doctor bench
//! layer 12: cli
//! ```
//!
//! - `base`: leaf helpers (backoff, secrets, diagnostics) that import nothing.
//! - The stages (`decode` … `evidence`) follow the frame's journey upward and
//!   own their config sections (`evidence::config`, `publish::MqttSettings`);
//!   they take plain values, never the whole `Config`.
//! - `config` aggregates the sections, loads and checks the file (problems
//!   as `file:line:column`) and hands each stage its plain settings.
//! - `http` (review and setup pages, metrics) reads the whole config; `run`
//!   wires the stages per camera; the commands sit on top, `cli` last.

pub mod base;
pub mod bench;
pub mod cli;
pub mod config;
pub mod decode;
pub mod doctor;
pub mod evidence;
pub mod http;
pub mod infer;
pub mod notify;
pub mod probe;
pub mod publish;
pub mod rules;
pub mod run;
pub mod simulate;
pub mod source;
pub mod store;
pub mod track;
