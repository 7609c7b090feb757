//! The source side of a session: access units from the camera into the
//! pre-event ring and, unless the decoder's shedder drops them, the decoder.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tracing::warn;

use super::camera::{Camera, SessionError};
use crate::decode::DecodePipeline;
use crate::decode::shed::{Admit, GopShedder};
use crate::evidence::{self, ring::RingFrame};
use crate::publish::payload::rfc3339;
use crate::source::Stream;

/// Reads the stream until it fails; decoding starts at the first keyframe.
pub(super) async fn run(
    camera: &Camera,
    src: &mut dyn Stream,
    pipe: &DecodePipeline,
    separate_record: bool,
) -> Result<(), SessionError> {
    let counters = &camera.counters;
    let keep_clips = camera.sh.evidence.is_some() && !separate_record;
    let mut waiting_key = true;
    let mut shedder = GopShedder::default();
    let mut last_status = Instant::now();
    loop {
        let f = src.next_frame().await?;
        let wall = SystemTime::now();
        counters.received.fetch_add(1, Ordering::Relaxed);
        if waiting_key && !f.keyframe {
            counters.skipped_no_keyframe.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        waiting_key = false;
        if keep_clips {
            evidence::lock_ring(&camera.ring).push(Arc::new(RingFrame {
                data: f.data.clone(),
                pts_ns: f.pts_ns,
                keyframe: f.keyframe,
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
        if last_status.elapsed() > Duration::from_secs(1) {
            last_status = Instant::now();
            camera.status(|s| s.last_frame_at = Some(rfc3339(wall)));
            camera.sync_counters();
        }
    }
}
