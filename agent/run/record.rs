//! The record stream: with `detect_url`, clips come from the camera's main
//! stream (`url`), read by its own session here. Its failures are retried
//! here and never stop detection.

use std::sync::Arc;
use std::time::SystemTime;

use tracing::{info, warn};

use super::camera::Camera;
use crate::evidence::{self, ring::RingFrame};
use crate::publish::payload::CameraState;

/// Feeds the evidence ring from the main stream until the session ends.
pub(super) async fn record_main_stream(camera: &Camera) {
    let s = &camera.cam.source;
    let mut backoff = s.backoff();
    let state = |st: CameraState, err: Option<String>| {
        camera.status(|c| {
            let r = c.record.get_or_insert_with(Default::default);
            if st == CameraState::Retrying {
                r.reconnects += 1;
            }
            r.state = st;
            if err.is_some() {
                r.last_error = err;
            }
        })
    };
    state(CameraState::Connecting, None);
    loop {
        match camera
            .sh
            .opener
            .open(&s.url, s.connect_timeout, s.inactivity_timeout, s.transport)
            .await
        {
            Ok(mut src) => {
                let codec = src.info().codec;
                camera.restart_ring(codec, true);
                let info = src.info();
                info!(url = %info.url, codec = info.codec.as_str(), "record stream opened (clips from the main stream)");
                state(CameraState::Streaming, None);
                backoff.reset();
                loop {
                    match src.next_frame().await {
                        Ok(f) if f.data.len() > crate::decode::MAX_ACCESS_UNIT_BYTES => {
                            camera
                                .counters
                                .oversized
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(f) => {
                            let keyframe =
                                f.keyframe || crate::source::has_recovery_point(codec, &f.data);
                            evidence::lock_ring(&camera.ring).push(Arc::new(RingFrame {
                                data: f.data,
                                pts_ns: f.pts_ns,
                                keyframe,
                                wall: SystemTime::now(),
                            }))
                        }
                        Err(e) => {
                            let msg = camera.scrub(&e.to_string());
                            warn!(error = %msg, "record stream failed; retrying: events get no clip meanwhile");
                            state(CameraState::Retrying, Some(format!("record stream: {msg}")));
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                let msg = camera.scrub(&e.to_string());
                warn!(error = %msg, "record stream failed; retrying: events get no clip meanwhile");
                state(CameraState::Retrying, Some(format!("record stream: {msg}")));
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
