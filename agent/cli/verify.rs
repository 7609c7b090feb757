//! `ioc-agent verify`: an evidence folder against its signed manifest and
//! the signer's pinned keys.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::evidence::sign;

#[derive(clap::Args)]
pub struct Args {
    /// The event's evidence folder (`<evidence dir>/<event_id>`).
    dir: PathBuf,
    /// The signer's public key (hex, as `ioc-agent key show` prints it on
    /// the agent that made the folder; the IOC keeps one per agent).
    #[arg(long, conflicts_with_all = ["trust", "config"])]
    key: Option<String>,
    /// A trust file: the agent's current and retired public keys, one per
    /// line (`ioc-agent key trust` prints it; a file holding one hex key
    /// works too).
    #[arg(long, visible_alias = "key-file", conflicts_with = "config")]
    trust: Option<PathBuf>,
    /// This box's agent config: verify against this agent's own keys
    /// (current and retired).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// Exit codes: 0 verified, 1 failed, 2 unverified (no trust anchor given).
pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if !a.dir.is_dir() {
        anyhow::bail!(
            "{} is not a folder; give an evidence folder <evidence dir>/<event_id>",
            a.dir.display()
        );
    }
    let trust = match (&a.key, &a.trust, &a.config) {
        (Some(k), _, _) => sign::Trust::one(sign::parse_public_key(k).map_err(anyhow::Error::msg)?),
        (_, Some(f), _) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("cannot read --trust {}: {e}", f.display()))?;
            sign::Trust::parse(&text)
                .map_err(|e| anyhow::anyhow!("--trust {}: {e}", f.display()))?
        }
        (_, _, Some(c)) => {
            let cfg = Config::load(c)?;
            sign::agent_trust(cfg.current_public_key()?, &cfg.retired_keys_path())?
        }
        _ => {
            println!(
                "UNVERIFIED: {} — no trusted key given. Pass --key <hex> (from `ioc-agent key show` \
                 on the agent that made the folder), --trust FILE (from `ioc-agent key trust`), or \
                 --config FILE for this agent's own keys. The key written in the manifest proves \
                 nothing: anyone can re-sign a changed folder with a fresh key.",
                a.dir.display()
            );
            return Ok(ExitCode::from(2));
        }
    };
    match crate::evidence::verify_folder(&a.dir, &trust) {
        Ok((m, reviews)) => {
            let label = match trust.label(&m.key_id) {
                Some("") | None => String::new(),
                Some(l) => format!(" ({l})"),
            };
            println!(
                "OK: {} — event {}, {} file(s) match the manifest signed by key {}{label}",
                a.dir.display(),
                m.event_id,
                m.files.len(),
                if m.key_id.is_empty() {
                    &m.public_key
                } else {
                    &m.key_id
                },
            );
            // What the signature vouches for, as an officer reads it.
            let place = m
                .place
                .as_ref()
                .map(|p| p.line())
                .unwrap_or_else(|| "not set".into());
            println!("  camera {} at {place}, time {}", m.camera, m.time);
            for r in &reviews {
                println!(
                    "  review {}: {} by {} ({}) at {}, signed",
                    r.seq, r.status, r.reviewer, r.role, r.at
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            for p in &problems {
                println!("FAILED: {p}");
            }
            Ok(ExitCode::from(1))
        }
    }
}
