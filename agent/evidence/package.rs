//! Building a package: waiting for the clip's post-roll, writing every file
//! into `.tmp-<event_id>`, sealing and renaming it, indexing it in the store
//! and telling the back office.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use crate::publish::payload::{
    Alert, ClipSummary, EventUpdate, EvidenceFile, EvidenceSummary, UPDATE_SCHEMA, rfc3339,
};
use crate::store::evidence::{EvidenceRow, PlateRow};

use sha2::Digest;

use super::{Evidence, Package, fmp4, lock_ring, ring, safe_name, sign};

impl Evidence {
    /// Waits for the clip, seals the package, indexes it, tells the back
    /// office and applies retention.
    pub(super) async fn build(&self, pkg: Package) -> Result<(), String> {
        let _permit = self.busy.acquire().await.map_err(|e| e.to_string())?;
        let (span, event_pts) = self.wait_for_span(&pkg).await;
        if span.is_none() {
            self.counters.clips_missing.fetch_add(1, Ordering::Relaxed);
            warn!(event_id = %pkg.alert.id, "no video in the ring for this event; package has no clip");
        }
        let dir = self.dir.clone();
        let key = self.signer.clone();
        let agent_id = self.agent_id.clone();
        let alert = pkg.alert.clone();
        let (overview, closeup, plate_crop) = (pkg.overview, pkg.closeup, pkg.plate_crop);
        let segments = self.segments.clone();
        let sealed = tokio::task::spawn_blocking(move || {
            seal_package(
                &dir,
                &key,
                &agent_id,
                &alert,
                span.as_ref(),
                event_pts,
                Pictures {
                    overview,
                    closeup,
                    plate_crop,
                },
                &segments,
            )
        })
        .await
        .map_err(|e| e.to_string())??;
        self.counters.sealed.fetch_add(1, Ordering::Relaxed);
        {
            let c = &self.counters;
            c.segments_shared
                .fetch_add(sealed.shared.0, Ordering::Relaxed);
            c.bytes_shared.fetch_add(sealed.shared.1, Ordering::Relaxed);
        }
        let a = &pkg.alert;
        let row = index_row(a, &sealed);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.evidence_insert(&row))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        info!(event_id = %a.id, bytes = sealed.bytes, clip_frames = sealed.clip.as_ref().map(|c| c.frames).unwrap_or(0), "evidence sealed");
        let update = self.sealed_update(a, &sealed);
        self.publisher.send_update(&update, a.severity).await;
        let ev = self.clone_for_retention();
        if let Ok(n) = tokio::task::spawn_blocking(move || ev.run()).await {
            self.counters.removed.fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Waits for the post-roll (bounded: a stalled camera still gets a
    /// package, and a session that ended — the camera reconnected — gives
    /// what it had); the clip's span (none when the ring no longer holds the
    /// event's session or has nothing) and the event time on the ring's clock.
    async fn wait_for_span(&self, pkg: &Package) -> (Option<ring::Span>, u64) {
        let pre = (self.cfg.pre_secs * 1e9) as u64;
        let post = (self.cfg.post_secs * 1e9) as u64;
        // The clip's length cap: never further back than this before the event.
        let reach =
            ((self.cfg.max_clip_secs - self.cfg.post_secs).max(self.cfg.pre_secs) * 1e9) as u64;
        let deadline = Instant::now() + crate::base::secs(self.cfg.post_secs + 10.0);
        let mut event_pts = pkg.event_pts_ns;
        let span = loop {
            let ready = {
                let r = lock_ring(&pkg.ring);
                match r.segment(pkg.session) {
                    None => Some(None),
                    Some(seg) => {
                        if r.wall_clock {
                            event_pts = seg.pts_at_wall(pkg.event_wall).unwrap_or(0);
                        }
                        let want_end = event_pts + post;
                        let arrived = seg.latest_pts().is_some_and(|p| p >= want_end);
                        let mut span = None;
                        if arrived || seg.ended || Instant::now() > deadline {
                            span = seg.span(
                                event_pts.saturating_sub(pre),
                                want_end,
                                event_pts.saturating_sub(reach),
                            );
                        }
                        // Up to the end of the last chunk (shared with the next
                        // event), unless the stream ended or it takes too long.
                        let complete = span.as_ref().is_some_and(|s| s.complete);
                        if arrived && complete || seg.ended || Instant::now() > deadline {
                            tracing::debug!(
                                event_pts,
                                ring_first = seg.first_pts().unwrap_or(0),
                                ring_last = seg.latest_pts().unwrap_or(0),
                                ended = seg.ended,
                                keyframes = seg.keyframe_pts().len(),
                                "evidence span"
                            );
                            // The session began less than pre_secs before the event.
                            if let Some(s) = span.as_mut() {
                                s.pre_truncated |= event_pts < pre;
                            }
                            Some(span)
                        } else {
                            None
                        }
                    }
                }
            };
            match ready {
                Some(span) => break span,
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        (span, event_pts)
    }

    /// The `evidence` update for a sealed package.
    fn sealed_update(&self, a: &Alert, sealed: &Sealed) -> EventUpdate {
        EventUpdate {
            schema: UPDATE_SCHEMA.into(),
            id: ulid::Ulid::new().to_string(),
            event_id: a.id.clone(),
            kind: "evidence".into(),
            agent_id: self.agent_id.clone(),
            camera: a.camera.clone(),
            place: a.place.clone(),
            event_type: a.kind.clone(),
            time: rfc3339(SystemTime::now()),
            evidence: Some(EvidenceSummary {
                files: sealed
                    .manifest
                    .files
                    .iter()
                    .map(|f| EvidenceFile {
                        name: f.name.clone(),
                        bytes: f.bytes,
                        sha256: f.sha256.clone(),
                    })
                    .collect(),
                manifest_sha256: sealed.manifest_sha256.clone(),
                public_key: sealed.manifest.public_key.clone(),
                clip: sealed.clip.clone(),
                plate: a.plate.clone(),
                url_path: format!("/evidence/{}/", a.id),
            }),
            review: None,
        }
    }
}

/// The store's index row of a sealed package.
fn index_row(a: &Alert, sealed: &Sealed) -> EvidenceRow {
    EvidenceRow {
        event_id: a.id.clone(),
        camera: a.camera.clone(),
        kind: a.kind.clone(),
        rule: a.rule.clone(),
        time: a.time.clone(),
        severity: a.severity.as_str().into(),
        bytes: sealed.bytes,
        held: false,
        plate: a.plate.as_ref().map(|p| PlateRow {
            text: p.text.clone(),
            confidence: p.confidence,
            valid: p.valid,
        }),
        review: None,
        files: sealed
            .manifest
            .files
            .iter()
            .map(|f| f.name.clone())
            .collect(),
        objects: serde_json::to_value(&a.objects).unwrap_or_default(),
        place: serde_json::to_value(&a.place).unwrap_or_default(),
        measured: a.measured(),
    }
}

/// What sealing produced.
pub struct Sealed {
    pub manifest: sign::Manifest,
    pub manifest_sha256: String,
    /// Bytes this package added to the disk (segments it shares with an
    /// earlier event are counted there, once).
    pub bytes: u64,
    pub clip: Option<ClipSummary>,
    /// Clip segments hard-linked from an earlier event's copy, and their bytes.
    pub shared: (u64, u64),
}

/// The pictures of a package.
pub struct Pictures {
    pub overview: Option<Vec<u8>>,
    pub closeup: Option<Vec<u8>>,
    pub plate_crop: Option<Vec<u8>>,
}

/// The name of the clip's `n`th media segment.
pub fn segment_name(n: usize) -> String {
    format!("clip-{:05}.m4s", n + 1)
}
pub const CLIP_INIT: &str = "clip-init.mp4";

/// Writes every file into `.tmp-<id>`, seals it and renames it to `<id>`.
#[allow(clippy::too_many_arguments)]
pub fn seal_package(
    dir: &Path,
    key: &super::signer::Signer,
    agent_id: &str,
    alert: &Alert,
    span: Option<&ring::Span>,
    event_pts_ns: u64,
    pictures: Pictures,
    segments: &fmp4::SharedSegments,
) -> Result<Sealed, String> {
    if !safe_name(&alert.id) {
        return Err(format!("event id '{}' is not a safe folder name", alert.id));
    }
    let tmp = dir.join(format!(".tmp-{}", alert.id));
    let fin = dir.join(&alert.id);
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let _ = std::fs::remove_dir_all(&tmp);
    private_dir(&tmp).map_err(|e| io("create folder", e))?;
    let result = (|| {
        let mut files: Vec<String> = Vec::new();
        let mut clip_summary = None;
        let mut clip_range = None;
        let mut shared = (0u64, 0u64);
        if let Some(span) = span {
            match fmp4::chunked(span, &tmp.join("clip")) {
                Ok(c) => {
                    sign::write_atomic(&tmp.join(CLIP_INIT), &c.init)
                        .map_err(|e| io(CLIP_INIT, e))?;
                    files.push(CLIP_INIT.into());
                    let mut names = Vec::new();
                    for (n, seg) in c.segments.iter().enumerate() {
                        let name = segment_name(n);
                        let sha = hex::encode(sha2::Sha256::digest(seg));
                        let written = segments
                            .place(&sha, seg, &tmp.join(&name))
                            .map_err(|e| io(&name, e))?;
                        if !written {
                            shared.0 += 1;
                            shared.1 += seg.len() as u64;
                        }
                        files.push(name.clone());
                        names.push(name);
                    }
                    let first_wall = span
                        .frames
                        .first()
                        .map(|f| f.wall)
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    let at = |ns: u64| first_wall + Duration::from_nanos(ns);
                    clip_summary = Some(ClipSummary {
                        frames: c.frames,
                        duration_secs: c.duration_ns as f64 / 1e9,
                        pre_secs: event_pts_ns.saturating_sub(c.start_pts_ns) as f64 / 1e9,
                        pre_truncated: span.pre_truncated,
                        starts_on_keyframe: span.starts_on_keyframe,
                        segments: c.segments.len(),
                        shared_segments: shared.0 as usize,
                    });
                    clip_range = Some(sign::ClipRange {
                        init: CLIP_INIT.into(),
                        segments: names,
                        frames: c.frames,
                        start: rfc3339(at(0)),
                        end: rfc3339(at(c.duration_ns)),
                        duration_secs: c.duration_ns as f64 / 1e9,
                        event_offset_secs: event_pts_ns.saturating_sub(c.start_pts_ns) as f64 / 1e9,
                        starts_on_keyframe: span.starts_on_keyframe,
                    });
                }
                Err(e) => warn!(event_id = %alert.id, error = %e, "clip not written"),
            }
        }
        let Pictures {
            overview,
            closeup,
            plate_crop,
        } = pictures;
        for (name, bytes) in [
            ("overview.jpg", overview),
            ("closeup.jpg", closeup),
            ("plate.jpg", plate_crop),
        ] {
            if let Some(b) = bytes {
                sign::write_atomic(&tmp.join(name), &b).map_err(|e| io(name, e))?;
                files.push(name.into());
            }
        }
        let json = serde_json::to_vec_pretty(alert).map_err(|e| e.to_string())?;
        sign::write_atomic(&tmp.join("event.json"), &json).map_err(|e| io("event.json", e))?;
        files.push("event.json".into());
        let names: Vec<&str> = files.iter().map(String::as_str).collect();
        let manifest = sign::seal(
            &tmp,
            &names,
            sign::Manifest {
                schema: sign::MANIFEST_SCHEMA.into(),
                event_id: alert.id.clone(),
                agent_id: agent_id.to_string(),
                camera: alert.camera.clone(),
                place: alert.place.clone(),
                time: alert.time.clone(),
                time_source: alert.time_source.clone(),
                sealed_at: rfc3339(SystemTime::now()),
                files: Vec::new(),
                clip: clip_range,
                public_key: String::new(),
                key_id: String::new(),
            },
            key,
        )
        .map_err(|e| e.to_string())?;
        let (mbytes, msha) =
            sign::hash_file(&tmp.join(sign::MANIFEST)).map_err(|e| io("manifest", e))?;
        let bytes = manifest.files.iter().map(|f| f.bytes).sum::<u64>() + mbytes + 128 - shared.1;
        restrict_files(&tmp).map_err(|e| io("set permissions", e))?;
        if let Ok(d) = std::fs::File::open(&tmp) {
            let _ = d.sync_all();
        }
        segments
            .rename_folder(&tmp, &fin)
            .map_err(|e| io("rename folder", e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(Sealed {
            manifest,
            manifest_sha256: msha,
            bytes,
            clip: clip_summary,
            shared,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Creates `dir` readable by the agent's user only (0700): evidence holds
/// plates and faces (personal data, Decree 13/2023).
pub(super) fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Every file of a sealed folder 0600 (the muxer writes with the umask).
fn restrict_files(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    for e in std::fs::read_dir(dir)?.flatten() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
