//! One camera's task, shaped like moonfire-nvr's `Streamer`: [`supervise`]
//! runs sessions until the camera is stopped, with jittered backoff between
//! them (reset after a session that ran a minute); a panic in a session is
//! caught, shown as state `failed` with its reason, counted, and the camera
//! restarted. [`Camera::session`] is the frame's journey; each stage's work
//! lives in its stage (decode sheds GOPs, evidence keeps pictures and plates,
//! rules run cascades, publish builds alerts).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::analysis::Analysis;
use crate::config::{CameraConfig, EvidenceConfig};
use crate::decode::{self, DecodeError, DecodePipeline, Frame, FrameCounters};
use crate::evidence::camera::PlateSetup;
use crate::evidence::ring::GopRing;
use crate::evidence::{self, Evidence};
use crate::infer::{DetectorHandle, InferError};
use crate::publish::payload::{CameraState, SkipCounts};
use crate::publish::signals::SignalBoard;
use crate::publish::{PublisherHandle, StatusBoard};
use crate::source::{Opener, SourceError, SourceSettings, redact};

/// Errors that end one camera session (the supervisor retries). Only the
/// source, the decoder and the camera's own detector can end a session;
/// optional enrichment (plates, cascades) is logged and counted instead.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Infer(#[from] InferError),
    #[error(transparent)]
    Rules(#[from] crate::rules::RuleError),
    /// Frames arrive but pictures do not advance.
    #[error("not live: {0}")]
    Stalled(super::ingest::Stall),
}

/// What every camera task shares.
pub(super) struct Shared {
    pub agent_id: String,
    /// Every loaded model by name (detectors and cascade models).
    pub detectors: Arc<HashMap<String, DetectorHandle>>,
    pub default_model: Option<String>,
    pub publisher: PublisherHandle,
    pub status: Arc<StatusBoard>,
    pub signals: Option<Arc<SignalBoard>>,
    pub evidence: Option<Arc<Evidence>>,
    pub plates: Option<Arc<PlateSetup>>,
    pub evidence_cfg: EvidenceConfig,
    /// The site's time zone (`time_zone`), for times burnt into pictures.
    pub time_zone: chrono_tz::Tz,
    /// Newest analysed frame per camera, for the setup page.
    pub snapshots: Arc<crate::http::setup::Snapshots>,
    /// Enabled cameras in the running config (decoder thread budget).
    pub enabled_cameras: AtomicUsize,
    /// Opens camera streams (RTSP; tests inject their own).
    pub opener: Arc<dyn Opener>,
}

/// A camera's settings as the running task uses them: plain values, built
/// once from its `[[cameras]]` table (rules compile their own part).
#[derive(Debug)]
pub(super) struct CameraSettings {
    pub id: String,
    pub source: SourceSettings,
    pub detect_fps: f64,
    pub priority: f64,
    pub decoder: Option<String>,
    pub decoders: Vec<String>,
    pub decoder_threads: u32,
    pub thumbnail_max_side: u32,
    pub skip_quiet_frames: bool,
    pub quiet_refresh_secs: f64,
    /// The camera's rules and signal, compiled by the rules stage per session.
    pub config: CameraConfig,
}

impl CameraSettings {
    pub fn new(cam: &CameraConfig) -> CameraSettings {
        CameraSettings {
            id: cam.id.get_ref().clone(),
            source: cam.source_settings(),
            detect_fps: *cam.detect_fps.get_ref(),
            priority: cam.priority,
            decoder: cam.decoder.clone(),
            decoders: cam.decoders.clone(),
            decoder_threads: cam.decoder_threads,
            thumbnail_max_side: cam.thumbnail_max_side,
            skip_quiet_frames: cam.skip_quiet_frames,
            quiet_refresh_secs: cam.quiet_refresh_secs,
            config: cam.clone(),
        }
    }
}

/// One camera: its settings, its detector and its per-camera state.
#[derive(Clone)]
pub(super) struct Camera {
    pub cam: Arc<CameraSettings>,
    pub sh: Arc<Shared>,
    pub detector: DetectorHandle,
    pub counters: Arc<FrameCounters>,
    pub cancel: CancellationToken,
    /// Encoded frames for pre-event clips.
    pub ring: Arc<Mutex<GopRing>>,
}

impl Camera {
    /// The camera with its detector; None when that model is not loaded.
    pub fn new(sh: &Arc<Shared>, cam: &CameraConfig, cancel: CancellationToken) -> Option<Camera> {
        let model = cam
            .model
            .as_ref()
            .map(|m| m.get_ref().clone())
            .or_else(|| sh.default_model.clone());
        let Some(detector) = model.as_ref().and_then(|m| {
            sh.detectors
                .get(m)
                .map(|d| d.for_camera(cam.id.get_ref(), cam.priority))
        }) else {
            warn!(camera = %cam.id.get_ref(), model = ?model, "camera's model is not loaded; not started (a new model needs a restart)");
            return None;
        };
        Some(Camera {
            cam: Arc::new(CameraSettings::new(cam)),
            sh: sh.clone(),
            detector,
            counters: Arc::new(FrameCounters::default()),
            cancel,
            ring: Arc::new(Mutex::new(GopRing::new(
                decode::Codec::H264,
                ring_budget(sh),
            ))),
        })
    }

    /// Starts a new session in the camera's ring, with the budget for the
    /// number of cameras now enabled.
    pub fn restart_ring(&self, codec: decode::Codec, wall_clock: bool) {
        let mut r = evidence::lock_ring(&self.ring);
        r.restart(codec);
        r.set_budget(ring_budget(&self.sh));
        r.wall_clock = wall_clock;
    }

    pub fn id(&self) -> &str {
        &self.cam.id
    }

    pub fn status(&self, f: impl FnOnce(&mut crate::publish::payload::CameraStatus)) {
        self.sh.status.update(self.id(), f);
    }

    /// Counts an optional step that failed; the session goes on.
    pub fn enrichment_failed(&self, step: &str, e: &dyn std::fmt::Display) {
        warn!(step, error = %e, "optional step failed; the session goes on without it");
        self.status(|s| *s.enrichment_failures.entry(step.to_string()).or_default() += 1);
    }

    pub fn sync_counters(&self) {
        let c = &self.counters;
        let ring = self.sh.evidence.is_some().then(|| {
            let r = evidence::lock_ring(&self.ring);
            crate::publish::payload::RingStatus {
                bytes: r.bytes(),
                budget_bytes: r.budget(),
                evicted_gops: r.evicted_gops,
                cut_frames: r.cut_frames,
                note: (r.cut_frames > 0).then(|| {
                    format!(
                        "{} frames cut inside a GOP larger than the ring's {} bytes: the camera sends keyframes too rarely (or never) for it; clips start off a keyframe. Set the camera's keyframe interval (GOP) to 1-2 s, or raise evidence.ring_bytes",
                        r.cut_frames,
                        r.budget()
                    )
                }),
            }
        });
        self.status(|s| {
            s.ring = ring;
            s.frames_corrupt = c.corrupt.load(Ordering::Relaxed);
            s.frames_oversized = c.oversized.load(Ordering::Relaxed);
            s.frames_received = c.received.load(Ordering::Relaxed);
            s.frames_decoded = c.decoded.load(Ordering::Relaxed);
            s.frames_inferred = c.inferred.load(Ordering::Relaxed);
            s.frames_skipped = SkipCounts {
                rate: c.skipped_rate.load(Ordering::Relaxed),
                busy: c.skipped_busy.load(Ordering::Relaxed),
                backlog: c.skipped_backlog.load(Ordering::Relaxed),
                no_keyframe: c.skipped_no_keyframe.load(Ordering::Relaxed),
                quiet: c.skipped_quiet.load(Ordering::Relaxed),
            };
        });
    }

    /// Removes the camera's passwords and URLs from a message.
    pub fn scrub(&self, msg: &str) -> String {
        let s = &self.cam.source;
        scrub(msg, &[&s.url, s.detect_url.as_deref().unwrap_or("")])
    }

    /// One RTSP session: source → decode → infer → track → rules → evidence
    /// and publish. Ends when the stream, the decoder or the detector fails,
    /// or the camera is stopped; events still open are then ended.
    async fn session(&self, failed_decoders: &mut Vec<String>) -> Result<(), SessionError> {
        let cam = &self.cam;
        let s = &cam.source;
        let mut src = tokio::select! {
            _ = self.cancel.cancelled() => return Ok(()),
            r = self.sh.opener.open(
                s.analysed_url(),
                s.connect_timeout,
                s.inactivity_timeout,
                s.transport,
            ) => r?,
        };
        let info = src.info();
        let decoder = choose_decoder(info.codec, cam, failed_decoders)?;
        let threads = decode::decoder_threads(
            cam.decoder_threads,
            self.sh.enabled_cameras.load(Ordering::Relaxed),
            decode::cores(),
        );
        info!(url = %info.url, codec = info.codec.as_str(), decoder = %decoder, decoder_threads = threads, resolution = ?info.resolution, transport = info.transport, "stream opened");
        // `Streaming` only once decoded pictures advance (ingest sets it).
        self.status(|s| {
            s.transport = Some(info.transport.into());
            s.codec = Some(info.codec.as_str().into());
            s.decoder = Some(decoder.clone());
            s.decoder_kind = Some(decode::DecoderKind::of(&decoder));
            s.resolution = info.resolution.map(|(w, h)| [w, h]);
        });
        // With `detect_url`, clips come from the main stream (`url`), recorded
        // by its own session; otherwise from the stream being analysed.
        let separate_record = s.detect_url.is_some() && self.sh.evidence.is_some();
        if !separate_record {
            self.restart_ring(info.codec, false);
        }
        // Decoded frames due at detect_fps; the newest replaces an unread one.
        let (ftx, frx) = watch::channel::<Option<(u64, Arc<Frame>)>>(None);
        self.sh.snapshots.watch(self.id(), frx.clone());
        let mut seq = 0u64;
        let pipe = DecodePipeline::start(
            info.codec,
            &decoder,
            cam.detect_fps,
            threads,
            self.counters.clone(),
            move |f| {
                seq += 1;
                ftx.send_replace(Some((seq, Arc::new(f))));
            },
        )
        .inspect_err(|_| mark_failed(failed_decoders, &decoder))?;
        // Rule and evidence state outlive the loops so that events still open
        // when the stream ends can be ended.
        let mut analysis = Analysis::new(self)?;
        let mut result = {
            let ingest = super::ingest::run(self, src.as_mut(), &pipe, separate_record);
            // When the stream ends or the camera is stopped, the analysis
            // finishes the frame it is on: an alert being raised then still
            // goes out with its evidence (dropping the future mid-alert lost
            // the package its alert had promised).
            let stop = CancellationToken::new();
            let analyze = analysis.run(self, frx, &stop);
            tokio::pin!(analyze);
            let record = async {
                match separate_record {
                    true => super::record::record_main_stream(self).await,
                    false => std::future::pending::<()>().await,
                }
            };
            let (r, analysed) = tokio::select! {
                r = ingest => (r, false),
                r = &mut analyze => (r, true),
                _ = record => (Ok(()), false),
                _ = self.cancel.cancelled() => (Ok(()), false),
            };
            if !analysed {
                stop.cancel();
                match tokio::time::timeout(FINISH_FRAME, &mut analyze).await {
                    Ok(Err(e)) => {
                        warn!(error = %self.scrub(&e.to_string()), "analysis failed while finishing its last frame")
                    }
                    Ok(Ok(())) => {}
                    Err(_) => warn!(
                        secs = FINISH_FRAME.as_secs(),
                        "the last frame's analysis did not finish in time; its alerts may lack evidence"
                    ),
                }
            }
            r
        };
        // A decoder that stopped with an error also closes the frame channel,
        // so the analysis may end first: whichever side noticed, the decoder's
        // own error ended the session, and the next one skips that decoder.
        if let Some(e) = pipe.poll_error() {
            mark_failed(failed_decoders, &pipe.decoder);
            if result.is_ok() {
                result = Err(e.into());
            }
        } else if matches!(result, Err(SessionError::Decode(_))) {
            mark_failed(failed_decoders, &pipe.decoder);
        }
        let reason = if self.cancel.is_cancelled() {
            crate::rules::EndReason::CameraStopped
        } else {
            crate::rules::EndReason::StreamLost
        };
        analysis.end_open(self, reason).await;
        result
    }
}

/// A camera ring's byte cap: `evidence.ring_bytes`, or its share of
/// `evidence.ring_total_bytes` when that is smaller.
fn ring_budget(sh: &Shared) -> u64 {
    let n = sh.enabled_cameras.load(Ordering::Relaxed).max(1) as u64;
    sh.evidence_cfg
        .ring_bytes
        .min(sh.evidence_cfg.ring_total_bytes / n)
}

fn mark_failed(failed: &mut Vec<String>, decoder: &str) {
    if !failed.iter().any(|d| d == decoder) {
        failed.push(decoder.to_string());
    }
}

/// The best decoder for `codec` not yet failed; when every one has failed
/// once, the ranking starts over.
fn choose_decoder(
    codec: decode::Codec,
    cam: &CameraSettings,
    failed: &mut Vec<String>,
) -> Result<String, DecodeError> {
    let choose =
        |f: &[String]| decode::choose_decoder_in(codec, &cam.decoders, cam.decoder.as_deref(), f);
    match choose(failed) {
        Err(DecodeError::NoDecoder { .. }) if !failed.is_empty() => {
            failed.clear();
            choose(failed)
        }
        r => r,
    }
}

/// How long a session's last frame may take to finish (model, rules, alerts)
/// once the stream has ended or the camera is stopped.
const FINISH_FRAME: Duration = Duration::from_secs(10);

/// How long a session must deliver pictures to count as healthy.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// Supervision loop of one camera: sessions until cancelled, with backoff;
/// a panicking session is caught and the camera restarted.
pub(super) async fn supervise(camera: Camera) {
    let cam = camera.cam.clone();
    let mut backoff = cam.source.backoff();
    let mut failed_decoders: Vec<String> = Vec::new();
    loop {
        camera.status(|s| s.state = CameraState::Connecting);
        let started = Instant::now();
        let decoded_before = camera
            .counters
            .decoded
            .load(std::sync::atomic::Ordering::Relaxed);
        // The session watches the cancel token itself, so that a camera
        // stopped with an event open (shutdown, reload) can still end it.
        let res = AssertUnwindSafe(camera.session(&mut failed_decoders))
            .catch_unwind()
            .await;
        if camera.cancel.is_cancelled() {
            break;
        }
        // A healthy session (pictures decoded for 10 s or more) starts the
        // backoff afresh: a camera back after a short outage is retried at
        // once, not after the delay its earlier failures had built up.
        let decoded = camera
            .counters
            .decoded
            .load(std::sync::atomic::Ordering::Relaxed);
        if decoded > decoded_before && started.elapsed() >= HEALTHY_SESSION {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        let (state, msg) = match res {
            Ok(Ok(())) => (CameraState::Retrying, "session ended".to_string()),
            Ok(Err(e)) => (CameraState::Retrying, camera.scrub(&e.to_string())),
            Err(panic) => (CameraState::Failed, camera.scrub(&panic_message(&panic))),
        };
        if state == CameraState::Failed {
            tracing::error!(error = %msg, retry_in_ms = delay.as_millis() as u64, "camera task panicked; restarting it");
        } else {
            warn!(error = %msg, retry_in_ms = delay.as_millis() as u64, "camera session failed; retrying");
        }
        camera.status(|s| {
            s.state = state;
            s.last_error = Some(msg.clone());
            s.reconnects += 1;
            s.panics += (state == CameraState::Failed) as u64;
        });
        camera.sync_counters();
        tokio::select! {
            _ = camera.cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    camera.status(|s| s.state = CameraState::Stopped);
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("camera task panicked: {what}")
}

/// Removes any password of the given URLs from a message.
pub(super) fn scrub(msg: &str, urls: &[&str]) -> String {
    let mut out = msg.to_string();
    for u in urls {
        if let Ok((_, Some(c))) = crate::source::parse_rtsp_url(u)
            && !c.password.is_empty()
        {
            out = out.replace(&c.password, "***");
        }
        if !u.is_empty() {
            out = out.replace(u, &redact(u));
        }
    }
    out
}

#[cfg(test)]
#[path = "camera_tests.rs"]
mod tests;
