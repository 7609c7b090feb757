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
    /// Where the camera is (`[cameras.place]`), signed with the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<crate::publish::payload::Place>,
    /// Event time, RFC 3339 UTC.
    pub time: String,
    /// Where the time comes from (`agent_clock`: the box's system clock).
    pub time_source: String,
    /// When the folder was sealed, RFC 3339 UTC.
    pub sealed_at: String,
    pub files: Vec<FileEntry>,
    /// The clip: which files make it, in order, and the time range it covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<ClipRange>,
    /// Hex Ed25519 public key that signed this manifest. Informative only:
    /// `verify` trusts the keys it is given, never this one.
    pub public_key: String,
    /// The signer's key id (`key_id`: 16 hex digits of the key's sha256), so
    /// a verifier holding several keys of an agent (rotation) picks the one.
    /// Empty in manifests written before key ids.
    #[serde(default)]
    pub key_id: String,
}

/// The clip of a package: its init segment and media segments (each also in
/// `files` with its sha256; segments may be hard links shared with
/// overlapping events), and the time range this event's clip covers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClipRange {
    pub init: String,
    pub segments: Vec<String>,
    pub frames: usize,
    /// Arrival time of the first frame, RFC 3339 UTC.
    pub start: String,
    /// `start` + `duration_secs`.
    pub end: String,
    pub duration_secs: f64,
    /// Where the event lies in the clip, seconds from its start.
    pub event_offset_secs: f64,
    pub starts_on_keyframe: bool,
}

/// What signs evidence: the agent's own key, or the signer process
/// ([`super::signer`]).
pub trait Sign {
    fn public(&self) -> VerifyingKey;
    fn sign_bytes(&self, body: &[u8]) -> Result<Signature, SignError>;
}

impl Sign for SigningKey {
    fn public(&self) -> VerifyingKey {
        self.verifying_key()
    }
    fn sign_bytes(&self, body: &[u8]) -> Result<Signature, SignError> {
        Ok(self.sign(body))
    }
}

/// A key's id: the first 16 hex digits of the sha256 of its 32 bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    let d = Sha256::digest(key.as_bytes());
    hex::encode(&d[..8])
}

/// The keys a verifier trusts: one pinned key, or a trust file of an agent's
/// current and retired keys (`ioc-agent key trust` prints one).
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: Vec<(VerifyingKey, String)>,
}

impl Trust {
    pub fn one(key: VerifyingKey) -> Trust {
        Trust {
            keys: vec![(key, String::new())],
        }
    }

    /// Adds a key with a label (`retired 2026-11-30`, `current`, …).
    pub fn add(&mut self, key: VerifyingKey, label: &str) {
        if !self.keys.iter().any(|(k, _)| *k == key) {
            self.keys.push((key, label.to_string()));
        }
    }

    /// A trust file: one key per line as 64 hex digits, then an optional
    /// label; `#` starts a comment line. Errors name the line.
    pub fn parse(text: &str) -> Result<Trust, String> {
        let mut t = Trust::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (hex_key, label) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let key = parse_public_key(hex_key).map_err(|e| format!("line {}: {e}", i + 1))?;
            t.add(key, label.trim());
        }
        if t.keys.is_empty() {
            return Err(
                "no key in it; each line is a 64-hex-digit public key (`ioc-agent key trust` prints them)"
                    .into(),
            );
        }
        Ok(t)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted key with this id.
    pub fn key(&self, id: &str) -> Option<&VerifyingKey> {
        self.keys.iter().map(|(k, _)| k).find(|k| key_id(k) == id)
    }

    /// The label of the trusted key with this id.
    pub fn label(&self, id: &str) -> Option<&str> {
        self.keys
            .iter()
            .find(|(k, _)| key_id(k) == id)
            .map(|(_, l)| l.as_str())
    }

    /// The trust file's text: one line per key.
    pub fn to_text(&self) -> String {
        self.keys
            .iter()
            .map(|(k, l)| match l.as_str() {
                "" => format!("{}\n", hex::encode(k.as_bytes())),
                l => format!("{} {l}\n", hex::encode(k.as_bytes())),
            })
            .collect()
    }

    /// The trusted key a manifest names (by key id, or by its public key in
    /// manifests older than key ids).
    fn signer(&self, m: &Manifest) -> Option<&VerifyingKey> {
        self.keys.iter().map(|(k, _)| k).find(|k| {
            if m.key_id.is_empty() {
                hex::encode(k.as_bytes()).eq_ignore_ascii_case(&m.public_key)
            } else {
                key_id(k) == m.key_id
            }
        })
    }
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
pub fn seal<K: Sign + ?Sized>(
    dir: &Path,
    files: &[&str],
    mut manifest: Manifest,
    key: &K,
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
    let public = key.public();
    manifest.public_key = hex::encode(public.as_bytes());
    manifest.key_id = key_id(&public);
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| SignError::Io {
        path: dir.join(MANIFEST),
        message: e.to_string(),
    })?;
    let sig = key.sign_bytes(&body)?;
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
    /// Signed by a key the verifier does not trust.
    Untrusted {
        key_id: String,
        public_key: String,
    },
    /// The folder's name is not the manifest's event id (a genuine folder
    /// copied under another event).
    WrongFolder {
        folder: String,
        event_id: String,
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
            Problem::Untrusted { key_id, public_key } => write!(
                f,
                "{MANIFEST}: signed by key {key_id} ({public_key}), which is not among the trusted keys \
                 (not this agent's key, a forgery, or a retired key missing from the trust file)"
            ),
            Problem::WrongFolder { folder, event_id } => write!(
                f,
                "{MANIFEST}: the folder is named '{folder}' but the manifest is for event '{event_id}' \
                 (evidence copied under another event)"
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
            message: "no such key file: the agent creates its key, as its service user, on first start (start it once, then run this as that user: sudo -u ioc-agent …)".into(),
        });
    }
    load_or_create_key(path).map(|k| k.verifying_key())
}

/// The keys this agent has signed with: the current key (when it exists)
/// and the retired ones kept in `retired` (a trust file written by
/// [`rotate`]). Never creates a key.
pub fn agent_trust(current: Option<VerifyingKey>, retired: &Path) -> Result<Trust, SignError> {
    let mut t = Trust::default();
    if let Some(k) = current {
        t.add(k, "current");
    }
    match std::fs::read_to_string(retired) {
        Ok(text) => {
            let old = Trust::parse(&text).map_err(|m| SignError::BadKey {
                path: retired.to_path_buf(),
                message: m,
            })?;
            for (k, l) in old.keys {
                t.add(k, &l);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(SignError::Io {
                path: retired.to_path_buf(),
                message: e.to_string(),
            });
        }
    }
    if t.is_empty() {
        return Err(SignError::BadKey {
            path: retired.to_path_buf(),
            message: "this agent has no key yet (it creates its key, as its service user, on first start)".into(),
        });
    }
    Ok(t)
}

/// Retires the key at `key_path` (its public key is appended to `retired`,
/// so evidence it signed still verifies) and writes a new one in its place.
/// Returns the new key. The running agent signs with the old key until it
/// restarts.
pub fn rotate(key_path: &Path, retired: &Path, now: &str) -> Result<SigningKey, SignError> {
    let old = public_key_of(key_path)?;
    let io = |p: &Path, e: std::io::Error| SignError::Io {
        path: p.to_path_buf(),
        message: e.to_string(),
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(retired)
        .map_err(|e| io(retired, e))?;
    writeln!(f, "{} retired {now}", hex::encode(old.as_bytes()))
        .and_then(|_| f.sync_all())
        .map_err(|e| io(retired, e))?;
    let mut part = key_path.as_os_str().to_owned();
    part.push(".new");
    let part = PathBuf::from(part);
    let _ = std::fs::remove_file(&part);
    let key = load_or_create_key(&part)?;
    std::fs::rename(&part, key_path).map_err(|e| io(key_path, e))?;
    Ok(key)
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

/// Checks an evidence folder against `trust`, the signer keys pinned by the
/// one who verifies (the agent's keys from `key trust`, registered at the
/// IOC). The key written inside the manifest proves nothing on its own: a
/// forger can re-hash and re-sign with a fresh key; only the pinned keys
/// decide. Names in the manifest must be plain files of the folder, and the
/// folder must be named by the manifest's event id. Returns the manifest
/// when everything matches, else every problem found.
pub fn verify(dir: &Path, trust: &Trust) -> Result<Manifest, Vec<Problem>> {
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
    match trust.signer(&manifest) {
        None => problems.push(Problem::Untrusted {
            key_id: manifest.key_id.clone(),
            public_key: manifest.public_key.clone(),
        }),
        Some(k) => match sig {
            Some(s) if k.verify(&body, &s).is_ok() => {}
            _ => problems.push(Problem::BadSignature),
        },
    }
    let folder = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().to_string()))
        .unwrap_or_default();
    if folder != manifest.event_id {
        problems.push(Problem::WrongFolder {
            folder,
            event_id: manifest.event_id.clone(),
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
                n != MANIFEST
                    && n != SIGNATURE
                    && !super::review::is_review_file(n)
                    && !manifest.files.iter().any(|f| &f.name == n)
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
        let ev = d.path().join("E1");
        std::fs::create_dir(&ev).unwrap();
        std::fs::write(ev.join("clip.mp4"), vec![7u8; 5000]).unwrap();
        std::fs::write(ev.join("overview.jpg"), vec![9u8; 3000]).unwrap();
        let m = Manifest {
            schema: MANIFEST_SCHEMA.into(),
            event_id: "E1".into(),
            agent_id: "a".into(),
            camera: "c".into(),
            place: None,
            time: "2026-11-22T00:00:00Z".into(),
            time_source: "agent_clock".into(),
            sealed_at: "2026-11-22T00:00:01Z".into(),
            files: vec![],
            clip: None,
            public_key: String::new(),
            key_id: String::new(),
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
        let ev = d.path().join("E1");
        // A forger edits the clip, re-hashes and re-signs with a fresh key:
        // the manifest then names the forger's key, and must not pass.
        std::fs::write(ev.join("clip.mp4"), vec![8u8; 5000]).unwrap();
        let forger = SigningKey::from_bytes(&[42u8; 32]);
        let mut m: Manifest =
            serde_json::from_slice(&std::fs::read(ev.join(MANIFEST)).unwrap()).unwrap();
        m.files.clear();
        seal(&ev, &["clip.mp4", "overview.jpg"], m, &forger).unwrap();
        let problems = verify(&ev, &Trust::one(key.verifying_key())).unwrap_err();
        assert!(
            matches!(&problems[..], [Problem::Untrusted { key_id: k, .. }] if *k == key_id(&forger.verifying_key())),
            "forged folder passed: {problems:?}"
        );
        // The forger's own key does verify it: the anchor is what decides.
        assert!(verify(&ev, &Trust::one(forger.verifying_key())).is_ok());
    }

    #[test]
    fn a_manifest_naming_a_path_outside_the_folder_is_refused() {
        let (d, key) = sealed();
        let ev = d.path().join("E1");
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
        let problems = verify(&ev, &Trust::one(key.verifying_key())).unwrap_err();
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
        let ev = d.path().join("E1");
        let pk = hex::encode(key.verifying_key().as_bytes());
        let trusted = Trust::one(parse_public_key(&pk).unwrap());
        assert!(verify(&ev, &trusted).is_ok());
        let other = SigningKey::from_bytes(&[1u8; 32]).verifying_key();
        let problems = verify(&ev, &Trust::one(other)).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| matches!(p, Problem::Untrusted { .. })),
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
        let trusted = Trust::one(key.verifying_key());
        let ev = d.path().join("E1");
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

    #[test]
    fn the_manifest_names_its_key_id() {
        let (d, key) = sealed();
        let m: Manifest =
            serde_json::from_slice(&std::fs::read(d.path().join("E1").join(MANIFEST)).unwrap())
                .unwrap();
        assert_eq!(m.key_id, key_id(&key.verifying_key()));
        assert_eq!(m.key_id.len(), 16);
        assert_ne!(
            key_id(&key.verifying_key()),
            key_id(&SigningKey::from_bytes(&[3u8; 32]).verifying_key())
        );
    }

    #[test]
    fn a_folder_under_another_event_id_is_refused() {
        // A genuine folder copied under another event's id must not pass as
        // the evidence of that event.
        let (d, key) = sealed();
        let other = d.path().join("E2");
        std::fs::rename(d.path().join("E1"), &other).unwrap();
        assert_eq!(
            verify(&other, &Trust::one(key.verifying_key())).unwrap_err(),
            vec![Problem::WrongFolder {
                folder: "E2".into(),
                event_id: "E1".into()
            }]
        );
    }

    #[test]
    fn a_trust_file_keeps_retired_keys_for_old_evidence() {
        let (d, old) = sealed();
        let new = SigningKey::from_bytes(&[5u8; 32]);
        let text = format!(
            "# ward-07\n{} retired 2026-11-30\n\n{}  current\n",
            hex::encode(old.verifying_key().as_bytes()),
            hex::encode(new.verifying_key().as_bytes())
        );
        let trust = Trust::parse(&text).unwrap();
        assert_eq!(trust.len(), 2);
        let m = verify(&d.path().join("E1"), &trust).unwrap();
        assert_eq!(trust.label(&m.key_id), Some("retired 2026-11-30"));
        // Only the new key: the old folder is not anchored.
        let only_new = Trust::parse(&format!(
            "{}\n",
            hex::encode(new.verifying_key().as_bytes())
        ))
        .unwrap();
        let problems = verify(&d.path().join("E1"), &only_new).unwrap_err();
        assert!(
            matches!(&problems[..], [Problem::Untrusted { key_id, .. }] if *key_id == m.key_id),
            "{problems:?}"
        );
        let bad = Trust::parse("# x\nnot-a-key\n").unwrap_err();
        assert!(bad.contains("line 2"), "{bad}");
        assert!(Trust::parse("# nothing\n").unwrap_err().contains("no key"));
    }

    #[test]
    fn a_manifest_claiming_a_trusted_key_id_but_signed_by_another_fails() {
        let (d, key) = sealed();
        let ev = d.path().join("E1");
        let forger = SigningKey::from_bytes(&[42u8; 32]);
        let mut m: Manifest =
            serde_json::from_slice(&std::fs::read(ev.join(MANIFEST)).unwrap()).unwrap();
        std::fs::write(ev.join("clip.mp4"), vec![8u8; 5000]).unwrap();
        let (bytes, sha256) = hash_file(&ev.join("clip.mp4")).unwrap();
        m.files[0] = FileEntry {
            name: "clip.mp4".into(),
            bytes,
            sha256,
        };
        // keeps the genuine key_id and public_key, signs with its own key
        let body = serde_json::to_vec_pretty(&m).unwrap();
        std::fs::write(ev.join(MANIFEST), &body).unwrap();
        std::fs::write(
            ev.join(SIGNATURE),
            hex::encode(forger.sign(&body).to_bytes()),
        )
        .unwrap();
        assert_eq!(
            verify(&ev, &Trust::one(key.verifying_key())).unwrap_err(),
            vec![Problem::BadSignature]
        );
    }

    #[test]
    fn rotation_keeps_old_evidence_verifiable() {
        let (d, old) = sealed();
        let kp = d.path().join("keys/agent.key");
        let retired = d.path().join("keys/retired.trust");
        let new = rotate(&kp, &retired, "2026-12-01T00:00:00Z").unwrap();
        assert_ne!(new.verifying_key(), old.verifying_key());
        assert_eq!(
            load_or_create_key(&kp).unwrap().verifying_key(),
            new.verifying_key()
        );
        let trust = agent_trust(Some(new.verifying_key()), &retired).unwrap();
        assert_eq!(trust.len(), 2);
        let m = verify(&d.path().join("E1"), &trust).unwrap();
        assert_eq!(trust.label(&m.key_id), Some("retired 2026-12-01T00:00:00Z"));
        // The printed trust file reads back the same keys.
        assert_eq!(Trust::parse(&trust.to_text()).unwrap().len(), 2);
        // Without the retired file the old folder is no longer anchored.
        std::fs::remove_file(&retired).unwrap();
        assert!(
            verify(
                &d.path().join("E1"),
                &agent_trust(Some(new.verifying_key()), &retired).unwrap()
            )
            .is_err()
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Any single flipped byte in any sealed file is caught and named.
        #[test]
        fn any_flipped_byte_is_caught(file in 0usize..2, pos in 0usize..3000, bit in 0u8..8) {
            let (d, key) = sealed();
            let ev = d.path().join("E1");
            let name = ["clip.mp4", "overview.jpg"][file];
            let mut b = std::fs::read(ev.join(name)).unwrap();
            b[pos] ^= 1 << bit;
            std::fs::write(ev.join(name), b).unwrap();
            proptest::prop_assert_eq!(verify(&ev, &Trust::one(key.verifying_key())).unwrap_err(), vec![Problem::Changed { file: name.into() }]);
        }
    }
}
