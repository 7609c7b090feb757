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
                println!(
                    "      fix: correct the file named above (ioc-agent check-config FILE checks the config with the setup page's data_dir/setup.toml over it)"
                );
                return Ok(ExitCode::from(1));
            }
        },
        None => None,
    };
    if let Some(p) = &config {
        match cfg.as_ref().and_then(|c| c.setup.as_ref()) {
            Some(s) => println!(
                "PASS  config  {} with {} is valid\n      {}",
                p.display(),
                s.path.display(),
                s.summary()
            ),
            None => println!("PASS  config  {} is valid", p.display()),
        }
        for w in cfg.as_ref().map(|c| c.warnings()).unwrap_or_default() {
            println!("WARN  config  {w}");
        }
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
