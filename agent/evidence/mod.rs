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

pub mod camera;
pub mod clip;
pub mod config;
pub mod font;
pub mod plate;
pub mod plates;
pub mod ring;
pub mod sign;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use crate::publish::PublisherHandle;
use crate::publish::payload::{
    Alert, ClipSummary, EventUpdate, EvidenceFile, EvidenceSummary, PlateInfo, UPDATE_SCHEMA,
    rfc3339,
};
use crate::store::Store;
use crate::store::evidence::{EvidenceRow, PlateRow};
use config::EvidenceConfig;
use ring::GopRing;

use image::{ImageEncoder, RgbImage};

use crate::decode::Frame;
use crate::rules::Geometry;

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

/// Where the evidence stage keeps its packages and key, resolved by the
/// config layer.
#[derive(Debug, Clone)]
pub struct EvidencePlace {
    pub cfg: EvidenceConfig,
    pub dir: std::path::PathBuf,
    pub key_path: std::path::PathBuf,
    pub agent_id: String,
}

impl Evidence {
    /// Creates the folder, loads (or creates) the key, removes what a crash
    /// left half-built, and applies retention once.
    pub fn open(
        place: EvidencePlace,
        store: Arc<Store>,
        publisher: PublisherHandle,
    ) -> Result<Arc<Evidence>, EvidenceError> {
        let EvidencePlace {
            cfg,
            dir,
            key_path,
            agent_id,
        } = place;
        std::fs::create_dir_all(&dir).map_err(|e| EvidenceError::Dir {
            path: dir.clone(),
            message: e.to_string(),
        })?;
        let key = sign::load_or_create_key(&key_path)?;
        let removed = clean_partial(&dir);
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

    async fn build(&self, pkg: Package) -> Result<(), String> {
        let _permit = self.busy.acquire().await.map_err(|e| e.to_string())?;
        let pre = (self.cfg.pre_secs * 1e9) as u64;
        let post = (self.cfg.post_secs * 1e9) as u64;
        // Wait for the post-roll (bounded: a stalled camera still gets a package).
        let deadline = Instant::now() + Duration::from_secs_f64(self.cfg.post_secs + 10.0);
        let mut event_pts = pkg.event_pts_ns;
        let span = loop {
            let ready = {
                let r = lock_ring(&pkg.ring);
                if r.wall_clock {
                    event_pts = r.pts_at_wall(pkg.event_wall).unwrap_or(0);
                }
                let want_end = event_pts + post;
                let same = r.session == pkg.session;
                let done = same && r.latest_pts().is_some_and(|p| p >= want_end);
                if !same {
                    Some(None)
                } else if done || Instant::now() > deadline {
                    let mut span = r.span(event_pts.saturating_sub(pre), want_end);
                    tracing::debug!(
                        event_pts,
                        ring_first = r.first_pts().unwrap_or(0),
                        ring_last = r.latest_pts().unwrap_or(0),
                        keyframes = r.keyframe_pts().len(),
                        first_keys = ?r.keyframe_pts().iter().take(8).collect::<Vec<_>>(),
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
            };
            match ready {
                Some(span) => break span,
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        if span.is_none() {
            self.counters.clips_missing.fetch_add(1, Ordering::Relaxed);
            warn!(event_id = %pkg.alert.id, "no video in the ring for this event; package has no clip");
        }
        let dir = self.dir.clone();
        let key = self.key.clone();
        let agent_id = self.agent_id.clone();
        let alert = pkg.alert.clone();
        let (overview, closeup, plate_crop) = (pkg.overview, pkg.closeup, pkg.plate_crop);
        let sealed = tokio::task::spawn_blocking(move || {
            seal_package(
                &dir,
                &key,
                &agent_id,
                &alert,
                span.as_ref(),
                event_pts,
                overview,
                closeup,
                plate_crop,
            )
        })
        .await
        .map_err(|e| e.to_string())??;
        self.counters.sealed.fetch_add(1, Ordering::Relaxed);
        let a = &pkg.alert;
        let row = EvidenceRow {
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
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.evidence_insert(&row))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        info!(event_id = %a.id, bytes = sealed.bytes, clip_frames = sealed.clip.as_ref().map(|c| c.frames).unwrap_or(0), "evidence sealed");
        let update = EventUpdate {
            schema: UPDATE_SCHEMA.into(),
            id: ulid::Ulid::new().to_string(),
            event_id: a.id.clone(),
            kind: "evidence".into(),
            agent_id: self.agent_id.clone(),
            camera: a.camera.clone(),
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
        };
        self.publisher.send_update(&update, a.severity).await;
        let ev = self.clone_for_retention();
        if let Ok(n) = tokio::task::spawn_blocking(move || ev.run()).await {
            self.counters.removed.fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    }

    fn clone_for_retention(&self) -> Retention {
        Retention {
            dir: self.dir.clone(),
            store: self.store.clone(),
            max_bytes: self.cfg.max_bytes,
            min_free: self.cfg.min_free_bytes,
        }
    }

    /// Deletes the oldest unheld folders while over budget.
    pub fn enforce_retention(&self) -> u64 {
        let n = self.clone_for_retention().run();
        self.counters.removed.fetch_add(n, Ordering::Relaxed);
        n
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

/// Removes `.tmp-*` folders and `*.part` files (a crash mid-build).
fn clean_partial(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(".tmp-") && std::fs::remove_dir_all(e.path()).is_ok() {
                n += 1;
            }
        }
    }
    n
}

/// Free bytes on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// The retention policy: oldest unheld evidence goes first while the total is
/// over `max_bytes` or the disk has less than `min_free` bytes free.
pub struct Retention {
    pub dir: PathBuf,
    pub store: Arc<Store>,
    pub max_bytes: u64,
    pub min_free: u64,
}

impl Retention {
    /// Returns how many folders were removed.
    pub fn run(&self) -> u64 {
        self.run_with(|| free_bytes(&self.dir))
    }

    pub fn run_with(&self, free: impl Fn() -> Option<u64>) -> u64 {
        let mut removed = 0;
        loop {
            let Ok((total, _held)) = self.store.evidence_bytes() else {
                break;
            };
            let low_disk = free().is_some_and(|f| f < self.min_free);
            if total <= self.max_bytes && !low_disk {
                break;
            }
            match self.store.evidence_oldest_unheld() {
                Ok(Some((id, _))) => {
                    if safe_name(&id) {
                        let _ = std::fs::remove_dir_all(self.dir.join(&id));
                    }
                    if self.store.evidence_remove(&id).is_err() {
                        break;
                    }
                    removed += 1;
                }
                _ => {
                    warn!(
                        total,
                        "evidence over budget but everything left is held; nothing removed"
                    );
                    break;
                }
            }
        }
        if removed > 0 {
            info!(removed, "retention removed the oldest evidence");
        }
        removed
    }
}

/// What sealing produced.
pub struct Sealed {
    pub manifest: sign::Manifest,
    pub manifest_sha256: String,
    pub bytes: u64,
    pub clip: Option<ClipSummary>,
}

/// Writes every file into `.tmp-<id>`, seals it and renames it to `<id>`.
#[allow(clippy::too_many_arguments)]
pub fn seal_package(
    dir: &Path,
    key: &ed25519_dalek::SigningKey,
    agent_id: &str,
    alert: &Alert,
    span: Option<&ring::Span>,
    event_pts_ns: u64,
    overview: Option<Vec<u8>>,
    closeup: Option<Vec<u8>>,
    plate_crop: Option<Vec<u8>>,
) -> Result<Sealed, String> {
    if !safe_name(&alert.id) {
        return Err(format!("event id '{}' is not a safe folder name", alert.id));
    }
    let tmp = dir.join(format!(".tmp-{}", alert.id));
    let fin = dir.join(&alert.id);
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io("create folder", e))?;
    let result = (|| {
        let mut files: Vec<&str> = Vec::new();
        let mut clip_summary = None;
        if let Some(span) = span {
            match clip::write_mp4(span, &tmp.join("clip.mp4")) {
                Ok(info) => {
                    files.push("clip.mp4");
                    clip_summary = Some(ClipSummary {
                        frames: info.frames,
                        duration_secs: info.duration_ns as f64 / 1e9,
                        pre_secs: event_pts_ns.saturating_sub(info.start_pts_ns) as f64 / 1e9,
                        pre_truncated: span.pre_truncated,
                    });
                }
                Err(e) => warn!(event_id = %alert.id, error = %e, "clip not written"),
            }
        }
        for (name, bytes) in [
            ("overview.jpg", overview),
            ("closeup.jpg", closeup),
            ("plate.jpg", plate_crop),
        ] {
            if let Some(b) = bytes {
                sign::write_atomic(&tmp.join(name), &b).map_err(|e| io(name, e))?;
                files.push(name);
            }
        }
        let json = serde_json::to_vec_pretty(alert).map_err(|e| e.to_string())?;
        sign::write_atomic(&tmp.join("event.json"), &json).map_err(|e| io("event.json", e))?;
        files.push("event.json");
        let manifest = sign::seal(
            &tmp,
            &files,
            sign::Manifest {
                schema: sign::MANIFEST_SCHEMA.into(),
                event_id: alert.id.clone(),
                agent_id: agent_id.to_string(),
                camera: alert.camera.clone(),
                time: alert.time.clone(),
                time_source: alert.time_source.clone(),
                sealed_at: rfc3339(SystemTime::now()),
                files: Vec::new(),
                public_key: String::new(),
            },
            key,
        )
        .map_err(|e| e.to_string())?;
        let (mbytes, msha) =
            sign::hash_file(&tmp.join(sign::MANIFEST)).map_err(|e| io("manifest", e))?;
        let bytes = manifest.files.iter().map(|f| f.bytes).sum::<u64>() + mbytes + 128;
        if let Ok(d) = std::fs::File::open(&tmp) {
            let _ = d.sync_all();
        }
        std::fs::rename(&tmp, &fin).map_err(|e| io("rename folder", e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(Sealed {
            manifest,
            manifest_sha256: msha,
            bytes,
            clip: clip_summary,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Per camera: the best-quality crop of each track (largest box × score), kept
/// as a small RGB image so the close-up never needs the old frame.
#[derive(Default)]
pub struct BestShots {
    shots: HashMap<u64, (f32, image::RgbImage)>,
}

impl BestShots {
    /// Updates with the tracks seen in `frame`; forgets tracks not in `alive`.
    pub fn update(&mut self, frame: &Frame, tracks: &[(u64, [f32; 4], f32)]) {
        self.shots.retain(|id, _| tracks.iter().any(|t| t.0 == *id));
        for (id, b, score) in tracks {
            let area = (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0);
            let q = area * score;
            let better = self.shots.get(id).is_none_or(|(old, _)| q > *old * 1.1);
            if better && let Some(img) = crop_rgb(frame, *b, 0.15, 480) {
                self.shots.insert(*id, (q, img));
            }
        }
    }

    pub fn get(&self, id: u64) -> Option<&image::RgbImage> {
        self.shots.get(&id).map(|(_, i)| i)
    }
}

/// RGB crop of `bbox` (frame pixels) grown by `margin` of its size on each
/// side, scaled so its longest side is at most `max_side`.
pub fn crop_rgb(
    frame: &Frame,
    bbox: [f32; 4],
    margin: f32,
    max_side: u32,
) -> Option<image::RgbImage> {
    let (fw, fh) = (frame.width as f32, frame.height as f32);
    let (w, h) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
    if w < 2.0 || h < 2.0 {
        return None;
    }
    let x0 = (bbox[0] - w * margin).clamp(0.0, fw - 1.0);
    let y0 = (bbox[1] - h * margin).clamp(0.0, fh - 1.0);
    let x1 = (bbox[2] + w * margin).clamp(x0 + 1.0, fw);
    let y1 = (bbox[3] + h * margin).clamp(y0 + 1.0, fh);
    let (cw, ch) = (x1 - x0, y1 - y0);
    let scale = (max_side as f32 / cw.max(ch)).min(1.0);
    let (ow, oh) = (
        ((cw * scale).round() as u32).max(1),
        ((ch * scale).round() as u32).max(1),
    );
    let (y, u, v) = (frame.y(), frame.u(), frame.v());
    let cwid = frame.chroma_width();
    let mut img = RgbImage::new(ow, oh);
    for oy in 0..oh {
        let sy = ((y0 + (oy as f32 + 0.5) / scale) as usize).min(frame.height as usize - 1);
        for ox in 0..ow {
            let sx = ((x0 + (ox as f32 + 0.5) / scale) as usize).min(frame.width as usize - 1);
            img.put_pixel(
                ox,
                oy,
                image::Rgb(yuv_px(
                    y[sy * frame.width as usize + sx],
                    u[(sy / 2) * cwid + sx / 2],
                    v[(sy / 2) * cwid + sx / 2],
                )),
            );
        }
    }
    Some(img)
}

fn yuv_px(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (y as i32 - 16);
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    [
        ((c + 409 * e + 128) >> 8).clamp(0, 255) as u8,
        ((c - 100 * d - 208 * e + 128) >> 8).clamp(0, 255) as u8,
        ((c + 516 * d + 128) >> 8).clamp(0, 255) as u8,
    ]
}

/// An I420 frame from an RGB picture (BT.601 limited range), e.g. a JPEG.
pub fn rgb_to_frame(img: &image::RgbImage) -> Frame {
    let (w, h) = (img.width() & !1, img.height() & !1);
    let mut f = Frame::blank(w.max(2), h.max(2));
    let cw = f.chroma_width();
    for yy in 0..h {
        for xx in 0..w {
            let p = img.get_pixel(xx, yy).0;
            let (r, g, b) = (p[0] as i32, p[1] as i32, p[2] as i32);
            let yv = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
            f.y_mut()[(yy * w + xx) as usize] = yv.clamp(0, 255) as u8;
            if yy % 2 == 0 && xx % 2 == 0 {
                let uv = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
                let vv = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
                let i = (yy / 2) as usize * cw + (xx / 2) as usize;
                f.u_mut()[i] = uv.clamp(0, 255) as u8;
                f.v_mut()[i] = vv.clamp(0, 255) as u8;
            }
        }
    }
    f
}

pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, image::ImageError> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality).write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(bytes)
}

/// Burns `text` into `img` at (x, y) in white on a dark band.
pub fn burn_text(img: &mut RgbImage, x: u32, y: u32, text: &str, scale: usize) {
    let w = font::text_width(text, scale) as u32 + 2 * scale as u32;
    let h = ((font::GLYPH_H + 2) * scale) as u32;
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            let p = img.get_pixel_mut(xx, yy);
            p.0 = p.0.map(|c| c / 4);
        }
    }
    let (iw, ih) = (img.width(), img.height());
    font::render(text, scale, |px, py| {
        let (gx, gy) = (x + scale as u32 + px as u32, y + scale as u32 + py as u32);
        if gx < iw && gy < ih {
            img.put_pixel(gx, gy, image::Rgb([255, 255, 255]));
        }
    });
}

/// The overview picture: the decision frame with geometry, boxes and track
/// ids drawn, and the camera, time and rule burned in.
pub fn overview(
    frame: &Frame,
    max_side: u32,
    geometry: Option<&Geometry>,
    boxes: &[([f32; 4], u64)],
    banner: &str,
) -> Result<Jpeg, image::ImageError> {
    let mut img = frame_to_rgb(frame, max_side);
    let only: Vec<[f32; 4]> = boxes.iter().map(|b| b.0).collect();
    annotate(&mut img, geometry, &only);
    let scale = ((img.width() / 640) as usize).max(1) + 1;
    let (w, h) = (img.width() as f32, img.height() as f32);
    for (b, id) in boxes {
        let label = format!("#{id}");
        let ly = ((b[1] * h) as u32).saturating_sub(((font::GLYPH_H + 2) * scale) as u32);
        burn_text(&mut img, (b[0] * w) as u32, ly, &label, scale);
    }
    burn_text(&mut img, 0, 0, banner, scale);
    let bytes = encode_jpeg(&img, 90)?;
    Ok(Jpeg {
        bytes,
        width: img.width(),
        height: img.height(),
    })
}

/// The best plate reading per track, with per-track rate limits.
#[derive(Default)]
pub struct PlateBook {
    pub tracks: HashMap<u64, PlateTrack>,
}

#[derive(Default, Clone)]
pub struct PlateTrack {
    pub reads: u32,
    pub last_pts: f64,
    pub best: Option<(PlateInfo, Option<Vec<u8>>)>,
}

impl PlateBook {
    /// Whether `track` may be read at `pts` under the limits.
    pub fn due(&self, track: u64, pts: f64, min_interval: f64, max_reads: u32) -> bool {
        match self.tracks.get(&track) {
            None => true,
            Some(t) => t.reads < max_reads && pts - t.last_pts >= min_interval,
        }
    }

    /// Records a reading; keeps the best (valid first, then confidence).
    pub fn record(&mut self, track: u64, pts: f64, reading: Option<(PlateInfo, Option<Vec<u8>>)>) {
        let t = self.tracks.entry(track).or_default();
        t.reads += 1;
        t.last_pts = pts;
        if let Some(r) = reading {
            let better = match &t.best {
                None => true,
                Some((b, _)) => (r.0.valid, r.0.confidence) > (b.valid, b.confidence),
            };
            if better {
                t.best = Some(r);
            }
        }
    }

    pub fn best(&self, track: u64) -> Option<&(PlateInfo, Option<Vec<u8>>)> {
        self.tracks.get(&track).and_then(|t| t.best.as_ref())
    }

    /// Forgets tracks that are gone.
    pub fn retain(&mut self, alive: impl Fn(u64) -> bool) {
        self.tracks.retain(|id, _| alive(*id));
    }
}

/// A JPEG with its size.
#[derive(Debug, Clone)]
pub struct Jpeg {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Scales `frame` so its longest side is at most `max_side`, converting only
/// the output pixels from I420 (BT.601 limited range) to RGB.
pub fn frame_to_rgb(frame: &Frame, max_side: u32) -> RgbImage {
    let (fw, fh) = (frame.width, frame.height);
    let scale = (max_side as f32 / fw.max(fh) as f32).min(1.0);
    let w = ((fw as f32 * scale).round() as u32).max(1);
    let h = ((fh as f32 * scale).round() as u32).max(1);
    let (y, u, v) = (frame.y(), frame.u(), frame.v());
    let cw = frame.chroma_width();
    let mut img = RgbImage::new(w, h);
    for oy in 0..h {
        let sy = ((oy as f32 + 0.5) / scale) as usize;
        let sy = sy.min(fh as usize - 1);
        for ox in 0..w {
            let sx = (((ox as f32 + 0.5) / scale) as usize).min(fw as usize - 1);
            let c = 298 * (y[sy * fw as usize + sx] as i32 - 16);
            let d = u[(sy / 2) * cw + sx / 2] as i32 - 128;
            let e = v[(sy / 2) * cw + sx / 2] as i32 - 128;
            let r = ((c + 409 * e + 128) >> 8).clamp(0, 255) as u8;
            let g = ((c - 100 * d - 208 * e + 128) >> 8).clamp(0, 255) as u8;
            let b = ((c + 516 * d + 128) >> 8).clamp(0, 255) as u8;
            img.put_pixel(ox, oy, image::Rgb([r, g, b]));
        }
    }
    img
}

fn draw_line(img: &mut RgbImage, a: (f32, f32), b: (f32, f32), color: [u8; 3], thick: i32) {
    let (w, h) = (img.width() as i32, img.height() as i32);
    let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as i32).max(1);
    for s in 0..=steps {
        let t = s as f32 / steps as f32;
        let x = (a.0 + (b.0 - a.0) * t).round() as i32;
        let y = (a.1 + (b.1 - a.1) * t).round() as i32;
        for dy in -thick / 2..=thick / 2 {
            for dx in -thick / 2..=thick / 2 {
                let (px, py) = (x + dx, y + dy);
                if px >= 0 && py >= 0 && px < w && py < h {
                    img.put_pixel(px as u32, py as u32, image::Rgb(color));
                }
            }
        }
    }
}

/// Draws the rule geometry (yellow) and the object boxes (red, normalised
/// coordinates) on a thumbnail of the frame and encodes it as JPEG.
pub fn thumbnail(
    frame: &Frame,
    max_side: u32,
    geometry: Option<&Geometry>,
    boxes: &[[f32; 4]],
) -> Result<Jpeg, image::ImageError> {
    let mut img = frame_to_rgb(frame, max_side);
    annotate(&mut img, geometry, boxes);
    let bytes = encode_jpeg(&img, 80)?;
    Ok(Jpeg {
        bytes,
        width: img.width(),
        height: img.height(),
    })
}

/// Draws the rule geometry (yellow) and boxes (red, normalised) on `img`.
pub fn annotate(img: &mut RgbImage, geometry: Option<&Geometry>, boxes: &[[f32; 4]]) {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let px = |p: [f64; 2]| (p[0] as f32 * w, p[1] as f32 * h);
    let yellow = [255, 210, 0];
    match geometry {
        Some(Geometry::Zone { polygon, .. }) | Some(Geometry::Lane { polygon, .. }) => {
            for i in 0..polygon.len() {
                draw_line(
                    img,
                    px(polygon[i]),
                    px(polygon[(i + 1) % polygon.len()]),
                    yellow,
                    2,
                );
            }
            if let Some(Geometry::Lane { arrow, .. }) = geometry {
                // The allowed direction, with a head.
                let (a, b) = (px(arrow[0]), px(arrow[1]));
                draw_line(img, a, b, yellow, 3);
                let (dx, dy) = (b.0 - a.0, b.1 - a.1);
                let l = (dx * dx + dy * dy).sqrt().max(1.0);
                let (ux, uy) = (dx / l * 12.0, dy / l * 12.0);
                draw_line(
                    img,
                    b,
                    (b.0 - ux - uy * 0.6, b.1 - uy + ux * 0.6),
                    yellow,
                    3,
                );
                draw_line(
                    img,
                    b,
                    (b.0 - ux + uy * 0.6, b.1 - uy - ux * 0.6),
                    yellow,
                    3,
                );
            }
        }
        Some(Geometry::Line { points, .. }) => {
            draw_line(img, px(points[0]), px(points[1]), yellow, 3)
        }
        Some(Geometry::None) | None => {}
    }
    for b in boxes {
        let (x1, y1, x2, y2) = (b[0] * w, b[1] * h, b[2] * w, b[3] * h);
        let red = [255, 32, 32];
        draw_line(img, (x1, y1), (x2, y1), red, 2);
        draw_line(img, (x2, y1), (x2, y2), red, 2);
        draw_line(img, (x2, y2), (x1, y2), red, 2);
        draw_line(img, (x1, y2), (x1, y1), red, 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexed(store: &Store, dir: &Path, id: &str, time: &str, bytes: usize) {
        std::fs::create_dir_all(dir.join(id)).unwrap();
        std::fs::write(dir.join(id).join("clip.mp4"), vec![0u8; bytes]).unwrap();
        store
            .evidence_insert(&EvidenceRow {
                event_id: id.into(),
                camera: "c".into(),
                kind: "traffic.red_light".into(),
                rule: "r".into(),
                time: time.into(),
                severity: "normal".into(),
                bytes: bytes as u64,
                held: false,
                plate: None,
                review: None,
                files: vec!["clip.mp4".into()],
                objects: serde_json::json!([]),
            })
            .unwrap();
    }

    #[test]
    fn retention_keeps_the_newest_and_held_evidence() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Store::open(
                d.path(),
                crate::store::Limits {
                    max_rows: 10,
                    max_bytes: 1 << 20,
                },
            )
            .unwrap(),
        );
        let dir = d.path().join("evidence");
        for i in 0..6 {
            indexed(
                &store,
                &dir,
                &format!("E{i}"),
                &format!("2026-11-22T07:0{i}:00.000Z"),
                1000,
            );
        }
        // The oldest is under review (held); confirming also holds.
        assert!(store.evidence_hold("E0", true).unwrap());
        let r = crate::store::evidence::Review {
            status: "confirmed".into(),
            note: String::new(),
            at: "2026-11-22T08:00:00Z".into(),
        };
        assert!(store.evidence_review("E2", &r).unwrap());
        let ret = Retention {
            dir: dir.clone(),
            store: store.clone(),
            max_bytes: 4000,
            min_free: 0,
        };
        assert_eq!(ret.run_with(|| None), 2);
        let left: Vec<String> = store
            .evidence_list(&Default::default())
            .unwrap()
            .into_iter()
            .map(|r| r.event_id)
            .collect();
        assert_eq!(left, ["E5", "E4", "E2", "E0"]);
        assert!(!dir.join("E1").exists() && !dir.join("E3").exists());
        assert!(dir.join("E0").exists() && dir.join("E5").exists());
        // A free-space floor removes more, but never held evidence.
        let low = Retention {
            min_free: 10,
            ..ret
        };
        assert_eq!(low.run_with(|| Some(0)), 2);
        let left: Vec<String> = store
            .evidence_list(&Default::default())
            .unwrap()
            .into_iter()
            .map(|r| r.event_id)
            .collect();
        assert_eq!(left, ["E2", "E0"]);
        assert_eq!(store.evidence_bytes().unwrap(), (2000, 2000));
    }

    #[test]
    fn a_crash_mid_build_leaves_no_final_folder() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join(".tmp-E9")).unwrap();
        std::fs::write(d.path().join(".tmp-E9/clip.mp4.part"), b"half").unwrap();
        std::fs::create_dir_all(d.path().join("E8")).unwrap();
        assert_eq!(clean_partial(d.path()), 1);
        assert!(!d.path().join(".tmp-E9").exists() && d.path().join("E8").exists());
        assert!(safe_name("01M813CSQ6DQ45Q58QPPXJXNZQ"));
        for bad in ["..", "a/b", "%2e%2e", "", ".tmp-x", "a\\b"] {
            assert!(!safe_name(bad), "{bad}");
        }
    }

    #[test]
    fn overview_burns_in_text() {
        let mut f = Frame::blank(640, 360);
        f.y_mut().fill(16);
        f.u_mut().fill(128);
        f.v_mut().fill(128);
        let plain = overview(&f, 640, None, &[], "").unwrap();
        let text = overview(
            &f,
            640,
            None,
            &[([0.2, 0.3, 0.4, 0.6], 7)],
            "CAM1 2026-11-22 07:30:00.000 UTC",
        )
        .unwrap();
        let a = image::load_from_memory(&plain.bytes).unwrap().to_rgb8();
        let b = image::load_from_memory(&text.bytes).unwrap().to_rgb8();
        let bright = |img: &RgbImage| img.pixels().filter(|p| p.0[0] > 200).count();
        assert_eq!(bright(&a), 0);
        assert!(bright(&b) > 500, "{} bright pixels", bright(&b));
    }

    #[test]
    fn thumbnail_is_a_jpeg_of_the_stated_size() {
        let mut f = Frame::blank(1280, 720);
        f.y_mut().fill(120);
        f.u_mut().fill(128);
        f.v_mut().fill(128);
        let j = thumbnail(&f, 640, None, &[[0.1, 0.1, 0.5, 0.5]]).unwrap();
        assert_eq!((j.width, j.height), (640, 360));
        let img = image::load_from_memory_with_format(&j.bytes, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((img.width(), img.height()), (640, 360));
    }
}
