//! `ioc-agent key`: the evidence signing key.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::evidence::sign;

#[derive(clap::Subcommand)]
pub enum KeyCmd {
    /// Print the agent's Ed25519 public key (hex) and its key id. Never
    /// creates a key: the agent creates it, as its service user, on first
    /// start. Run as that user: `sudo -u ioc-agent ioc-agent key show -c …`.
    Show {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print this agent's trust file: the current key and every retired one,
    /// one per line with a label. The IOC keeps it per agent and verifies
    /// evidence with `ioc-agent verify --trust FILE`.
    Trust {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Retire the current key and make a new one. The old public key is kept
    /// in `<data_dir>/retired-keys.trust`, so evidence it signed still
    /// verifies. Restart the agent afterwards; give the IOC the new trust file.
    Rotate {
        #[arg(long, short)]
        config: PathBuf,
    },
}

pub fn run(cmd: KeyCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCmd::Show { config } => {
            let cfg = Config::load(&config)?;
            let key = match cfg.current_public_key()? {
                Some(k) => k,
                None => sign::public_key_of(&cfg.key_path())?,
            };
            eprintln!("key id {}", sign::key_id(&key));
            println!("{}", hex::encode(key.as_bytes()));
            Ok(ExitCode::SUCCESS)
        }
        KeyCmd::Trust { config } => {
            let cfg = Config::load(&config)?;
            let trust = sign::agent_trust(cfg.current_public_key()?, &cfg.retired_keys_path())?;
            println!(
                "# evidence signing keys of agent {}",
                cfg.agent_id.get_ref()
            );
            print!("{}", trust.to_text());
            Ok(ExitCode::SUCCESS)
        }
        KeyCmd::Rotate { config } => {
            let cfg = Config::load(&config)?;
            if let Some(s) = cfg.signer_socket() {
                anyhow::bail!(
                    "this agent signs through the signer at {}; its key is the signer's, not the agent's. \
                     Rotate it where the signer keeps it: stop ioc-agent-signer, run \
                     `sudo -u ioc-signer ioc-agent signer --key /var/lib/ioc-signer/agent.key --rotate \
                     --retired /var/lib/ioc-signer/retired-keys.trust`, append that file's new line to \
                     {}, and start the signer again",
                    s.display(),
                    cfg.retired_keys_path().display()
                );
            }
            let now = crate::publish::payload::rfc3339(std::time::SystemTime::now());
            let key = sign::rotate(&cfg.key_path(), &cfg.retired_keys_path(), &now)?;
            let public = key.verifying_key();
            eprintln!(
                "new key {} in {}; the old one is kept in {} for verifying older evidence. \
                 Restart the agent (systemctl restart ioc-agent) to sign with the new key, and \
                 give the IOC the output of `ioc-agent key trust`.",
                sign::key_id(&public),
                cfg.key_path().display(),
                cfg.retired_keys_path().display()
            );
            println!("{}", hex::encode(public.as_bytes()));
            Ok(ExitCode::SUCCESS)
        }
    }
}
