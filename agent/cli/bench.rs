//! `ioc-agent bench`: the real agent against N simulated cameras, beside the
//! floor of the same work.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
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
    /// Frames unchanged since the model last saw the camera skip the model
    /// (`skip_quiet_frames = true`).
    #[arg(long = "skip-quiet")]
    skip_quiet: bool,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing("error");
    if !a.file.exists() {
        anyhow::bail!(
            "{}: no such file; give an H.264/H.265 MP4/MKV/TS with --file",
            a.file.display()
        );
    }
    let (find_max, json, detect_fps) = (a.find_max, a.json, a.detect_fps);
    let args = crate::bench::BenchArgs {
        streams: a.streams.max(1),
        file: a.file,
        seconds: a.seconds.max(5.0),
        detect_fps,
        model: a.model,
        manifests: a.manifests,
        model_dir: a.model_dir,
        onnxruntime: None,
        threads: a.threads.max(1),
        skip_quiet: a.skip_quiet,
    };
    let rt = super::multi_thread()?;
    let mut results = Vec::new();
    let mut n = args.streams;
    loop {
        let r = rt
            .block_on(crate::bench::run_once(&args, n))
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
    if find_max && !json {
        let best = results
            .iter()
            .filter(|r| r.sustained)
            .map(|r| r.streams)
            .max();
        match best {
            Some(b) => {
                println!("find-max: {b} stream(s) sustained at ≥ 95% of {detect_fps} detections/s")
            }
            None => println!("find-max: not even {} stream(s) sustained", args.streams),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(ExitCode::SUCCESS)
}
