//! `ioc-agent verify`: an evidence folder against its signed manifest.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The event's evidence folder (`<evidence dir>/<event_id>`).
    dir: PathBuf,
    /// Expected signer (hex public key from `ioc-agent key show`); default:
    /// any key, which is then printed.
    #[arg(long)]
    key: Option<String>,
}

pub fn run(Args { dir, key }: Args) -> anyhow::Result<ExitCode> {
    if !dir.is_dir() {
        anyhow::bail!(
            "{} is not a folder; give an evidence folder <evidence dir>/<event_id>",
            dir.display()
        );
    }
    match crate::evidence::sign::verify(&dir, key.as_deref()) {
        Ok(m) => {
            println!(
                "OK: {} — {} file(s) match the manifest signed by {}",
                dir.display(),
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
