//! `ioc-agent schema`: write the JSON Schemas of the MQTT payloads.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Folder to write alert/status/stats .schema.json into.
    #[arg(long, default_value = "deploy/schema")]
    out: PathBuf,
}

pub fn run(Args { out }: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for (name, text) in crate::publish::payload::schemas() {
        let p = out.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        println!("wrote {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
