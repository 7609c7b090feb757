//! Reviews as evidence: each decision an officer makes on an event is a
//! record in the event's folder, `review-NNN.json`, signed by the agent key
//! (`review-NNN.sig`), naming the reviewer, their role and the time, and
//! bound to the sealed manifest (its sha256) and to the review before it
//! (its sha256). Records are never overwritten: a later decision is a new
//! record, so the history stays. `ioc-agent verify` checks them all.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Verifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sign::{self, MANIFEST, Sign, Trust};

pub const REVIEW_SCHEMA: &str = "ioc.evidence_review/v1";
/// Records kept per event at most.
pub const MAX_REVIEWS: u32 = 999;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReviewRecord {
    pub schema: String,
    pub event_id: String,
    /// 1, 2, …: the record's place in the folder's history.
    pub seq: u32,
    /// `confirmed` or `rejected`.
    pub status: String,
    pub note: String,
    /// The logged-in user (`[[http.users]] name`).
    pub reviewer: String,
    pub role: String,
    /// When, RFC 3339 UTC (the box's clock).
    pub at: String,
    /// sha256 of the folder's `manifest.json`: the evidence this judges.
    pub manifest_sha256: String,
    /// sha256 of the previous record's file; empty for the first.
    pub previous_sha256: String,
    pub key_id: String,
}

/// `review-NNN.json` / `.sig` for record `seq`.
pub fn names(seq: u32) -> (String, String) {
    (
        format!("review-{seq:03}.json"),
        format!("review-{seq:03}.sig"),
    )
}

/// Whether `name` is a review record file or its signature.
pub fn is_review_file(name: &str) -> bool {
    name.strip_prefix("review-")
        .and_then(|r| r.strip_suffix(".json").or_else(|| r.strip_suffix(".sig")))
        .is_some_and(|n| n.len() == 3 && n.bytes().all(|b| b.is_ascii_digit()))
}

fn sha_of(path: &Path) -> std::io::Result<String> {
    Ok(hex::encode(Sha256::digest(std::fs::read(path)?)))
}

/// Writes `bytes` under `path` only if no such file exists (a `.part` file,
/// fsync, then a hard link, which fails on an existing name), mode 0600.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let res = (|| {
        let mut f = opts.open(&part)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::hard_link(&part, path)
    })();
    let _ = std::fs::remove_file(&part);
    res
}

/// The records in `dir`, in order (1, 2, … without gaps).
fn count(dir: &Path) -> u32 {
    let mut n = 0;
    while dir.join(names(n + 1).0).exists() {
        n += 1;
    }
    n
}

/// Appends a signed review record to the sealed folder `dir`.
#[allow(clippy::too_many_arguments)]
pub fn append(
    dir: &Path,
    key: &dyn Sign,
    event_id: &str,
    status: &str,
    note: &str,
    reviewer: &str,
    role: &str,
    at: &str,
) -> Result<ReviewRecord, String> {
    let manifest_sha256 = sha_of(&dir.join(MANIFEST))
        .map_err(|e| format!("the event's folder has no readable manifest: {e}"))?;
    // Two reviews at once: the loser of the hard link retries at the next seq.
    for _ in 0..8 {
        let seq = count(dir) + 1;
        if seq > MAX_REVIEWS {
            return Err(format!(
                "event {event_id} already has {MAX_REVIEWS} reviews"
            ));
        }
        let previous_sha256 = if seq == 1 {
            String::new()
        } else {
            sha_of(&dir.join(names(seq - 1).0)).map_err(|e| e.to_string())?
        };
        let rec = ReviewRecord {
            schema: REVIEW_SCHEMA.into(),
            event_id: event_id.into(),
            seq,
            status: status.into(),
            note: note.into(),
            reviewer: reviewer.into(),
            role: role.into(),
            at: at.into(),
            manifest_sha256: manifest_sha256.clone(),
            previous_sha256,
            key_id: sign::key_id(&key.public()),
        };
        let body = serde_json::to_vec_pretty(&rec).map_err(|e| e.to_string())?;
        let (json, sig) = names(seq);
        match write_new(&dir.join(&json), &body) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot write {json}: {e}")),
        }
        let s = key.sign_bytes(&body).map_err(|e| e.to_string())?;
        write_new(&dir.join(&sig), hex::encode(s.to_bytes()).as_bytes())
            .map_err(|e| format!("cannot write {sig}: {e}"))?;
        return Ok(rec);
    }
    Err("the review history is changing too fast; try again".into())
}

/// Why a folder's review records fail.
#[derive(Debug, Clone, PartialEq)]
pub enum ReviewProblem {
    /// Not a record, or its signature is missing or wrong.
    BadSignature { file: String },
    /// Signed, but for another event, another manifest, or out of order.
    Mismatch { file: String, what: &'static str },
    /// A gap: a record's number is missing.
    Gap { missing: String },
}

impl std::fmt::Display for ReviewProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReviewProblem::BadSignature { file } => write!(
                f,
                "{file}: the review's signature is missing or does not match a trusted key (the review was changed or forged)"
            ),
            ReviewProblem::Mismatch { file, what } => {
                write!(
                    f,
                    "{file}: signed, but {what} (moved from another folder or reordered)"
                )
            }
            ReviewProblem::Gap { missing } => {
                write!(
                    f,
                    "{missing}: missing, so a review was removed from the history"
                )
            }
        }
    }
}

/// Checks every review record of `dir` against `trust` and the folder's
/// manifest. Returns the records in order.
pub fn verify(
    dir: &Path,
    trust: &Trust,
    event_id: &str,
) -> Result<Vec<ReviewRecord>, Vec<ReviewProblem>> {
    let mut seqs: Vec<u32> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    n.strip_prefix("review-")
                        .and_then(|r| r.strip_suffix(".json").or_else(|| r.strip_suffix(".sig")))
                        .filter(|_| is_review_file(&n))
                        .and_then(|d| d.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    seqs.sort();
    seqs.dedup();
    let manifest_sha = sha_of(&dir.join(MANIFEST)).unwrap_or_default();
    let mut problems = Vec::new();
    let mut out = Vec::new();
    let mut previous = String::new();
    let last = seqs.last().copied().unwrap_or(0);
    for seq in 1..=last {
        let (json, sig) = names(seq);
        let (Ok(body), Ok(sig_hex)) = (
            std::fs::read(dir.join(&json)),
            std::fs::read_to_string(dir.join(&sig)),
        ) else {
            if !dir.join(&json).exists() {
                problems.push(ReviewProblem::Gap { missing: json });
            } else {
                problems.push(ReviewProblem::BadSignature { file: json });
            }
            previous = String::new();
            continue;
        };
        let rec: Option<ReviewRecord> = serde_json::from_slice(&body).ok();
        let sig = hex::decode(sig_hex.trim())
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
            .map(|b| Signature::from_bytes(&b));
        let key = rec.as_ref().and_then(|r| trust.key(&r.key_id));
        let good = matches!((key, sig), (Some(k), Some(s)) if k.verify(&body, &s).is_ok());
        let Some(rec) = rec.filter(|_| good) else {
            problems.push(ReviewProblem::BadSignature { file: json });
            previous = String::new();
            continue;
        };
        let mismatch = if rec.event_id != event_id {
            Some("for another event")
        } else if rec.manifest_sha256 != manifest_sha {
            Some("for another manifest")
        } else if rec.seq != seq {
            Some("numbered differently")
        } else if seq > 1 && rec.previous_sha256 != previous {
            Some("does not follow the review before it")
        } else {
            None
        };
        previous = hex::encode(Sha256::digest(&body));
        match mismatch {
            Some(what) => problems.push(ReviewProblem::Mismatch { file: json, what }),
            None => out.push(rec),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn folder() -> (tempfile::TempDir, PathBuf, SigningKey) {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("E1");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(MANIFEST), b"{\"event_id\":\"E1\"}").unwrap();
        (d, dir, SigningKey::from_bytes(&[9u8; 32]))
    }

    #[test]
    fn reviews_append_sign_and_chain() {
        let (_d, dir, key) = folder();
        let trust = Trust::one(key.verifying_key());
        let a = append(
            &dir,
            &key,
            "E1",
            "confirmed",
            "red light",
            "officer.a",
            "reviewer",
            "t1",
        )
        .unwrap();
        let b = append(
            &dir,
            &key,
            "E1",
            "rejected",
            "ambulance",
            "officer.b",
            "reviewer",
            "t2",
        )
        .unwrap();
        assert_eq!((a.seq, b.seq), (1, 2));
        assert!(dir.join("review-001.json").exists() && dir.join("review-002.sig").exists());
        let recs = verify(&dir, &trust, "E1").unwrap();
        assert_eq!(
            recs.iter().map(|r| r.reviewer.as_str()).collect::<Vec<_>>(),
            ["officer.a", "officer.b"]
        );
        assert!(is_review_file("review-001.json") && is_review_file("review-999.sig"));
        assert!(!is_review_file("review-1.json") && !is_review_file("review-001.json.part"));
        // Never overwritten: the first record is unchanged.
        assert_eq!(
            serde_json::from_slice::<ReviewRecord>(
                &std::fs::read(dir.join("review-001.json")).unwrap()
            )
            .unwrap(),
            a
        );
    }

    #[test]
    fn an_edited_removed_or_moved_review_is_caught() {
        let (_d, dir, key) = folder();
        let trust = Trust::one(key.verifying_key());
        append(
            &dir,
            &key,
            "E1",
            "confirmed",
            "",
            "officer.a",
            "reviewer",
            "t1",
        )
        .unwrap();
        append(
            &dir,
            &key,
            "E1",
            "rejected",
            "",
            "officer.b",
            "reviewer",
            "t2",
        )
        .unwrap();
        append(
            &dir,
            &key,
            "E1",
            "confirmed",
            "",
            "officer.c",
            "reviewer",
            "t3",
        )
        .unwrap();
        // Edited: the reviewer's name changed.
        let p = dir.join("review-002.json");
        let orig = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, orig.replace("officer.b", "officer.x")).unwrap();
        assert_eq!(
            verify(&dir, &trust, "E1").unwrap_err(),
            vec![
                ReviewProblem::BadSignature {
                    file: "review-002.json".into()
                },
                ReviewProblem::Mismatch {
                    file: "review-003.json".into(),
                    what: "does not follow the review before it"
                }
            ]
        );
        std::fs::write(&p, &orig).unwrap();
        assert!(verify(&dir, &trust, "E1").is_ok());
        // Removed from the middle.
        std::fs::rename(&p, dir.join("x")).unwrap();
        std::fs::remove_file(dir.join("review-002.sig")).unwrap();
        let problems = verify(&dir, &trust, "E1").unwrap_err();
        assert!(
            problems.contains(&ReviewProblem::Gap {
                missing: "review-002.json".into()
            }),
            "{problems:?}"
        );
        // Signed by someone else.
        let (_d2, dir2, key2) = folder();
        append(
            &dir2,
            &SigningKey::from_bytes(&[1u8; 32]),
            "E1",
            "confirmed",
            "",
            "x",
            "reviewer",
            "t",
        )
        .unwrap();
        assert_eq!(
            verify(&dir2, &Trust::one(key2.verifying_key()), "E1").unwrap_err(),
            vec![ReviewProblem::BadSignature {
                file: "review-001.json".into()
            }]
        );
        // Copied from another event's folder.
        append(&dir2, &key2, "E9", "confirmed", "", "x", "reviewer", "t")
            .unwrap_or_else(|e| panic!("{e}"));
        let problems = verify(&dir2, &Trust::one(key2.verifying_key()), "E1").unwrap_err();
        assert!(
            problems.iter().any(|p| matches!(
                p,
                ReviewProblem::Mismatch {
                    what: "for another event",
                    ..
                }
            )),
            "{problems:?}"
        );
    }
}
