//! Integrity of an evidence folder: `manifest.json` lists every file with its
//! size and sha256, and `manifest.sig` holds the agent's Ed25519 signature of
//! the manifest's exact bytes. `ioc-agent verify DIR` re-checks both.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
pub const MANIFEST_SCHEMA: &str = "ioc.evidence_manifest/v1";

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(
        "cannot read the agent key {path}: {message} — delete it to have a new one generated (alerts signed before can then only be checked with the old public key)"
    )]
    BadKey { path: PathBuf, message: String },
    #[error("cannot create the agent key {path}: {message} — check that data_dir is writable")]
    CreateKey { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
}

/// One file of an evidence folder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// What the agent signs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    pub event_id: String,
    pub agent_id: String,
    pub camera: String,
    /// Event time, RFC 3339 UTC.
    pub time: String,
    /// Where the time comes from (`agent_clock`: the box's system clock).
    pub time_source: String,
    /// When the folder was sealed, RFC 3339 UTC.
    pub sealed_at: String,
    pub files: Vec<FileEntry>,
    /// Hex Ed25519 public key that signed this manifest.
    pub public_key: String,
}

/// Loads the agent's signing key from `path`, creating it (0600) on first use.
pub fn load_or_create_key(path: &Path) -> Result<SigningKey, SignError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bad = |m: &str| SignError::BadKey {
                path: path.to_path_buf(),
                message: m.to_string(),
            };
            let bytes = hex::decode(text.trim()).map_err(|_| bad("not hex"))?;
            let arr: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| bad("expected 32 bytes"))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(m) = std::fs::metadata(path)
                    && m.permissions().mode() & 0o077 != 0
                {
                    tracing::warn!(path = %path.display(), "agent key was readable by others; setting 0600");
                    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
                }
            }
            Ok(SigningKey::from_bytes(&arr))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cerr = |m: String| SignError::CreateKey {
                path: path.to_path_buf(),
                message: m,
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| cerr(e.to_string()))?;
            }
            let mut secret = [0u8; 32];
            rand::fill(&mut secret);
            let key = SigningKey::from_bytes(&secret);
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(path).map_err(|e| cerr(e.to_string()))?;
            f.write_all(hex::encode(secret).as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| cerr(e.to_string()))?;
            tracing::info!(path = %path.display(), public_key = %hex::encode(key.verifying_key().as_bytes()), "generated the agent's evidence signing key");
            Ok(key)
        }
        Err(e) => Err(SignError::BadKey {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// Size and sha256 of a file.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h)?;
    Ok((n, hex::encode(h.finalize())))
}

/// Hashes `files` (names inside `dir`), writes the manifest and its signature
/// (each via a temporary name, then renamed). Returns the manifest.
pub fn seal(
    dir: &Path,
    files: &[&str],
    mut manifest: Manifest,
    key: &SigningKey,
) -> Result<Manifest, SignError> {
    let io = |p: &Path, e: std::io::Error| SignError::Io {
        path: p.to_path_buf(),
        message: e.to_string(),
    };
    manifest.files.clear();
    for name in files {
        let p = dir.join(name);
        let (bytes, sha256) = hash_file(&p).map_err(|e| io(&p, e))?;
        manifest.files.push(FileEntry {
            name: name.to_string(),
            bytes,
            sha256,
        });
    }
    manifest.public_key = hex::encode(key.verifying_key().as_bytes());
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| SignError::Io {
        path: dir.join(MANIFEST),
        message: e.to_string(),
    })?;
    let sig = key.sign(&body);
    write_atomic(&dir.join(MANIFEST), &body).map_err(|e| io(&dir.join(MANIFEST), e))?;
    write_atomic(&dir.join(SIGNATURE), hex::encode(sig.to_bytes()).as_bytes())
        .map_err(|e| io(&dir.join(SIGNATURE), e))?;
    Ok(manifest)
}

/// Writes `path` via `path.part` + fsync + rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let mut f = std::fs::File::create(&part)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&part, path)
}

/// Why a folder failed verification.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    MissingManifest,
    BadSignature,
    WrongKey {
        found: String,
    },
    Changed {
        file: String,
    },
    Missing {
        file: String,
    },
    Unlisted {
        file: String,
    },
    /// A manifest entry that is not a plain file name of the folder
    /// (`../x`, `a/b`, the manifest itself).
    BadName {
        file: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::MissingManifest => {
                write!(f, "{MANIFEST} or {SIGNATURE} is missing or unreadable")
            }
            Problem::BadSignature => write!(
                f,
                "{MANIFEST}: the signature does not match (the manifest was changed)"
            ),
            Problem::WrongKey { found } => write!(
                f,
                "{MANIFEST}: signed by key {found}, not by the expected agent key"
            ),
            Problem::BadName { file } => write!(
                f,
                "{MANIFEST} names '{file}', which is not a file of this folder (forged or damaged manifest)"
            ),
            Problem::Changed { file } => write!(
                f,
                "{file}: changed since it was sealed (sha256 or size differs)"
            ),
            Problem::Missing { file } => write!(f, "{file}: listed in the manifest but missing"),
            Problem::Unlisted { file } => write!(
                f,
                "{file}: not covered by the manifest (added after sealing)"
            ),
        }
    }
}

/// Verifies an evidence folder; `expected_key` (hex) pins the signer.
/// Returns the manifest when everything matches, else every problem found.
/// A hex Ed25519 public key (as `ioc-agent key show` prints it).
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, String> {
    hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| {
            format!(
                "'{}' is not an Ed25519 public key; give the 64 hex digits `ioc-agent key show` prints",
                hex_key.trim()
            )
        })
}

/// The public key of an existing agent key file (never creates one).
pub fn public_key_of(path: &Path) -> Result<VerifyingKey, SignError> {
    if !path.exists() {
        return Err(SignError::BadKey {
            path: path.to_path_buf(),
            message: "no such key file (this agent has not signed anything yet)".into(),
        });
    }
    load_or_create_key(path).map(|k| k.verifying_key())
}

/// Whether a manifest entry names a plain file of the folder itself.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && name != MANIFEST
        && name != SIGNATURE
}

/// Checks an evidence folder against `trusted`, the signer's key pinned by
/// the one who verifies (the agent's key from `key show`, registered at the
/// IOC). The key written inside the manifest proves nothing on its own: a
/// forger can re-hash and re-sign with a fresh key; only the pinned key
/// decides. Names in the manifest must be plain files of the folder.
pub fn verify(dir: &Path, trusted: &VerifyingKey) -> Result<Manifest, Vec<Problem>> {
    let (Ok(body), Ok(sig_hex)) = (
        std::fs::read(dir.join(MANIFEST)),
        std::fs::read_to_string(dir.join(SIGNATURE)),
    ) else {
        return Err(vec![Problem::MissingManifest]);
    };
    let Ok(manifest) = serde_json::from_slice::<Manifest>(&body) else {
        return Err(vec![Problem::BadSignature]);
    };
    let sig = hex::decode(sig_hex.trim())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
        .map(|b| Signature::from_bytes(&b));
    let mut problems = Vec::new();
    match sig {
        Some(s) if trusted.verify(&body, &s).is_ok() => {}
        _ => problems.push(Problem::BadSignature),
    }
    let pinned = hex::encode(trusted.as_bytes());
    if !pinned.eq_ignore_ascii_case(&manifest.public_key) {
        problems.push(Problem::WrongKey {
            found: manifest.public_key.clone(),
        });
    }
    for f in &manifest.files {
        if !plain_name(&f.name) {
            problems.push(Problem::BadName {
                file: f.name.clone(),
            });
            continue;
        }
        match hash_file(&dir.join(&f.name)) {
            Ok((bytes, sha)) if bytes == f.bytes && sha == f.sha256 => {}
            Ok(_) => problems.push(Problem::Changed {
                file: f.name.clone(),
            }),
            Err(_) => problems.push(Problem::Missing {
                file: f.name.clone(),
            }),
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut extra: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| {
                n != MANIFEST && n != SIGNATURE && !manifest.files.iter().any(|f| &f.name == n)
            })
            .collect();
        extra.sort();
        problems.extend(extra.into_iter().map(|file| Problem::Unlisted { file }));
    }
    if problems.is_empty() {
        Ok(manifest)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed() -> (tempfile::TempDir, SigningKey) {
        let d = tempfile::tempdir().unwrap();
        let key = load_or_create_key(&d.path().join("keys/agent.key")).unwrap();
        let ev = d.path().join("ev");
        std::fs::create_dir(&ev).unwrap();
        std::fs::write(ev.join("clip.mp4"), vec![7u8; 5000]).unwrap();
        std::fs::write(ev.join("overview.jpg"), vec![9u8; 3000]).unwrap();
        let m = Manifest {
            schema: MANIFEST_SCHEMA.into(),
            event_id: "E1".into(),
            agent_id: "a".into(),
            camera: "c".into(),
            time: "2026-11-22T00:00:00Z".into(),
            time_source: "agent_clock".into(),
            sealed_at: "2026-11-22T00:00:01Z".into(),
            files: vec![],
            public_key: String::new(),
        };
        seal(&ev, &["clip.mp4", "overview.jpg"], m, &key).unwrap();
        (d, key)
    }

    #[test]
    fn key_is_created_0600_and_reloaded() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent.key");
        let k1 = load_or_create_key(&p).unwrap();
        let k2 = load_or_create_key(&p).unwrap();
        assert_eq!(k1.verifying_key(), k2.verifying_key());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&p, "zz").unwrap();
        assert!(
            load_or_create_key(&p)
                .unwrap_err()
                .to_string()
                .contains("delete it")
        );
    }

    #[test]
    fn a_folder_resigned_with_another_key_is_refused() {
        let (d, key) = sealed();
        let ev = d.path().join("ev");
        // A forger edits the clip, re-hashes and re-signs with a fresh key:
        // the manifest then names the forger's key, and must not pass.
        std::fs::write(ev.join("clip.mp4"), vec![8u8; 5000]).unwrap();
        let forger = SigningKey::from_bytes(&[42u8; 32]);
        let mut m: Manifest =
            serde_json::from_slice(&std::fs::read(ev.join(MANIFEST)).unwrap()).unwrap();
        m.files.clear();
        seal(&ev, &["clip.mp4", "overview.jpg"], m, &forger).unwrap();
        let problems = verify(&ev, &key.verifying_key()).unwrap_err();
        assert!(
            problems.contains(&Problem::BadSignature),
            "forged folder passed: {problems:?}"
        );
        // The forger's own key does verify it: the anchor is what decides.
        assert!(verify(&ev, &forger.verifying_key()).is_ok());
    }

    #[test]
    fn a_manifest_naming_a_path_outside_the_folder_is_refused() {
        let (d, key) = sealed();
        let ev = d.path().join("ev");
        std::fs::write(d.path().join("outside.txt"), b"x").unwrap();
        let mut m: Manifest =
            serde_json::from_slice(&std::fs::read(ev.join(MANIFEST)).unwrap()).unwrap();
        let (bytes, sha256) = hash_file(&d.path().join("outside.txt")).unwrap();
        m.files.push(FileEntry {
            name: "../outside.txt".into(),
            bytes,
            sha256,
        });
        let body = serde_json::to_vec_pretty(&m).unwrap();
        std::fs::write(ev.join(MANIFEST), &body).unwrap();
        let sig = key.sign(&body);
        std::fs::write(ev.join(SIGNATURE), hex::encode(sig.to_bytes())).unwrap();
        let problems = verify(&ev, &key.verifying_key()).unwrap_err();
        assert_eq!(
            problems,
            vec![Problem::BadName {
                file: "../outside.txt".into()
            }]
        );
    }

    #[test]
    fn untouched_folder_verifies_and_a_changed_byte_is_named() {
        let (d, key) = sealed();
        let ev = d.path().join("ev");
        let pk = hex::encode(key.verifying_key().as_bytes());
        let trusted = parse_public_key(&pk).unwrap();
        assert!(verify(&ev, &trusted).is_ok());
        let other = SigningKey::from_bytes(&[1u8; 32]).verifying_key();
        let problems = verify(&ev, &other).unwrap_err();
        assert!(problems.contains(&Problem::BadSignature), "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| matches!(p, Problem::WrongKey { .. })),
            "{problems:?}"
        );
        let mut b = std::fs::read(ev.join("overview.jpg")).unwrap();
        b[100] ^= 1;
        std::fs::write(ev.join("overview.jpg"), b).unwrap();
        assert_eq!(
            verify(&ev, &trusted).unwrap_err(),
            vec![Problem::Changed {
                file: "overview.jpg".into()
            }]
        );
    }

    #[test]
    fn edited_manifest_or_added_file_fails() {
        let (d, key) = sealed();
        let trusted = key.verifying_key();
        let ev = d.path().join("ev");
        std::fs::write(ev.join("extra.jpg"), b"x").unwrap();
        assert_eq!(
            verify(&ev, &trusted).unwrap_err(),
            vec![Problem::Unlisted {
                file: "extra.jpg".into()
            }]
        );
        std::fs::remove_file(ev.join("extra.jpg")).unwrap();
        let m = std::fs::read_to_string(ev.join(MANIFEST)).unwrap();
        std::fs::write(
            ev.join(MANIFEST),
            m.replace("\"camera\": \"c\"", "\"camera\": \"d\""),
        )
        .unwrap();
        assert_eq!(
            verify(&ev, &trusted).unwrap_err(),
            vec![Problem::BadSignature]
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Any single flipped byte in any sealed file is caught and named.
        #[test]
        fn any_flipped_byte_is_caught(file in 0usize..2, pos in 0usize..3000, bit in 0u8..8) {
            let (d, key) = sealed();
            let ev = d.path().join("ev");
            let name = ["clip.mp4", "overview.jpg"][file];
            let mut b = std::fs::read(ev.join(name)).unwrap();
            b[pos] ^= 1 << bit;
            std::fs::write(ev.join(name), b).unwrap();
            proptest::prop_assert_eq!(verify(&ev, &key.verifying_key()).unwrap_err(), vec![Problem::Changed { file: name.into() }]);
        }
    }
}
