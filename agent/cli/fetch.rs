//! `watch --fetch-from`: the IOC's side of evidence. For each evidence update
//! on the broker, download the folder's files from the ward agent's HTTP
//! server (a `viewer` token: it may list and read evidence, nothing else),
//! keep them in `--into`, and check the folder against the ward's pinned
//! keys (`--trust`), as `ioc-agent verify --trust` does.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::evidence::sign;

/// Largest file taken from a ward (a clip segment, a picture): 256 MiB.
const MAX_FILE_BYTES: u64 = 256 << 20;

pub struct Fetcher {
    base: String,
    token: String,
    trust: sign::Trust,
    into: PathBuf,
    agent: ureq::Agent,
}

/// A file name a folder may hold: plain, no path, no dot-file.
fn plain(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Fetcher {
    pub fn new(
        base: &str,
        token_file: &Path,
        trust_file: &Path,
        ca_file: Option<&Path>,
        into: &Path,
    ) -> anyhow::Result<Fetcher> {
        let url = url::Url::parse(base).with_context(|| {
            format!("--fetch-from {base}: not a URL; write it as https://ward-host:8443")
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            anyhow::bail!("--fetch-from {base}: give the ward agent's http(s)://host:port");
        }
        let token = std::fs::read_to_string(token_file)
            .with_context(|| format!("cannot read --token-file {}", token_file.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        if token.is_empty() {
            anyhow::bail!(
                "--token-file {} is empty: put the ward's viewer token on its first line",
                token_file.display()
            );
        }
        let text = std::fs::read_to_string(trust_file)
            .with_context(|| format!("cannot read --trust {}", trust_file.display()))?;
        let trust = sign::Trust::parse(&text)
            .map_err(|e| anyhow::anyhow!("--trust {}: {e}", trust_file.display()))?;
        let mut b = ureq::AgentBuilder::new().timeout(std::time::Duration::from_secs(60));
        if let Some(ca) = ca_file {
            b = b.tls_config(Arc::new(client_tls(ca)?));
        }
        std::fs::create_dir_all(into)
            .with_context(|| format!("cannot create --into {}", into.display()))?;
        Ok(Fetcher {
            base: base.trim_end_matches('/').to_string(),
            token,
            trust,
            into: into.to_path_buf(),
            agent: b.build(),
        })
    }

    fn get(&self, path: &str, dest: &Path) -> Result<(), String> {
        let url = format!("{}{path}", self.base);
        let r = self
            .agent
            .get(&url)
            .set("Authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| match e {
                ureq::Error::Status(401, _) => {
                    format!("{path}: 401 — the token is not one of the ward's [[http.users]]")
                }
                ureq::Error::Status(403, _) => {
                    format!("{path}: 403 — the token's role may not read evidence (use a viewer)")
                }
                ureq::Error::Status(c, _) => format!("{path}: HTTP {c}"),
                ureq::Error::Transport(t) => format!("{path}: {t}"),
            })?;
        let mut body = Vec::new();
        r.into_reader()
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("{path}: {e}"))?;
        if body.len() as u64 > MAX_FILE_BYTES {
            return Err(format!("{path}: larger than {MAX_FILE_BYTES} bytes"));
        }
        sign::write_atomic(dest, &body).map_err(|e| format!("{}: {e}", dest.display()))
    }

    /// One line: the folder fetched and verified, or what is wrong.
    pub fn check(&self, update: &serde_json::Value) -> String {
        let id = update["event_id"].as_str().unwrap_or("");
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return format!("  FETCH FAILED: event id {id:?} is not a folder name");
        }
        let ev = &update["evidence"];
        let url_path = ev["url_path"].as_str().unwrap_or("");
        if url_path != format!("/evidence/{id}/") {
            return format!("  FETCH FAILED: url_path {url_path:?} is not this event's folder");
        }
        let mut names: Vec<String> = ev["files"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.push(sign::MANIFEST.into());
        names.push(sign::SIGNATURE.into());
        if let Some(bad) = names.iter().find(|n| !plain(n)) {
            return format!("  FETCH FAILED: file name {bad:?} is not a plain name");
        }
        // Fetched into a hidden folder and put in place only when it is
        // whole and verified: whoever reads --into (an archive, a review
        // tool) never sees half a folder.
        let folder = self.into.join(id);
        // Named by the event (the manifest's check wants that), in a hidden
        // folder beside the finished ones (same file system: one rename).
        let part = self.into.join(".partial").join(id);
        let _ = std::fs::remove_dir_all(&part);
        if let Err(e) = std::fs::create_dir_all(&part) {
            return format!("  FETCH FAILED: {}: {e}", part.display());
        }
        let mut bytes = 0u64;
        for n in &names {
            if let Err(e) = self.get(&format!("{url_path}{n}"), &part.join(n)) {
                let _ = std::fs::remove_dir_all(&part);
                return format!("  FETCH FAILED: {e}");
            }
            bytes += std::fs::metadata(part.join(n))
                .map(|m| m.len())
                .unwrap_or(0);
        }
        // What fails the check is kept apart, as fetched, for whoever looks
        // into it.
        let settle = |to: &Path| -> Result<(), String> {
            let _ = std::fs::remove_dir_all(to);
            std::fs::rename(&part, to).map_err(|e| {
                let _ = std::fs::remove_dir_all(&part);
                format!("  FETCH FAILED: {} → {}: {e}", part.display(), to.display())
            })
        };
        let unverified = self.into.join(format!("{id}.unverified"));
        // The manifest fetched is the one the update announced.
        let announced = ev["manifest_sha256"].as_str().unwrap_or("");
        match sign::hash_file(&part.join(sign::MANIFEST)) {
            Ok((_, sha)) if sha == announced => {}
            Ok((_, sha)) => {
                if let Err(e) = settle(&unverified) {
                    return e;
                }
                return format!(
                    "  VERIFY FAILED {}: manifest.json sha256 {sha} is not the {announced} the update announced",
                    unverified.display()
                );
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&part);
                return format!("  FETCH FAILED: manifest.json: {e}");
            }
        }
        match crate::evidence::verify_folder(&part, &self.trust) {
            Ok((m, _)) => {
                if let Err(e) = settle(&folder) {
                    return e;
                }
                format!(
                    "  FETCHED AND VERIFIED {} file(s), {bytes} bytes, signed by key {} ({})",
                    m.files.len(),
                    super::watch::signer(&m),
                    folder.display()
                )
            }
            Err(problems) => match settle(&unverified) {
                Ok(()) => super::watch::verify_failed(&unverified, &problems),
                Err(e) => e,
            },
        }
    }
}

/// A TLS client trusting the CA(s) in `ca` (the ward's HTTPS certificate).
fn client_tls(ca: &Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read --http-ca {}", ca.display()))?
    {
        roots
            .add(c.with_context(|| format!("--http-ca {}", ca.display()))?)
            .with_context(|| format!("--http-ca {}", ca.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("--http-ca {} holds no certificate", ca.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
