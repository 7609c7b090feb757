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

pub mod base;
pub mod bench;
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
