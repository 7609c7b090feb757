//! Retention: the evidence stays within a byte budget and a free-space
//! floor, oldest first, never touching held (confirmed) events; and what a
//! crash left half-built is removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{info, warn};

use crate::store::Store;

use super::{Evidence, safe_name};

impl Evidence {
    pub(super) fn clone_for_retention(&self) -> Retention {
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
}

/// Removes `.tmp-*` folders and `*.part` files (a crash mid-build).
pub(super) fn clean_partial(dir: &Path) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::evidence::EvidenceRow;

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
                place: serde_json::Value::Null,
                measured: serde_json::json!({}),
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
            reviewer: "officer".into(),
        };
        assert!(store.evidence_review("E2", &r, true).unwrap());
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
}
