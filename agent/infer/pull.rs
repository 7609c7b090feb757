//! `ioc-agent models pull`: place verified model files in the model cache,
//! from a mirror folder (a USB stick at an air-gapped site) or from the
//! manifest's URL. A file is written under a temporary name, verified, then
//! renamed, so a half download never sits under the final name.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::manifest::Manifest;
use super::sha256_file;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Manifest(#[from] super::manifest::ManifestError),
    #[error("cannot write to model folder {dir}: {err} — check the path and its permissions")]
    Dest { dir: PathBuf, err: std::io::Error },
    #[error("cannot copy {from}: {err}")]
    Copy { from: PathBuf, err: std::io::Error },
    #[error(
        "{file}: sha256 {actual} does not match the manifest's {expected} (from {origin}) — the file is corrupt or a different version"
    )]
    Checksum {
        file: PathBuf,
        origin: String,
        actual: String,
        expected: String,
    },
    #[error(
        "cannot download {url}: {reason} — without internet, use --mirror DIR with a folder holding {file}"
    )]
    Download {
        url: String,
        file: String,
        reason: String,
    },
    #[error("no manifests found in {0}")]
    NoManifests(PathBuf),
}

/// What happened to one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pulled {
    AlreadyPresent,
    FromMirror(PathBuf),
    Downloaded(String),
}

/// All manifests in a folder, sorted by name.
pub fn manifests_in(dir: &Path) -> Result<Vec<Manifest>, PullError> {
    let rd = std::fs::read_dir(dir).map_err(|err| {
        PullError::Manifest(super::manifest::ManifestError::Read {
            path: dir.to_path_buf(),
            err,
        })
    })?;
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(PullError::NoManifests(dir.to_path_buf()));
    }
    paths
        .iter()
        .map(|p| Manifest::load(p).map_err(PullError::from))
        .collect()
}

/// Makes `<dest>/<file>` a verified copy of the manifest's model.
pub fn pull(m: &Manifest, dest: &Path, mirror: Option<&Path>) -> Result<Pulled, PullError> {
    std::fs::create_dir_all(dest).map_err(|err| PullError::Dest {
        dir: dest.to_path_buf(),
        err,
    })?;
    let target = dest.join(&m.file);
    if target.exists() && sha256_file(&target).is_ok_and(|s| s.eq_ignore_ascii_case(&m.sha256)) {
        return Ok(Pulled::AlreadyPresent);
    }
    let tmp = dest.join(format!(".{}.partial", m.file));
    let dest_err = |err| PullError::Dest {
        dir: dest.to_path_buf(),
        err,
    };
    let (origin, pulled) = match mirror.map(|d| d.join(&m.file)).filter(|p| p.exists()) {
        Some(src) => {
            std::fs::copy(&src, &tmp).map_err(|err| PullError::Copy {
                from: src.clone(),
                err,
            })?;
            (src.display().to_string(), Pulled::FromMirror(src))
        }
        None => {
            download(&m.url, &tmp).map_err(|reason| {
                let _ = std::fs::remove_file(&tmp);
                PullError::Download {
                    url: m.url.clone(),
                    file: m.file.clone(),
                    reason,
                }
            })?;
            (m.url.clone(), Pulled::Downloaded(m.url.clone()))
        }
    };
    let actual = sha256_file(&tmp).map_err(dest_err)?;
    if !actual.eq_ignore_ascii_case(&m.sha256) {
        let _ = std::fs::remove_file(&tmp);
        let file = match &pulled {
            Pulled::FromMirror(p) => p.clone(),
            _ => PathBuf::from(&m.file),
        };
        return Err(PullError::Checksum {
            file,
            origin,
            actual,
            expected: m.sha256.clone(),
        });
    }
    std::fs::rename(&tmp, &target).map_err(dest_err)?;
    Ok(pulled)
}

fn download(url: &str, to: &Path) -> Result<(), String> {
    let resp = ureq::get(url)
        .timeout(std::time::Duration::from_secs(120))
        .call()
        .map_err(|e| e.to_string())?;
    let mut reader = resp.into_reader().take(2 << 30);
    let mut f = std::fs::File::create(to).map_err(|e| e.to_string())?;
    std::io::copy(&mut reader, &mut f).map_err(|e| e.to_string())?;
    f.flush().map_err(|e| e.to_string())?;
    f.sync_all().map_err(|e| e.to_string())
}
