//! `ioc-agent run`: the agent itself, with live reload on SIGHUP.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short)]
    config: PathBuf,
}

pub fn run(Args { config }: Args) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&config)?;
    super::init_tracing(&cfg.log);
    let rt = super::multi_thread()?;
    rt.block_on(async move {
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            super::shutdown_signal().await;
            c.cancel();
        });
        // SIGHUP re-reads the config and applies camera changes live.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        #[cfg(unix)]
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the config");
                    let _ = tx.send(()).await;
                }
            });
        }
        crate::run::run_with_reload(cfg, Some(config), cancel, Some(rx)).await
    })?;
    Ok(ExitCode::SUCCESS)
}
