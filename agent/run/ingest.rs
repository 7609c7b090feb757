//! The source side of a session: access units from the camera into the
//! pre-event ring and, unless the decoder's shedder drops them, the decoder.
//! It also decides whether the camera is live: a session whose pictures do
//! not advance is ended with the reason (see [`Stall`]), so the supervisor
//! reports and reopens it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tracing::warn;

use super::camera::{Camera, SessionError};
use crate::decode::DecodePipeline;
use crate::decode::shed::{Admit, GopShedder};
use crate::evidence::{self, ring::RingFrame};
use crate::publish::payload::{CameraState, rfc3339};
use crate::source::{SourceError, Stream, has_recovery_point};

/// Why a session was ended as not live.
#[derive(Debug, thiserror::Error)]
pub enum Stall {
    #[error(
        "no keyframe or recovery point in {secs:.0} s ({frames} frames received): nothing can be decoded — set the camera's keyframe (I-frame) interval to 1-2 s, or enable intra-refresh recovery points; reconnecting"
    )]
    NoKeyframe { secs: f64, frames: u64 },
    #[error(
        "RTP timestamps advanced {advanced_ms} ms in {secs:.1} s ({frames} frames): the camera's clock is stuck, its pictures cannot be timed — check the camera's time settings or firmware; reconnecting"
    )]
    FrozenTimestamps {
        advanced_ms: u64,
        secs: f64,
        frames: u64,
    },
    #[error(
        "the decoder gave no picture for {secs:.0} s while {frames} frames went in: decoding has stopped; reconnecting"
    )]
    DecoderStalled { secs: f64, frames: u64 },
}

impl Stall {
    /// The metric label (`ioc_camera_stalls_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Stall::NoKeyframe { .. } => "no_keyframe",
            Stall::FrozenTimestamps { .. } => "frozen_timestamps",
            Stall::DecoderStalled { .. } => "decoder_stalled",
        }
    }
}

/// How long timestamps are watched before they count as frozen, and the
/// share of that wall time they must advance by.
const TIMESTAMP_WINDOW: Duration = Duration::from_secs(5);
const TIMESTAMP_MIN_SHARE: f64 = 0.1;

/// Reads the stream until it fails; decoding starts at the first keyframe.
pub(super) async fn run(
    camera: &Camera,
    src: &mut dyn Stream,
    pipe: &DecodePipeline,
    separate_record: bool,
) -> Result<(), SessionError> {
    let counters = &camera.counters;
    let keep_clips = camera.sh.evidence.is_some() && !separate_record;
    let codec = src.info().codec;
    let keyframe_timeout = camera.cam.source.keyframe_timeout;
    let stall_after = camera.cam.source.inactivity_timeout;
    let mut waiting_key = true;
    let mut shedder = GopShedder::default();
    let mut last_status = Instant::now();
    let mut waiting_since = Instant::now();
    let mut received = 0u64;
    // Timestamps: (wall start, pts at start, frames) of the current window.
    let mut window: Option<(Instant, u64, u64)> = None;
    // Decoder progress: the decoded count, when it last rose, frames pushed since.
    let decoded_at_start = counters.decoded.load(Ordering::Relaxed);
    let mut decoded = (decoded_at_start, Instant::now(), 0u64);
    let mut live = false;
    loop {
        let f = match src.next_frame().await {
            Ok(f) => f,
            Err(e) => {
                if matches!(e, SourceError::Inactive { .. }) {
                    count_stall(camera, "no_video");
                }
                return Err(e.into());
            }
        };
        let wall = SystemTime::now();
        let now = Instant::now();
        counters.received.fetch_add(1, Ordering::Relaxed);
        received += 1;
        if f.data.len() > crate::decode::MAX_ACCESS_UNIT_BYTES {
            let n = counters.oversized.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                warn!(
                    bytes = f.data.len(),
                    limit = crate::decode::MAX_ACCESS_UNIT_BYTES,
                    oversized_total = n,
                    "access unit larger than any real picture dropped (a broken or hostile stream); decoding restarts at the next keyframe"
                );
            }
            if !waiting_key {
                waiting_key = true;
                waiting_since = now;
            }
            continue;
        }
        let stall = watch_timestamps(&mut window, now, f.pts_ns).or_else(|| {
            (waiting_key && waiting_since.elapsed() > keyframe_timeout).then(|| Stall::NoKeyframe {
                secs: waiting_since.elapsed().as_secs_f64(),
                frames: received,
            })
        });
        if let Some(s) = stall {
            return Err(stalled(camera, s));
        }
        // A recovery point (intra refresh) is where decoding and a clip can
        // start, like a keyframe.
        let start_point = f.keyframe || has_recovery_point(codec, &f.data);
        if waiting_key && !start_point {
            counters.skipped_no_keyframe.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        waiting_key = false;
        if keep_clips {
            evidence::lock_ring(&camera.ring).push(Arc::new(RingFrame {
                data: f.data.clone(),
                pts_ns: f.pts_ns,
                keyframe: start_point,
                wall,
            }));
        }
        let (backlog, behind) = (pipe.backlog_bytes(), pipe.backlog_secs());
        match shedder.admit(f.keyframe, backlog, behind) {
            Admit::Decode => {}
            Admit::StartShedding => {
                warn!(
                    backlog,
                    behind_secs = behind,
                    "decoder is behind; dropping whole GOPs"
                );
                counters.skipped_backlog.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Admit::Shed => {
                counters.skipped_backlog.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        let pushed = pipe.push(&f.data, f.pts_ns, wall).err();
        if let Some(e) = pushed.or_else(|| pipe.poll_error()) {
            return Err(e.into());
        }
        // Pictures must come out of the decoder.
        let d = counters.decoded.load(Ordering::Relaxed);
        if d != decoded.0 {
            decoded = (d, now, 0);
        } else {
            decoded.2 += 1;
            if now.duration_since(decoded.1) > stall_after && decoded.2 > 1 {
                let s = Stall::DecoderStalled {
                    secs: now.duration_since(decoded.1).as_secs_f64(),
                    frames: decoded.2,
                };
                return Err(stalled(camera, s));
            }
        }
        if last_status.elapsed() > Duration::from_secs(1) {
            last_status = Instant::now();
            // Streaming once decoded pictures advance, not at the RTSP PLAY.
            let now_live = d > decoded_at_start;
            camera.status(|s| {
                s.last_frame_at = Some(rfc3339(wall));
                if now_live && !live {
                    s.state = CameraState::Streaming;
                    s.last_error = None;
                }
            });
            live = now_live;
            camera.sync_counters();
        }
    }
}

/// Checks that presentation times advance with wall time: over each
/// `TIMESTAMP_WINDOW`, by at least `TIMESTAMP_MIN_SHARE` of it.
fn watch_timestamps(
    window: &mut Option<(Instant, u64, u64)>,
    now: Instant,
    pts_ns: u64,
) -> Option<Stall> {
    let (t0, p0, n) = window.get_or_insert((now, pts_ns, 0));
    *n += 1;
    let wall = now.duration_since(*t0);
    if wall < TIMESTAMP_WINDOW {
        return None;
    }
    let advanced = pts_ns.saturating_sub(*p0);
    let frames = *n;
    *window = Some((now, pts_ns, 0));
    ((advanced as f64) < wall.as_nanos() as f64 * TIMESTAMP_MIN_SHARE).then_some(
        Stall::FrozenTimestamps {
            advanced_ms: advanced / 1_000_000,
            secs: wall.as_secs_f64(),
            frames,
        },
    )
}

fn count_stall(camera: &Camera, reason: &str) {
    camera.status(|s| *s.stalls.entry(reason.to_string()).or_default() += 1);
}

/// Logs, counts and returns a stall as the session's error.
fn stalled(camera: &Camera, s: Stall) -> SessionError {
    count_stall(camera, s.reason());
    SessionError::Stalled(s)
}
