//! `ioc-agent watch`: alerts and status from a broker as readable lines.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Broker, mqtt://host:port.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    url: String,
    /// Topic prefix.
    #[arg(long, default_value = "ioc/v1")]
    prefix: String,
}

pub fn run(Args { url, prefix }: Args) -> anyhow::Result<ExitCode> {
    super::current_thread()?.block_on(async {
        tokio::select! {
            r = crate::publish::watch::watch(&url, &prefix) => r.map_err(anyhow::Error::msg),
            _ = super::shutdown_signal() => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
