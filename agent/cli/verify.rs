//! `ioc-agent verify`: an evidence folder against its signed manifest and
//! the signer's pinned key.

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
    #[arg(long, conflicts_with_all = ["key_file", "config"])]
    key: Option<String>,
    /// A file holding that public key (hex).
    #[arg(long = "key-file", conflicts_with = "config")]
    key_file: Option<PathBuf>,
    /// This box's agent config: verify against this agent's own key.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if !a.dir.is_dir() {
        anyhow::bail!(
            "{} is not a folder; give an evidence folder <evidence dir>/<event_id>",
            a.dir.display()
        );
    }
    let trusted = match (&a.key, &a.key_file, &a.config) {
        (Some(k), _, _) => sign::parse_public_key(k).map_err(anyhow::Error::msg)?,
        (_, Some(f), _) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("cannot read --key-file {}: {e}", f.display()))?;
            sign::parse_public_key(&text)
                .map_err(|e| anyhow::anyhow!("--key-file {}: {e}", f.display()))?
        }
        (_, _, Some(c)) => sign::public_key_of(&Config::load(c)?.key_path())?,
        _ => anyhow::bail!(
            "verify needs the signer's key: --key <hex> (from `ioc-agent key show` on the agent that \
             made the folder), --key-file FILE, or --config FILE for this agent's own key. The key \
             written in the manifest proves nothing: anyone can re-sign a changed folder with a fresh key"
        ),
    };
    match sign::verify(&a.dir, &trusted) {
        Ok(m) => {
            println!(
                "OK: {} — {} file(s) match the manifest signed by {}",
                a.dir.display(),
                m.files.len(),
                m.public_key
            );
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
