//! `ioc-agent signer`: hold the evidence signing key in a process of its
//! own and sign for the agent over a Unix socket (`evidence.signer_socket`).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::evidence::{sign, signer};

#[derive(clap::Args)]
pub struct Args {
    /// The signing key (hex, 0600), created on first start. In the shipped
    /// unit `/var/lib/ioc-signer/agent.key`, owned by the `ioc-signer` user.
    #[arg(long)]
    key: PathBuf,
    /// The socket to serve on (mode 0660; its group may ask for signatures).
    #[arg(long, required_unless_present = "rotate")]
    socket: Option<PathBuf>,
    /// Instead of serving: retire the key and make a new one. The old public
    /// key is appended to `--retired`; copy that line into the agent's
    /// `<data_dir>/retired-keys.trust` so `verify --config` still trusts it.
    #[arg(long, requires = "retired")]
    rotate: bool,
    #[arg(long)]
    retired: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.rotate {
        let retired = a.retired.unwrap_or_default();
        let now = crate::publish::payload::rfc3339(std::time::SystemTime::now());
        let key = sign::rotate(&a.key, &retired, &now)?;
        eprintln!(
            "new key {}; the old public key was appended to {}. Restart the signer.",
            sign::key_id(&key.verifying_key()),
            retired.display()
        );
        println!("{}", hex::encode(key.verifying_key().as_bytes()));
        return Ok(ExitCode::SUCCESS);
    }
    super::init_tracing("info");
    let key = sign::load_or_create_key(&a.key)?;
    // Memory of this process is not readable by other processes of the same
    // user (no ptrace, no core dump).
    // SAFETY: prctl with PR_SET_DUMPABLE only changes this process's flag.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let socket = a.socket.unwrap_or_default();
    signer::serve(key, &socket).map_err(|e| {
        anyhow::anyhow!(
            "cannot serve on {}: {e} — is its folder there and writable by this user (RuntimeDirectory=ioc-signer)?",
            socket.display()
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
