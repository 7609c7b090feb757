//! `ioc-agent signal`: signed traffic-controller messages, for installers,
//! controller gateways and tests (the format: `rules::controller`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::rules::Light;
use crate::rules::controller::{self, SigningKey};

#[derive(clap::Subcommand)]
pub enum SignalCmd {
    /// Make a controller key pair: the private key goes to --out (hex, 0600;
    /// it stays with the controller or its gateway), the public key is
    /// printed for `[cameras.signal] controller_key`.
    Keygen {
        /// File for the private key; not overwritten if it exists.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a signed controller message stating STATE on --topic now, e.g.
    /// for `mosquitto_pub -t TOPIC -m "$(ioc-agent signal sign ...)"`.
    Sign {
        /// The controller's private key file (from `signal keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The MQTT topic the message is for (it is signed, so it only
        /// counts on that topic).
        #[arg(long)]
        topic: String,
        /// The controller's name, reported in the message.
        #[arg(long)]
        controller: String,
        /// `red`, `yellow`, `green` or `unknown`.
        state: String,
        /// The time stated, RFC 3339. Default: now.
        #[arg(long)]
        ts: Option<String>,
    },
}

pub fn run(cmd: SignalCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        SignalCmd::Keygen { out } => {
            let mut secret = [0u8; 32];
            rand::fill(&mut secret);
            let key = SigningKey::from_bytes(&secret);
            write_private(&out, &hex::encode(key.to_bytes()))?;
            eprintln!(
                "wrote the controller's private key to {} (0600); give the controller (or its gateway) this file, and the agent this public key:",
                out.display()
            );
            println!("{}", hex::encode(key.verifying_key().as_bytes()));
            Ok(ExitCode::SUCCESS)
        }
        SignalCmd::Sign {
            key,
            topic,
            controller: name,
            state,
            ts,
        } => {
            let key = read_private(&key)?;
            let light = Light::from_word(&state).ok_or_else(|| {
                anyhow::anyhow!("state '{state}' is not one of red, yellow, green, unknown")
            })?;
            let ts = match ts {
                Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "--ts '{t}' is not an RFC 3339 time ({e}); write it as 2026-03-01T08:00:00Z"
                        )
                    })?
                    .with_timezone(&chrono::Utc),
                None => chrono::Utc::now(),
            };
            let msg =
                controller::sign(&key, &topic, &name, light, ts).map_err(anyhow::Error::msg)?;
            println!("{msg}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write_private(path: &Path, hex_key: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create {}: {e} — give a new file (an existing key is never overwritten)",
                path.display()
            )
        })?;
    writeln!(f, "{hex_key}")
        .and_then(|_| f.sync_all())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

fn read_private(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the controller key {}: {e} — make one with `ioc-agent signal keygen --out FILE`",
            path.display()
        )
    })?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} is not a controller private key (64 hex digits, as `ioc-agent signal keygen` writes it)",
                path.display()
            )
        })?;
    Ok(SigningKey::from_bytes(&bytes))
}
