//! `ioc-agent check-config`: validate a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    file: PathBuf,
}

pub fn run(Args { file }: Args) -> anyhow::Result<ExitCode> {
    match Config::load(&file) {
        Ok(cfg) => {
            for w in cfg.warnings() {
                eprintln!("warning: {w}");
            }
            if let Some(s) = &cfg.setup {
                println!("{}", s.summary());
            }
            println!(
                "{}: OK ({} camera(s), {} model(s))",
                file.display(),
                cfg.cameras.len(),
                cfg.models.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}
