//! Evidence a traffic police officer can act on. Per event, a folder
//! `<evidence dir>/<event_id>/` with:
//! - `clip-init.mp4` + `clip-NNN.m4s`: from the keyframe at or before
//!   `pre_secs` before the event to `post_secs` after it, the camera's own
//!   bitstream as fragmented MP4 (`ring`, `fmp4`, `clip`); segments shared
//!   with overlapping events are hard links to one stored copy;
//! - `overview.jpg`: the decision frame, annotated, camera and time burned in;
//! - `closeup.jpg`: the object at the best-quality frame of its track;
//! - `event.json`: the alert, with the plate reading (`plates`, `plate`);
//! - `manifest.json` + `manifest.sig`: sizes and sha256 of every file, signed
//!   with the agent's Ed25519 key (`sign`);
//! - `review-NNN.json` + `.sig`: each officer's decision, signed, attributed
//!   and chained, never overwritten (`review`).
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
pub mod fmp4;
pub mod font;
mod package;
mod picture;
pub mod plate;
pub mod plates;
mod retention;
pub mod review;
pub mod ring;
pub mod sign;
pub mod signer;

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
pub use package::{CLIP_INIT, Pictures, Sealed, seal_package, segment_name};
pub use picture::{
    Jpeg, annotate, burn_text, crop_rgb, encode_jpeg, frame_to_rgb, overview, rgb_to_frame,
    thumbnail, thumbnail_within,
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
    /// Packages waiting for their post-roll or being built now.
    pub pending: AtomicU64,
    /// Packages not built because `evidence.max_pending` were waiting.
    pub dropped: AtomicU64,
    /// Clip segments hard-linked from an earlier event's copy, and their bytes.
    pub segments_shared: AtomicU64,
    pub bytes_shared: AtomicU64,
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
    signer: signer::Signer,
    agent_id: String,
    publisher: PublisherHandle,
    pub counters: EvidenceCounters,
    busy: tokio::sync::Semaphore,
    /// Clip segments already stored, shared by the next overlapping event.
    segments: Arc<fmp4::SharedSegments>,
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
        signer: signer::Signer,
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
            signer,
            agent_id,
            publisher,
            counters: EvidenceCounters::default(),
            busy: tokio::sync::Semaphore::new(4),
            segments: Arc::default(),
        });
        ev.enforce_retention();
        Ok(ev)
    }

    /// This agent's signing key as the only trusted one.
    pub fn trust(&self) -> sign::Trust {
        sign::Trust::one(sign::Sign::public(&self.signer))
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(sign::Sign::public(&self.signer).as_bytes())
    }

    /// Builds and seals the package in the background; never blocks the
    /// caller. At most `evidence.max_pending` packages wait at once (each
    /// holds its pictures until sealed): past that one is dropped and
    /// counted, and its alert still goes out.
    pub fn submit(self: &Arc<Self>, pkg: Package) {
        let c = &self.counters;
        if c.pending.fetch_add(1, Ordering::AcqRel) >= self.cfg.max_pending as u64 {
            c.pending.fetch_sub(1, Ordering::AcqRel);
            let n = c.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_power_of_two() {
                warn!(
                    event_id = %pkg.alert.id,
                    dropped_total = n,
                    max_pending = self.cfg.max_pending,
                    "evidence package dropped: too many waiting to be built (events faster than the disk or the post-roll); the alert was still sent"
                );
            }
            return;
        }
        let ev = self.clone();
        tokio::spawn(async move {
            let id = pkg.alert.id.clone();
            if let Err(e) = ev.build(pkg).await {
                ev.counters.failed.fetch_add(1, Ordering::Relaxed);
                warn!(event_id = %id, error = %e, "evidence package failed; the alert was still sent");
            }
            ev.counters.pending.fetch_sub(1, Ordering::AcqRel);
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

    /// Whether event `id` may be held within `max_held_share` of the budget.
    /// `Err` says by how much it would go over.
    pub fn may_hold(&self, id: &str) -> Result<(), String> {
        let row = self
            .store
            .evidence_get(id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no evidence for event {id}"))?;
        if row.held {
            return Ok(());
        }
        let (_, held) = self.store.evidence_bytes().map_err(|e| e.to_string())?;
        let limit = (self.cfg.max_held_share * self.cfg.max_bytes as f64) as u64;
        if held + row.bytes > limit {
            return Err(format!(
                "holding event {id} ({} bytes) would make held evidence {} bytes, over the {limit} bytes allowed \
                 (evidence.max_held_share {} of max_bytes); release holds no longer needed, or raise the share",
                row.bytes,
                held + row.bytes,
                self.cfg.max_held_share
            ));
        }
        Ok(())
    }

    /// Holds or releases event `id`; a hold past `max_held_share` is refused.
    /// Returns false for an unknown event.
    pub fn hold(&self, id: &str, held: bool, by: &str) -> Result<bool, HoldError> {
        if held {
            self.may_hold(id).map_err(HoldError::OverBudget)?;
        }
        let ok = self
            .store
            .evidence_hold(id, held)
            .map_err(|e| HoldError::Store(e.to_string()))?;
        if ok {
            tracing::info!(event_id = %id, held, by, "evidence hold changed");
        }
        Ok(ok)
    }

    /// Records a review of event `id`: a signed record appended to its folder
    /// (never overwriting an earlier one), then the index's latest review. A
    /// confirmed event is held, unless that would pass `max_held_share` (the
    /// review is kept either way; `held` says which).
    pub fn review(
        &self,
        id: &str,
        status: &str,
        note: &str,
        reviewer: &str,
        role: &str,
    ) -> Result<Option<(review::ReviewRecord, bool)>, String> {
        let Some(dir) = self.folder(id).filter(|d| d.join(sign::MANIFEST).is_file()) else {
            return Ok(None);
        };
        if self
            .store
            .evidence_get(id)
            .map_err(|e| e.to_string())?
            .is_none()
        {
            return Ok(None);
        }
        let at = crate::publish::payload::rfc3339(SystemTime::now());
        let rec = review::append(&dir, &self.signer, id, status, note, reviewer, role, &at)?;
        let held = match status {
            "confirmed" => match self.may_hold(id) {
                Ok(()) => true,
                Err(e) => {
                    warn!(event_id = %id, "confirmed but not held: {e}");
                    false
                }
            },
            _ => false,
        };
        let latest = crate::store::evidence::Review {
            status: status.into(),
            note: note.into(),
            at,
            reviewer: reviewer.into(),
        };
        self.store
            .evidence_review(id, &latest, held)
            .map_err(|e| e.to_string())?;
        Ok(Some((rec, held)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("{0}")]
    OverBudget(String),
    #[error("cannot update the evidence index: {0}")]
    Store(String),
}

/// A problem [`verify_folder`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum FolderProblem {
    Manifest(sign::Problem),
    Review(review::ReviewProblem),
}

impl std::fmt::Display for FolderProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FolderProblem::Manifest(p) => p.fmt(f),
            FolderProblem::Review(p) => p.fmt(f),
        }
    }
}

/// Checks an evidence folder: the signed manifest and every file it lists,
/// then every signed review record. Returns the manifest and the reviews.
pub fn verify_folder(
    dir: &std::path::Path,
    trust: &sign::Trust,
) -> Result<(sign::Manifest, Vec<review::ReviewRecord>), Vec<FolderProblem>> {
    let manifest = sign::verify(dir, trust);
    let event_id = match &manifest {
        Ok(m) => m.event_id.clone(),
        Err(_) => dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
    };
    let reviews = review::verify(dir, trust, &event_id);
    match (manifest, reviews) {
        (Ok(m), Ok(r)) => Ok((m, r)),
        (m, r) => {
            let mut out: Vec<FolderProblem> = m
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(FolderProblem::Manifest)
                .collect();
            out.extend(
                r.err()
                    .unwrap_or_default()
                    .into_iter()
                    .map(FolderProblem::Review),
            );
            Err(out)
        }
    }
}

/// An event id usable as a folder name: letters and digits only.
pub fn safe_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric())
}
