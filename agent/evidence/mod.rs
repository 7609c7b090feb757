//! Evidence a traffic police officer can act on. Per event, a folder
//! `<evidence dir>/<event_id>/` with:
//! - `clip.mp4`: from the keyframe at or before `pre_secs` before the event to
//!   `post_secs` after it, muxed from the camera's own bitstream (`ring`, `clip`);
//! - `overview.jpg`: the decision frame, annotated, camera and time burned in;
//! - `closeup.jpg`: the object at the best-quality frame of its track;
//! - `event.json`: the alert, with the plate reading (`plates`, `plate`);
//! - `manifest.json` + `manifest.sig`: sizes and sha256 of every file, signed
//!   with the agent's Ed25519 key (`sign`).
//!
//! A folder is built as `.tmp-<event_id>` and renamed when sealed, so a crash
//! never leaves a partial package (or a partial clip) under a final name.
//! Retention keeps the evidence within a byte budget and a free-space floor,
//! oldest first, never touching held (confirmed) events.
//!
//! Here: the store itself ([`Evidence`]) and what a camera hands it
//! ([`Package`]). Building and sealing a package is in `package`, its
//! pictures in `picture`, retention in `retention`, the best close-up and
//! plate reading of each track in `best`; their items are re-exported here.

mod best;
pub mod camera;
pub mod clip;
pub mod config;
pub mod font;
mod package;
mod picture;
pub mod plate;
pub mod plates;
mod retention;
pub mod ring;
pub mod sign;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tracing::warn;

use crate::publish::PublisherHandle;
use crate::publish::payload::Alert;
use crate::store::Store;
use config::EvidenceConfig;
use ring::GopRing;

pub use best::{BestShots, PlateBook, PlateTrack};
pub use package::{Sealed, seal_package};
pub use picture::{
    Jpeg, annotate, burn_text, crop_rgb, encode_jpeg, frame_to_rgb, overview, rgb_to_frame,
    thumbnail,
};
pub use retention::{Retention, free_bytes};

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error(
        "cannot create the evidence folder {path}: {message} — check evidence.dir / data_dir and its permissions"
    )]
    Dir { path: PathBuf, message: String },
    #[error(transparent)]
    Key(#[from] sign::SignError),
}

/// Counters shown in status and stats.
#[derive(Debug, Default)]
pub struct EvidenceCounters {
    pub sealed: AtomicU64,
    pub failed: AtomicU64,
    pub removed: AtomicU64,
    pub clips_missing: AtomicU64,
}

/// What the analyze loop hands over for one event.
pub struct Package {
    pub alert: Alert,
    /// Event time on the ring's session clock (same stream as detection).
    pub event_pts_ns: u64,
    /// Arrival time of the decision frame: places the event on a separate
    /// record stream's clock.
    pub event_wall: SystemTime,
    pub session: u64,
    pub ring: Arc<Mutex<GopRing>>,
    pub overview: Option<Vec<u8>>,
    pub closeup: Option<Vec<u8>>,
    pub plate_crop: Option<Vec<u8>>,
}

/// The evidence store of the agent (all cameras).
pub struct Evidence {
    pub dir: PathBuf,
    cfg: EvidenceConfig,
    store: Arc<Store>,
    key: ed25519_dalek::SigningKey,
    agent_id: String,
    publisher: PublisherHandle,
    pub counters: EvidenceCounters,
    busy: tokio::sync::Semaphore,
}

pub fn lock_ring(r: &Mutex<GopRing>) -> std::sync::MutexGuard<'_, GopRing> {
    match r.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Where the evidence stage keeps its packages, resolved by the config layer.
#[derive(Debug, Clone)]
pub struct EvidencePlace {
    pub cfg: EvidenceConfig,
    pub dir: std::path::PathBuf,
    pub agent_id: String,
}

impl Evidence {
    /// Creates the folder, loads (or creates) the key, removes what a crash
    /// left half-built, and applies retention once.
    pub fn open(
        place: EvidencePlace,
        key: ed25519_dalek::SigningKey,
        store: Arc<Store>,
        publisher: PublisherHandle,
    ) -> Result<Arc<Evidence>, EvidenceError> {
        let EvidencePlace { cfg, dir, agent_id } = place;
        package::private_dir(&dir).map_err(|e| EvidenceError::Dir {
            path: dir.clone(),
            message: e.to_string(),
        })?;
        let removed = retention::clean_partial(&dir);
        if removed > 0 {
            warn!(
                removed,
                "removed evidence folders left half-built by a crash"
            );
        }
        let ev = Arc::new(Evidence {
            dir,
            cfg,
            store,
            key,
            agent_id,
            publisher,
            counters: EvidenceCounters::default(),
            busy: tokio::sync::Semaphore::new(4),
        });
        ev.enforce_retention();
        Ok(ev)
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    /// Builds and seals the package in the background; never blocks the caller.
    pub fn submit(self: &Arc<Self>, pkg: Package) {
        let ev = self.clone();
        tokio::spawn(async move {
            let id = pkg.alert.id.clone();
            if let Err(e) = ev.build(pkg).await {
                ev.counters.failed.fetch_add(1, Ordering::Relaxed);
                warn!(event_id = %id, error = %e, "evidence package failed; the alert was still sent");
            }
        });
    }

    /// Folder of an event, if the id is a plain ULID-like name.
    pub fn folder(&self, event_id: &str) -> Option<PathBuf> {
        safe_name(event_id).then(|| self.dir.join(event_id))
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn publisher(&self) -> &PublisherHandle {
        &self.publisher
    }

    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }
}

/// An event id usable as a folder name: letters and digits only.
pub fn safe_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric())
}
