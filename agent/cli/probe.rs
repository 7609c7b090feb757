//! `ioc-agent probe`: what a camera sends, as the agent would see it.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// rtsp://[user:password@]host[:port]/path
    url: String,
    /// Seconds to read the stream.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Where to write the snapshot JPEG.
    #[arg(long, default_value = "probe.jpg")]
    snapshot: PathBuf,
    /// Seconds allowed for connecting.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing("warn");
    let res = super::multi_thread()?.block_on(crate::probe::probe(
        &a.url,
        a.seconds,
        std::time::Duration::from_secs_f64(a.timeout.max(0.5)),
        Some(&a.snapshot),
    ));
    match res {
        Ok(r) if a.json => {
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(ExitCode::SUCCESS)
        }
        Ok(r) => {
            print!("{r}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("probe: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
