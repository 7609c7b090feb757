//! The command line: one file per subcommand. `main.rs` only parses and
//! dispatches; the CLI reference in `docs/` is generated from these types.

mod bench;
mod check_config;
mod doctor;
mod fetch;
mod key;
mod loadgen;
mod models;
mod probe;
mod read_plates;
mod run;
mod schema;
mod signal;
mod signer;
mod simulate;
mod verify;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ioc-agent",
    version,
    about = "Edge video-analytics agent for city operations centers"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent with a config file.
    Run(run::Args),
    /// Validate a config file; problems are printed as file:line:column.
    CheckConfig(check_config::Args),
    /// Serve video files over RTSP as looped live cameras (for installers and tests).
    Simulate(simulate::Args),
    /// Write the JSON Schemas of the MQTT payloads (the checked-in copies live in deploy/schema).
    Schema(schema::Args),
    /// Print alerts and agent status from a broker as readable lines.
    Watch(Box<watch::Args>),
    /// Connect to a camera like the agent would and report what it sends:
    /// codec, profile, resolution, frame rate, GOP, bitrate, B-frames, quirks,
    /// the decoder this box would use; writes a snapshot JPEG.
    Probe(probe::Args),
    /// Check everything the agent needs on this box (GStreamer and decoders,
    /// ONNX Runtime and execution providers, models, data directory, broker,
    /// cameras, clock). Exit 1 when something blocks running.
    Doctor(doctor::Args),
    /// Run the real agent against N simulated cameras (loopback RTSP from a
    /// file) and, in the same run, the floor of the same work (decode into a
    /// fakesink, the model in a tight loop); report rates, skips, CPU per
    /// stream, RSS, latency and agent ÷ floor.
    Bench(bench::Args),
    /// N simulated agents with the alert mix of M cameras each, through the
    /// real publish path (outbox → MQTT), and an IOC-side consumer that
    /// de-duplicates by id: produced / delivered / duplicates / lost and
    /// publish → consumer latency.
    Loadgen(Box<loadgen::Args>),
    /// The agent's evidence signing key.
    Key {
        #[command(subcommand)]
        cmd: key::KeyCmd,
    },
    /// Hold the evidence signing key in its own process (its own user) and
    /// sign for the agent over a Unix socket (`evidence.signer_socket`).
    Signer(signer::Args),
    /// Check an evidence folder: every file against the signed manifest.
    /// Exit 0 when untouched; 1 naming each changed, missing or added file.
    Verify(verify::Args),
    /// Read licence plates in a picture (JPEG/PNG) with the configured
    /// detector and plate models, as the agent does on vehicle tracks.
    ReadPlates(read_plates::Args),
    /// Model files: fetch and verify them against their manifests.
    Models {
        #[command(subcommand)]
        cmd: models::ModelsCmd,
    },
    /// Signed traffic-controller messages: make a controller key pair, sign
    /// a state (for installers, controller gateways and tests).
    Signal {
        #[command(subcommand)]
        cmd: signal::SignalCmd,
    },
}

/// Parses the command line and runs the subcommand; errors print as
/// `error: …` and exit 2.
pub fn main() -> ExitCode {
    crate::decode::tune_allocator();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Run(a) => run::run(a),
        Cmd::CheckConfig(a) => check_config::run(a),
        Cmd::Simulate(a) => simulate::run(a),
        Cmd::Schema(a) => schema::run(a),
        Cmd::Watch(a) => watch::run(*a),
        Cmd::Probe(a) => probe::run(a),
        Cmd::Doctor(a) => doctor::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Loadgen(a) => loadgen::run(*a),
        Cmd::Key { cmd } => key::run(cmd),
        Cmd::Verify(a) => verify::run(a),
        Cmd::Signer(a) => signer::run(a),
        Cmd::ReadPlates(a) => read_plates::run(a),
        Cmd::Models { cmd } => models::run(cmd),
        Cmd::Signal { cmd } => signal::run(cmd),
    }
}

/// The clap command tree (for the generated CLI reference).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

pub(crate) fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_target(false)
        .try_init();
}

fn multi_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
