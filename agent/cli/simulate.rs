//! `ioc-agent simulate`: video files served as looped live RTSP cameras.

use std::process::ExitCode;

use crate::simulate::{Clip, Simulator, parse_stream_spec};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on, HOST:PORT (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8554")]
    listen: String,
    /// NAME=FILE, served at rtsp://HOST:PORT/NAME; repeat for more cameras.
    #[arg(long = "stream", required_unless_present = "patterns")]
    streams: Vec<String>,
    /// NAME=KIND: a generated test stream; KIND `mjpeg` is a Motion-JPEG
    /// camera (for checking that probe and run refuse it clearly).
    #[arg(long = "pattern")]
    patterns: Vec<String>,
    /// Play each file this many times per client session, then end the
    /// stream, like a camera that restarts (0 = loop forever, timestamps
    /// growing across loops like a live camera).
    #[arg(long, default_value_t = 0)]
    loops: u32,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing("info");
    let mut clips = Vec::new();
    for s in &a.streams {
        let (name, file) = parse_stream_spec(s)?;
        let mut clip = Clip::load(&file)?;
        clip.loops = a.loops;
        clips.push((name, clip));
    }
    let mut pats = Vec::new();
    for p in &a.patterns {
        let (n, k) = p.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("--pattern {p}: write it as NAME=KIND, e.g. cam=mjpeg")
        })?;
        pats.push((n.to_string(), k.to_string()));
    }
    let sim = Simulator::start_with(&a.listen, &clips, &pats)?;
    let host = a
        .listen
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or("127.0.0.1");
    for (name, clip) in &clips {
        println!(
            "serving rtsp://{host}:{}/{name} ({}, {} frames, {:.1} s loop)",
            sim.port,
            clip.codec.as_str(),
            clip.frames,
            clip.duration_ns as f64 / 1e9
        );
    }
    for (name, kind) in &pats {
        println!(
            "serving rtsp://{host}:{}/{name} ({kind} test pattern)",
            sim.port
        );
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    super::current_thread()?.block_on(super::shutdown_signal());
    drop(sim);
    Ok(ExitCode::SUCCESS)
}
