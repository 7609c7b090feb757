//! The analysis side of a session: each frame due at `detect_fps` through
//! the detector, the tracker, the signal reader, evidence (close-ups,
//! plates), cascades and the rules; every firing becomes an alert.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::camera::{Camera, SessionError};
use crate::decode::Frame;
use crate::decode::quiet::{QuietGate, Signature};
use crate::evidence::camera::CameraEvidence;
use crate::infer::{Detection, Inference};
use crate::publish::payload::SignalInfo;
use crate::rules::signal::SignalReader;
use crate::rules::{EndReason, RuleEngine};
use crate::track::{Tracker, TrackerConfig};

type FrameSlot = watch::Receiver<Option<(u64, Arc<Frame>)>>;

/// A session's analysis state.
pub(super) struct Analysis {
    labels: Arc<[String]>,
    rules: RuleEngine,
    tracker: Tracker,
    evidence: CameraEvidence,
    signal: SignalReader,
    /// The last analysed frame while a zone-level event is open (its end
    /// alert's picture if the stream ends); None otherwise, so no frame is held.
    open_frame: Option<Arc<Frame>>,
    last_seq: u64,
    /// Frames unchanged since the model last saw the camera skip it.
    gate: QuietGate,
    /// The model's last answer, standing for quiet frames.
    last_detections: Vec<Detection>,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    since: Option<Instant>,
    infer_ms: f64,
    infer_n: u64,
}

impl Analysis {
    pub fn new(camera: &Camera) -> Result<Analysis, crate::rules::RuleError> {
        let labels: Arc<[String]> = camera.detector.manifest.labels.clone().into();
        Ok(Analysis {
            rules: RuleEngine::new(&camera.cam.config.rule_setup(), &labels)?,
            labels,
            tracker: Tracker::new(TrackerConfig::default()),
            evidence: CameraEvidence::new(camera.sh.plates.clone()),
            signal: SignalReader::new(camera.cam.config.signal.as_ref(), camera.sh.signals.clone()),
            open_frame: None,
            last_seq: 0,
            gate: QuietGate::new(camera.cam.skip_quiet_frames, camera.cam.quiet_refresh_secs),
            last_detections: Vec::new(),
            stats: Stats::default(),
        })
    }

    /// Analyses frames until the decoder's channel closes, the detector
    /// fails or `stop` is cancelled. A frame past the detector is always
    /// finished (rules, alerts, evidence): `stop` is only looked at between
    /// frames.
    pub async fn run(
        &mut self,
        camera: &Camera,
        frx: FrameSlot,
        stop: &CancellationToken,
    ) -> Result<(), SessionError> {
        let mut frx = frx;
        loop {
            // Wait for a frame newer than the last one analysed, then queue
            // for the model; the worker takes the newest frame when it is
            // free, so no frame ages in the queue.
            let last = self.last_seq;
            let newer = tokio::select! {
                biased;
                _ = stop.cancelled() => false,
                r = frx.wait_for(|v| v.as_ref().is_some_and(|(q, _)| *q > last)) => r.is_ok(),
            };
            if !newer {
                return Ok(());
            }
            if self.gate.enabled() {
                let latest = frx.borrow().clone();
                if let Some((s, frame)) = latest {
                    let sig = Signature::of(frame.y(), frame.width, frame.height);
                    if self.gate.quiet(&sig, frame.pts) {
                        self.advance(camera, s);
                        camera
                            .counters
                            .skipped_quiet
                            .fetch_add(1, Ordering::Relaxed);
                        let detections = self.last_detections.clone();
                        self.analyse(camera, &frame, &detections).await;
                        continue;
                    }
                }
            }
            let (inf, s, frame) = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                r = camera.detector.detect_latest(frx.clone()) => r?,
            };
            if s <= self.last_seq {
                continue;
            }
            self.advance(camera, s);
            if self.gate.enabled() {
                let sig = Signature::of(frame.y(), frame.width, frame.height);
                self.gate.seen(sig, frame.pts);
                self.last_detections.clone_from(&inf.detections);
            }
            self.frame(camera, &frame, inf).await;
        }
    }

    /// Frame `s` is the next analysed; those between the last one and it
    /// were replaced while the model was busy.
    fn advance(&mut self, camera: &Camera, s: u64) {
        if s > self.last_seq + 1 {
            let busy = s - self.last_seq - 1;
            camera
                .counters
                .skipped_busy
                .fetch_add(busy, Ordering::Relaxed);
        }
        self.last_seq = s;
    }

    /// One frame the model saw.
    async fn frame(&mut self, camera: &Camera, frame: &Arc<Frame>, inf: Inference) {
        camera.counters.inferred.fetch_add(1, Ordering::Relaxed);
        // The status follows the pictures' size: a camera whose resolution
        // changes mid-stream (an installer's edit, a failover encoder)
        // shows the new one.
        let size = [frame.width, frame.height];
        let mut changed = None;
        camera.status(|s| {
            s.observe_inference(inf.millis);
            if s.resolution != Some(size) {
                changed = Some(s.resolution);
                s.resolution = Some(size);
            }
        });
        if let Some(Some(old)) = changed {
            tracing::info!(from = ?old, to = ?size, "camera resolution changed");
        }
        self.stats.infer_ms += inf.millis;
        self.stats.infer_n += 1;
        self.analyse(camera, frame, &inf.detections).await;
    }

    /// One analysed frame with its detections (the model's, or its last
    /// answer for a quiet frame): tracker, signal, evidence, cascades, rules.
    async fn analyse(&mut self, camera: &Camera, frame: &Arc<Frame>, detections: &[Detection]) {
        if let Some((light, source)) = self.signal.read(frame) {
            self.rules.set_signal(frame.pts, light, source);
            camera.status(|s| {
                if s.signal.as_ref().is_none_or(|x| x.state != light) {
                    s.signal = Some(SignalInfo {
                        state: light,
                        source,
                    });
                }
            });
        }
        let tracks = self.tracker.update(detections, frame.pts).to_vec();
        if camera.sh.evidence.is_some()
            && let Err(e) = self.evidence.observe(frame, &tracks, &self.labels).await
        {
            camera.enrichment_failed("plate_read", &e);
        }
        let models = &camera.sh.detectors;
        let (id, priority) = (camera.id(), camera.cam.priority);
        if let Err(e) =
            crate::rules::cascade::run(&mut self.rules, &tracks, frame, models, id, priority).await
        {
            camera.enrichment_failed("cascade", &e);
        }
        let firings =
            self.rules
                .evaluate(&tracks, frame.width, frame.height, frame.pts, frame.wall);
        if let Ok(lat) = SystemTime::now().duration_since(frame.wall) {
            let ms = lat.as_secs_f64() * 1e3;
            camera.status(|s| s.observe_latency(ms));
        }
        for f in firings {
            let rule = &self.rules.rules[f.rule];
            super::emit::emit(camera, frame, rule, &f, &self.labels, &self.evidence).await;
        }
        self.open_frame = self.rules.any_open().then(|| frame.clone());
        self.log_stats(camera, tracks.len());
    }

    fn log_stats(&mut self, camera: &Camera, tracks: usize) {
        let since = *self.stats.since.get_or_insert_with(Instant::now);
        if since.elapsed() < Duration::from_secs(30) {
            return;
        }
        let c = &camera.counters;
        let avg = self.stats.infer_ms / self.stats.infer_n.max(1) as f64;
        info!(
            received = c.received.load(Ordering::Relaxed),
            decoded = c.decoded.load(Ordering::Relaxed),
            inferred = c.inferred.load(Ordering::Relaxed),
            skipped_rate = c.skipped_rate.load(Ordering::Relaxed),
            skipped_busy = c.skipped_busy.load(Ordering::Relaxed),
            skipped_backlog = c.skipped_backlog.load(Ordering::Relaxed),
            infer_ms_avg = format!("{avg:.1}"),
            tracks,
            "camera stats"
        );
        self.stats = Stats {
            since: Some(Instant::now()),
            ..Stats::default()
        };
    }

    /// The stream is gone, or the camera is being stopped (`reason`): events
    /// still open are ended, pictured with the last frame they were seen on.
    pub async fn end_open(&mut self, camera: &Camera, reason: EndReason) {
        let ends = self.rules.end_open(reason);
        let Some(frame) = self.open_frame.take() else {
            return;
        };
        for f in &ends {
            let rule = &self.rules.rules[f.rule];
            info!(rule = %rule.name, reason = reason.as_str(), "session ended with the event open; ending it");
            super::emit::emit(camera, &frame, rule, f, &self.labels, &self.evidence).await;
        }
    }
}
