//! `ioc-agent doctor`: everything the agent needs on this box, checked.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short)]
    config: Option<PathBuf>,
}

pub fn run(Args { config }: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing("error");
    let cfg = match &config {
        Some(p) => match Config::load(p) {
            Ok(c) => Some(c),
            Err(e) => {
                println!("FAIL  config  {e}");
                println!("      fix: correct the config (ioc-agent check-config FILE)");
                return Ok(ExitCode::from(1));
            }
        },
        None => None,
    };
    if let Some(p) = &config {
        println!("PASS  config  {} is valid", p.display());
    }
    let checks = super::multi_thread()?.block_on(crate::doctor::run(cfg.as_ref()));
    let (table, failed) = crate::doctor::render(&checks);
    print!("{table}");
    if failed {
        println!("doctor: something above blocks running; fix the FAIL lines");
        Ok(ExitCode::from(1))
    } else {
        println!("doctor: ready to run");
        Ok(ExitCode::SUCCESS)
    }
}
