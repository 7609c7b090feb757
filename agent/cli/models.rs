//! `ioc-agent models`: model files, fetched and verified against manifests.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;
use crate::infer::pull::{self, Pulled};

#[derive(clap::Subcommand)]
pub enum ModelsCmd {
    /// Place verified model files in the model folder.
    Pull {
        /// Take manifest_dir and model_dir from this config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Folder with manifests (default: models, or the config's manifest_dir).
        #[arg(long)]
        manifests: Option<PathBuf>,
        /// Folder to place model files in (default: data/models, or the config's model_dir).
        #[arg(long)]
        dest: Option<PathBuf>,
        /// Folder holding the model files (a local mirror or USB stick); used before the URL.
        #[arg(long)]
        mirror: Option<PathBuf>,
        /// Only these models (manifest names); default all.
        names: Vec<String>,
    },
    /// List the manifests and whether their files are in place.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        manifests: Option<PathBuf>,
        #[arg(long)]
        dest: Option<PathBuf>,
    },
}

pub fn run(cmd: ModelsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelsCmd::Pull {
            config,
            manifests,
            dest,
            mirror,
            names,
        } => {
            let (mdir, dest) = model_dirs(config, manifests, dest)?;
            pull_all(&mdir, &dest, mirror.as_deref(), &names)
        }
        ModelsCmd::List {
            config,
            manifests,
            dest,
        } => {
            let (mdir, dest) = model_dirs(config, manifests, dest)?;
            for m in pull::manifests_in(&mdir).context("listing manifests")? {
                let path = dest.join(&m.file);
                let state = match crate::infer::verify_model_file(&m, &path) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("{e}"),
                };
                println!(
                    "{:<16} {:<8} {:<10} {}  [{}]",
                    m.name,
                    m.output.kind(),
                    m.license,
                    path.display(),
                    state
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn pull_all(
    mdir: &std::path::Path,
    dest: &std::path::Path,
    mirror: Option<&std::path::Path>,
    names: &[String],
) -> anyhow::Result<ExitCode> {
    let all = pull::manifests_in(mdir)?;
    let mut failed = 0;
    for m in all
        .iter()
        .filter(|m| names.is_empty() || names.contains(&m.name))
    {
        match pull::pull(m, dest, mirror) {
            Ok(Pulled::AlreadyPresent) => {
                println!("{}: verified, already in {}", m.name, dest.display())
            }
            Ok(Pulled::FromMirror(p)) => {
                println!("{}: copied from {} and verified", m.name, p.display())
            }
            Ok(Pulled::Downloaded(u)) => {
                println!("{}: downloaded from {u} and verified", m.name)
            }
            Err(e) => {
                eprintln!("{}: {e}", m.name);
                failed += 1;
            }
        }
    }
    for n in names {
        if !all.iter().any(|m| &m.name == n) {
            eprintln!("{n}: no manifest {}/{n}.toml", mdir.display());
            failed += 1;
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn model_dirs(
    config: Option<PathBuf>,
    manifests: Option<PathBuf>,
    dest: Option<PathBuf>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cfg = match config {
        Some(p) => Some(Config::load(&p)?),
        None => None,
    };
    let m = manifests
        .or_else(|| cfg.as_ref().map(|c| c.resolve(&c.manifest_dir)))
        .unwrap_or_else(|| PathBuf::from("models"));
    let d = dest
        .or_else(|| cfg.as_ref().map(|c| c.model_dir()))
        .unwrap_or_else(|| PathBuf::from("data/models"));
    Ok((m, d))
}
