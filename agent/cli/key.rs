//! `ioc-agent key`: the evidence signing key.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum KeyCmd {
    /// Print the agent's Ed25519 public key (hex), creating the key on first use.
    Show {
        #[arg(long, short)]
        config: PathBuf,
    },
}

pub fn run(cmd: KeyCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCmd::Show { config } => {
            let cfg = Config::load(&config)?;
            let path = cfg.key_path();
            let existed = path.exists();
            let key = crate::evidence::sign::load_or_create_key(&path)?;
            if !existed {
                eprintln!("created a new key at {} (0600)", path.display());
            }
            println!("{}", hex::encode(key.verifying_key().as_bytes()));
            Ok(ExitCode::SUCCESS)
        }
    }
}
