//! Command line of `ioc-agent`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ioc_agent::config::Config;
use ioc_agent::infer::pull::{self, Pulled};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "ioc-agent",
    version,
    about = "Edge video-analytics agent for city operations centers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent with a config file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file; problems are printed as file:line:column.
    CheckConfig { file: PathBuf },
    /// Serve video files over RTSP as looped live cameras (for installers and tests).
    Simulate {
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
    },
    /// Write the JSON Schemas of the MQTT payloads (the checked-in copies live in deploy/schema).
    Schema {
        /// Folder to write alert/status/stats .schema.json into.
        #[arg(long, default_value = "deploy/schema")]
        out: PathBuf,
    },
    /// Print alerts and agent status from a broker as readable lines.
    Watch {
        /// Broker, mqtt://host:port.
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        url: String,
        /// Topic prefix.
        #[arg(long, default_value = "ioc/v1")]
        prefix: String,
    },
    /// Connect to a camera like the agent would and report what it sends:
    /// codec, profile, resolution, frame rate, GOP, bitrate, B-frames, quirks,
    /// the decoder this box would use; writes a snapshot JPEG.
    Probe {
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
    },
    /// Check everything the agent needs on this box (GStreamer and decoders,
    /// ONNX Runtime and execution providers, models, data directory, broker,
    /// cameras, clock). Exit 1 when something blocks running.
    Doctor {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the real agent against N simulated cameras (loopback RTSP from a
    /// file) and, in the same run, the floor of the same work (decode into a
    /// fakesink, the model in a tight loop); report rates, skips, CPU per
    /// stream, RSS, latency and agent ÷ floor.
    Bench {
        #[arg(long, default_value_t = 4)]
        streams: usize,
        /// H.264/H.265 file served as every camera.
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        #[arg(long = "detect-fps", default_value_t = 5.0)]
        detect_fps: f64,
        #[arg(long, default_value = "yolox_nano")]
        model: String,
        #[arg(long, default_value = "models")]
        manifests: PathBuf,
        #[arg(long = "model-dir", default_value = "data/models")]
        model_dir: PathBuf,
        /// ONNX Runtime intra-op threads of the model.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Raise --streams until a stream falls below 95% of its detection rate.
        #[arg(long = "find-max")]
        find_max: bool,
        #[arg(long)]
        json: bool,
    },
    /// The agent's evidence signing key.
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Check an evidence folder: every file against the signed manifest.
    /// Exit 0 when untouched; 1 naming each changed, missing or added file.
    Verify {
        /// The event's evidence folder (`<evidence dir>/<event_id>`).
        dir: PathBuf,
        /// Expected signer (hex public key from `ioc-agent key show`); default:
        /// any key, which is then printed.
        #[arg(long)]
        key: Option<String>,
    },
    /// Read licence plates in a picture (JPEG/PNG) with the configured
    /// detector and plate models, as the agent does on vehicle tracks.
    ReadPlates {
        #[arg(long, short)]
        config: PathBuf,
        image: PathBuf,
    },
    /// Model files: fetch and verify them against their manifests.
    Models {
        #[command(subcommand)]
        cmd: ModelsCmd,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Print the agent's Ed25519 public key (hex), creating the key on first use.
    Show {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ModelsCmd {
    /// Place verified model files in the model folder.
    Pull {
        /// Take manifest_dir and model_dir from this config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Folder with manifests (default: models, or the config's manifest_dir).
        #[arg(long)]
        manifests: Option<PathBuf>,
        /// Folder to place model files in (default: data/models, or the config's model_dir).
        #[arg(long)]
        dest: Option<PathBuf>,
        /// Folder holding the model files (a local mirror or USB stick); used before the URL.
        #[arg(long)]
        mirror: Option<PathBuf>,
        /// Only these models (manifest names); default all.
        names: Vec<String>,
    },
    /// List the manifests and whether their files are in place.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        manifests: Option<PathBuf>,
        #[arg(long)]
        dest: Option<PathBuf>,
    },
}

fn init_tracing(default: &str) {
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

fn model_dirs(
    config: Option<PathBuf>,
    manifests: Option<PathBuf>,
    dest: Option<PathBuf>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cfg = match config {
        Some(p) => Some(Config::load(&p)?),
        None => None,
    };
    let m = manifests
        .or_else(|| cfg.as_ref().map(|c| c.resolve(&c.manifest_dir)))
        .unwrap_or_else(|| PathBuf::from("models"));
    let d = dest
        .or_else(|| cfg.as_ref().map(|c| c.model_dir()))
        .unwrap_or_else(|| PathBuf::from("data/models"));
    Ok((m, d))
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

fn main() -> ExitCode {
    ioc_agent::decode::tune_allocator();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::CheckConfig { file } => match Config::load(&file) {
            Ok(cfg) => {
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
        },
        Cmd::Run { config } => {
            let cfg = Config::load(&config)?;
            init_tracing(&cfg.log);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let cancel = CancellationToken::new();
                let c = cancel.clone();
                tokio::spawn(async move {
                    shutdown_signal().await;
                    c.cancel();
                });
                // SIGHUP re-reads the config and applies camera changes live.
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                #[cfg(unix)]
                if let Ok(mut hup) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                {
                    tokio::spawn(async move {
                        while hup.recv().await.is_some() {
                            tracing::info!("SIGHUP: reloading the config");
                            let _ = tx.send(()).await;
                        }
                    });
                }
                ioc_agent::run::run_with_reload(cfg, Some(config), cancel, Some(rx)).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Simulate {
            listen,
            streams,
            patterns,
            loops,
        } => {
            init_tracing("info");
            let mut clips = Vec::new();
            for s in &streams {
                let (name, file) = ioc_agent::simulate::parse_stream_spec(s)?;
                let mut clip = ioc_agent::simulate::Clip::load(&file)?;
                clip.loops = loops;
                clips.push((name, clip));
            }
            let mut pats = Vec::new();
            for p in &patterns {
                let (n, k) = p.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("--pattern {p}: write it as NAME=KIND, e.g. cam=mjpeg")
                })?;
                pats.push((n.to_string(), k.to_string()));
            }
            let sim = ioc_agent::simulate::Simulator::start_with(&listen, &clips, &pats)?;
            let host = listen
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
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(shutdown_signal());
            drop(sim);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Schema { out } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for (name, text) in ioc_agent::publish::payload::schemas() {
                let p = out.join(name);
                std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
                println!("wrote {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Watch { url, prefix } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                tokio::select! {
                    r = ioc_agent::publish::watch::watch(&url, &prefix) => r.map_err(anyhow::Error::msg),
                    _ = shutdown_signal() => Ok(()),
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Probe {
            url,
            seconds,
            snapshot,
            timeout,
            json,
        } => {
            init_tracing("warn");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let res = rt.block_on(ioc_agent::probe::probe(
                &url,
                seconds,
                std::time::Duration::from_secs_f64(timeout.max(0.5)),
                Some(&snapshot),
            ));
            match res {
                Ok(r) if json => {
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
        Cmd::Doctor { config } => {
            init_tracing("error");
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
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let checks = rt.block_on(ioc_agent::doctor::run(cfg.as_ref()));
            let (table, failed) = ioc_agent::doctor::render(&checks);
            print!("{table}");
            if failed {
                println!("doctor: something above blocks running; fix the FAIL lines");
                Ok(ExitCode::from(1))
            } else {
                println!("doctor: ready to run");
                Ok(ExitCode::SUCCESS)
            }
        }
        Cmd::Bench {
            streams,
            file,
            seconds,
            detect_fps,
            model,
            manifests,
            model_dir,
            threads,
            find_max,
            json,
        } => {
            init_tracing("error");
            if !file.exists() {
                anyhow::bail!(
                    "{}: no such file; give an H.264/H.265 MP4/MKV/TS with --file",
                    file.display()
                );
            }
            let args = ioc_agent::bench::BenchArgs {
                streams: streams.max(1),
                file,
                seconds: seconds.max(5.0),
                detect_fps,
                model,
                manifests,
                model_dir,
                onnxruntime: None,
                threads: threads.max(1),
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let mut results = Vec::new();
            let mut n = args.streams;
            loop {
                let r = rt
                    .block_on(ioc_agent::bench::run_once(&args, n))
                    .map_err(anyhow::Error::msg)?;
                if !json {
                    println!("{r}");
                }
                let ok = r.sustained;
                results.push(r);
                if !find_max || !ok {
                    break;
                }
                n += 1;
            }
            if find_max {
                let best = results
                    .iter()
                    .filter(|r| r.sustained)
                    .map(|r| r.streams)
                    .max();
                if !json {
                    match best {
                        Some(b) => println!(
                            "find-max: {b} stream(s) sustained at ≥ 95% of {detect_fps} detections/s"
                        ),
                        None => println!("find-max: not even {} stream(s) sustained", args.streams),
                    }
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Key {
            cmd: KeyCmd::Show { config },
        } => {
            let cfg = Config::load(&config)?;
            let path = cfg.key_path();
            let existed = path.exists();
            let key = ioc_agent::evidence::sign::load_or_create_key(&path)?;
            if !existed {
                eprintln!("created a new key at {} (0600)", path.display());
            }
            println!("{}", hex::encode(key.verifying_key().as_bytes()));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Verify { dir, key } => {
            if !dir.is_dir() {
                anyhow::bail!(
                    "{} is not a folder; give an evidence folder <evidence dir>/<event_id>",
                    dir.display()
                );
            }
            match ioc_agent::evidence::sign::verify(&dir, key.as_deref()) {
                Ok(m) => {
                    println!(
                        "OK: {} — {} file(s) match the manifest signed by {}",
                        dir.display(),
                        m.files.len(),
                        m.public_key
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(problems) => {
                    for p in &problems {
                        println!("FAILED: {p}");
                    }
                    Ok(ExitCode::from(1))
                }
            }
        }
        Cmd::ReadPlates { config, image } => {
            let cfg = Config::load(&config)?;
            init_tracing("warn");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let readings = rt
                .block_on(ioc_agent::evidence::plates::read_image(&cfg, &image))
                .map_err(anyhow::Error::msg)?;
            if readings.is_empty() {
                println!("no plate found");
                return Ok(ExitCode::from(1));
            }
            for (vehicle, r) in readings {
                println!(
                    "plate text={} raw={:?} confidence={:.3} valid={} two_rows={} box=[{:.0},{:.0},{:.0},{:.0}] detector={:.2} vehicle={vehicle}",
                    r.plate.text,
                    r.raw,
                    r.plate.confidence,
                    r.plate.valid,
                    r.plate.two_rows,
                    r.bbox[0],
                    r.bbox[1],
                    r.bbox[2],
                    r.bbox[3],
                    r.detector_score
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Models { cmd } => match cmd {
            ModelsCmd::Pull {
                config,
                manifests,
                dest,
                mirror,
                names,
            } => {
                let (mdir, dest) = model_dirs(config, manifests, dest)?;
                let all = pull::manifests_in(&mdir)?;
                let mut failed = 0;
                for m in all
                    .iter()
                    .filter(|m| names.is_empty() || names.contains(&m.name))
                {
                    match pull::pull(m, &dest, mirror.as_deref()) {
                        Ok(Pulled::AlreadyPresent) => {
                            println!("{}: verified, already in {}", m.name, dest.display())
                        }
                        Ok(Pulled::FromMirror(p)) => {
                            println!("{}: copied from {} and verified", m.name, p.display())
                        }
                        Ok(Pulled::Downloaded(u)) => {
                            println!("{}: downloaded from {u} and verified", m.name)
                        }
                        Err(e) => {
                            eprintln!("{}: {e}", m.name);
                            failed += 1;
                        }
                    }
                }
                for n in &names {
                    if !all.iter().any(|m| &m.name == n) {
                        eprintln!("{n}: no manifest {}/{n}.toml", mdir.display());
                        failed += 1;
                    }
                }
                Ok(if failed == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            ModelsCmd::List {
                config,
                manifests,
                dest,
            } => {
                let (mdir, dest) = model_dirs(config, manifests, dest)?;
                for m in pull::manifests_in(&mdir).context("listing manifests")? {
                    let path = dest.join(&m.file);
                    let state = match ioc_agent::infer::verify_model_file(&m, &path) {
                        Ok(()) => "ok".to_string(),
                        Err(e) => format!("{e}"),
                    };
                    println!(
                        "{:<16} {:<8} {:<10} {}  [{}]",
                        m.name,
                        m.output.kind(),
                        m.license,
                        path.display(),
                        state
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}
