//! `ioc-agent bench`: the real agent against N simulated RTSP cameras served
//! from a file over loopback, and, in the same run, the floor of the same
//! work — the same decode into a fakesink and the same model in a tight loop.
//! Reports per-stream detection rate, skips by reason, CPU seconds per
//! stream-second, RSS, frame-to-decision latency and the ratio agent ÷ floor.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;

#[derive(Debug, Clone)]
pub struct BenchArgs {
    pub streams: usize,
    pub file: PathBuf,
    pub seconds: f64,
    pub detect_fps: f64,
    pub model: String,
    pub manifests: PathBuf,
    pub model_dir: PathBuf,
    pub onnxruntime: Option<PathBuf>,
    pub threads: usize,
    /// `skip_quiet_frames` of every camera.
    pub skip_quiet: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamResult {
    pub camera: String,
    /// Frames analysed per second: seen by the model, or quiet (the model's
    /// last answer stood for them).
    pub detect_fps: f64,
    /// Frames the model saw per second.
    pub inferred_fps: f64,
    pub skipped_quiet: f64,
    pub skipped_rate: f64,
    pub skipped_busy: f64,
    pub skipped_backlog: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub streams: usize,
    pub seconds: f64,
    pub target_fps: f64,
    pub per_stream: Vec<StreamResult>,
    /// Agent CPU seconds per stream-second.
    pub cpu_per_stream: f64,
    /// Floor: decode CPU + model CPU per stream-second. Decode: the same N
    /// RTSP streams received and decoded in real time into fakesinks
    /// (`rtspsrc ! depay ! parse ! decoder ! fakesink`, as the peer's floor).
    pub floor_decode_per_stream: f64,
    /// The file decoded as fast as possible (no network, warm caches), for
    /// reference: a lower bound no real-time pipeline reaches.
    pub floor_decode_file_per_stream: f64,
    pub floor_model_per_stream: f64,
    pub ratio_to_floor: f64,
    pub rss_mb: f64,
    /// RSS when the measured window began (after warm-up): flat memory
    /// means `rss_mb` stays close to it over a long window.
    pub rss_start_mb: f64,
    /// Highest ÷ lowest per-stream detection rate (1 = perfectly fair).
    pub rate_spread: f64,
    /// Software decoder threads per stream the agent used (and the floor).
    pub decoder_threads: u32,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    /// Every stream reached ≥ 95% of its detection rate.
    pub sustained: bool,
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|pages| pages * 4096.0 / 1e6)
        .unwrap_or(0.0)
}

struct SimProc(Child);
impl Drop for SimProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ioc-agent simulate` (a separate process, so its CPU is not the agent's).
fn start_sim(file: &Path, streams: usize) -> Result<(SimProc, u16), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.args(["simulate", "--listen", "127.0.0.1:0"]);
    for i in 0..streams {
        cmd.arg("--stream").arg(format!("s{i}={}", file.display()));
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let out = child.stdout.take().ok_or("no simulator output")?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    let first = lines
        .next()
        .ok_or("the simulator printed nothing")?
        .map_err(|e| e.to_string())?;
    let port = first
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("cannot read the simulator's port from: {first}"))?;
    std::thread::spawn(move || for _ in lines {});
    Ok((SimProc(child), port))
}

/// CPU seconds to decode one second of the file (file → parse → decoder →
/// fakesink) with the decoder thread count the agent uses.
fn decode_floor(file: &Path, threads: u32) -> Result<f64, String> {
    let clip = crate::simulate::Clip::load(file).map_err(|e| e.to_string())?;
    let codec = clip.codec;
    let dec = crate::decode::choose_decoder(codec, None, &[]).map_err(|e| e.to_string())?;
    if crate::decode::DecoderKind::of(&dec) == crate::decode::DecoderKind::Libavcodec {
        let c0 = cpu_seconds();
        let frames = crate::decode::lav::decode_all(codec, threads, |f| clip.for_each_unit(f))?;
        let cpu = cpu_seconds() - c0;
        if frames == 0 {
            return Err("the file decode floor decoded no frames".into());
        }
        return Ok(cpu / (clip.duration_ns as f64 / 1e9).max(0.001));
    }
    let (parser, caps) = match codec {
        crate::decode::Codec::H264 => ("h264parse", "video/x-h264"),
        crate::decode::Codec::H265 => ("h265parse", "video/x-h265"),
    };
    let desc = format!(
        "filesrc location=\"{}\" ! qtdemux ! {caps} ! {parser} ! {dec} name=dec ! video/x-raw,format=I420 ! fakesink sync=false",
        file.display()
    );
    use gstreamer::prelude::*;
    let pipe = gstreamer::parse::launch(&desc)
        .map_err(|e| e.to_string())?
        .downcast::<gstreamer::Pipeline>()
        .map_err(|_| "not a pipeline".to_string())?;
    if let Some(d) = pipe.by_name("dec")
        && d.has_property("max-threads")
    {
        d.set_property_from_str("max-threads", &threads.to_string());
    }
    let c0 = cpu_seconds();
    pipe.set_state(gstreamer::State::Playing)
        .map_err(|e| e.to_string())?;
    let bus = pipe.bus().ok_or("no bus")?;
    let _ = bus.timed_pop_filtered(
        gstreamer::ClockTime::from_seconds(120),
        &[gstreamer::MessageType::Eos, gstreamer::MessageType::Error],
    );
    let _ = pipe.set_state(gstreamer::State::Null);
    let cpu = cpu_seconds() - c0;
    Ok(cpu / (clip.duration_ns as f64 / 1e9).max(0.001))
}

/// CPU seconds per stream-second to receive and decode the same `streams`
/// RTSP streams in real time into fakesinks, in this process.
fn decode_floor_rtsp(
    port: u16,
    streams: usize,
    codec: crate::decode::Codec,
    threads: u32,
    seconds: f64,
) -> Result<f64, String> {
    use gstreamer::prelude::*;
    let dec = crate::decode::choose_decoder(codec, None, &[]).map_err(|e| e.to_string())?;
    let (depay, parser) = match codec {
        crate::decode::Codec::H264 => ("rtph264depay", "h264parse"),
        crate::decode::Codec::H265 => ("rtph265depay", "h265parse"),
    };
    // libavcodec runs outside GStreamer: the parsed access units go to it
    // through appsinks, as the agent's do; no picture is copied out.
    let lav = crate::decode::DecoderKind::of(&dec) == crate::decode::DecoderKind::Libavcodec;
    let caps = codec.caps();
    let mut desc = String::new();
    for i in 0..streams {
        if lav {
            desc.push_str(&format!(
                "rtspsrc location=rtsp://127.0.0.1:{port}/s{i} protocols=tcp ! {depay} ! {parser} config-interval=-1 ! {caps} ! appsink name=au{i} sync=false "
            ));
        } else {
            desc.push_str(&format!(
                "rtspsrc location=rtsp://127.0.0.1:{port}/s{i} protocols=tcp ! {depay} ! {parser} ! {dec} name=dec{i} ! fakesink sync=false "
            ));
        }
    }
    let pipe = gstreamer::parse::launch(&desc)
        .map_err(|e| e.to_string())?
        .downcast::<gstreamer::Pipeline>()
        .map_err(|_| "not a pipeline".to_string())?;
    for i in 0..streams {
        if let Some(d) = pipe.by_name(&format!("dec{i}"))
            && d.has_property("max-threads")
        {
            d.set_property_from_str("max-threads", &threads.to_string());
        }
    }
    let mut decoders = Vec::new();
    for i in 0..streams {
        let Some(sink) = pipe
            .by_name(&format!("au{i}"))
            .and_then(|e| e.downcast::<gstreamer_app::AppSink>().ok())
        else {
            continue;
        };
        // A rate far below the stream's: the decoder does all its work, one
        // picture in a long while is handed on (and dropped).
        let d = std::sync::Arc::new(
            crate::decode::lav::LavDecoder::start(codec, 1e-4, threads, Default::default(), |_| {})
                .map_err(|e| e.to_string())?,
        );
        let feed = d.clone();
        sink.set_callbacks(
            gstreamer_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gstreamer::FlowError::Eos)?;
                    if let Some(b) = sample.buffer()
                        && let Ok(m) = b.map_readable()
                    {
                        let pts = b.pts().map(|t| t.nseconds()).unwrap_or(0);
                        feed.push(m.as_slice(), pts, std::time::SystemTime::now())
                            .map_err(|_| gstreamer::FlowError::Error)?;
                    }
                    Ok(gstreamer::FlowSuccess::Ok)
                })
                .build(),
        );
        decoders.push(d);
    }
    pipe.set_state(gstreamer::State::Playing)
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs(3));
    let (c0, t0) = (cpu_seconds(), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let cpu = cpu_seconds() - c0;
    let secs = t0.elapsed().as_secs_f64();
    let failed = pipe.bus().and_then(|b| {
        b.pop_filtered(&[gstreamer::MessageType::Error])
            .map(|m| format!("{m:?}"))
    });
    let _ = pipe.set_state(gstreamer::State::Null);
    let failed = failed.or_else(|| {
        decoders
            .iter()
            .find_map(|d| d.poll_error())
            .map(|e| e.to_string())
    });
    drop(decoders);
    if let Some(e) = failed {
        return Err(format!("the RTSP decode floor failed: {e}"));
    }
    Ok(cpu / secs / streams as f64)
}

/// CPU seconds of one inference on a frame of the file's size.
fn model_floor(cfg: &Config, model: &str, w: u32, h: u32) -> Result<f64, String> {
    let env = crate::infer::init_runtime(&cfg.onnxruntime_path()).map_err(|e| e.to_string())?;
    let manifest = crate::infer::manifest::Manifest::load(&cfg.manifest_path(model))
        .map_err(|e| e.to_string())?;
    let path = cfg.model_dir().join(&manifest.file);
    let threads = cfg.models.first().map(|m| m.intra_threads).unwrap_or(1);
    let mut det = crate::infer::Detector::load(env, manifest, &path, threads, None)
        .map_err(|e| e.to_string())?;
    let mut f = crate::decode::Frame::blank(w, h);
    f.y_mut().fill(100);
    f.u_mut().fill(128);
    f.v_mut().fill(128);
    for _ in 0..3 {
        det.detect(&f).map_err(|e| e.to_string())?;
    }
    // Median of three blocks: one noisy block does not move the floor.
    let n = 40;
    let mut blocks = Vec::new();
    for _ in 0..3 {
        let c0 = cpu_seconds();
        for _ in 0..n {
            det.detect(&f).map_err(|e| e.to_string())?;
        }
        blocks.push((cpu_seconds() - c0) / n as f64);
    }
    blocks.sort_by(f64::total_cmp);
    Ok(blocks[1])
}

fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    // buckets: (upper bound ms, cumulative count)
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    if total == 0.0 {
        return 0.0;
    }
    let want = q * total;
    buckets
        .iter()
        .find(|b| b.1 >= want)
        .map(|b| b.0)
        .unwrap_or(f64::INFINITY)
}

/// One run with `streams` cameras.
pub async fn run_once(args: &BenchArgs, streams: usize) -> Result<BenchResult, String> {
    let dir = std::env::temp_dir().join(format!("ioc-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let (sim, port) = start_sim(&args.file, streams)?;
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let token = "bench-token-0123456789abcdef";
    let text = config_text(args, &dir, streams, port, http, token);
    let cfg = Config::parse(&text, Path::new("bench.toml"), &dir).map_err(|e| e.to_string())?;
    let window = measure_agent(cfg, http, token, args.seconds).await?;
    let _ = std::fs::remove_dir_all(&dir);
    let (per, lat) = stream_results(&window, streams);
    // Floors, measured now (same machine state) on the same file and model.
    let head = text.split("[[cameras]]").next().unwrap_or(&text);
    let fcfg = Config::parse(head, Path::new("bench.toml"), &dir).map_err(|e| e.to_string())?;
    let floors = floors(args, &fcfg, sim, port, streams)?;
    let secs = window.secs;
    let cpu_per_stream = window.cpu / secs / streams as f64;
    let floor = floors.decode + floors.model;
    let sustained = per.iter().all(|p| p.detect_fps >= 0.95 * args.detect_fps);
    let (lo, hi) = per.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
        (lo.min(p.detect_fps), hi.max(p.detect_fps))
    });
    let rate_spread = if lo > 0.0 { hi / lo } else { f64::INFINITY };
    Ok(BenchResult {
        streams,
        seconds: (secs * 10.0).round() / 10.0,
        target_fps: args.detect_fps,
        per_stream: per,
        cpu_per_stream,
        floor_decode_per_stream: floors.decode,
        floor_decode_file_per_stream: floors.decode_file,
        floor_model_per_stream: floors.model,
        ratio_to_floor: cpu_per_stream / floor.max(1e-9),
        rss_mb: window.rss,
        rss_start_mb: window.rss_start,
        rate_spread,
        decoder_threads: floors.threads,
        latency_p50_ms: quantile(&lat, 0.5),
        latency_p99_ms: quantile(&lat, 0.99),
        sustained,
    })
}

/// The agent's config for a run: the simulator's `streams` cameras, MQTT
/// pointed at nothing, evidence off, `/metrics` on `http` behind `token`.
fn config_text(
    args: &BenchArgs,
    dir: &Path,
    streams: usize,
    port: u16,
    http: u16,
    token: &str,
) -> String {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (manifests, model_dir) = (abs(&args.manifests), abs(&args.model_dir));
    let mut text = format!(
        "agent_id = \"bench\"\ndata_dir = \"{}\"\nmanifest_dir = \"{}\"\nmodel_dir = \"{}\"\n{}[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[evidence]\nenabled = false\n[http]\nlisten = \"127.0.0.1:{http}\"\ntoken = \"{token}\"\n[[models]]\nname = \"{}\"\nintra_threads = {}\n",
        dir.display(),
        manifests.display(),
        model_dir.display(),
        args.onnxruntime
            .as_ref()
            .map(|p| format!("onnxruntime = \"{}\"\n", p.display()))
            .unwrap_or_default(),
        args.model,
        args.threads,
    );
    for i in 0..streams {
        text.push_str(&format!(
            "[[cameras]]\nid = \"s{i}\"\nurl = \"rtsp://127.0.0.1:{port}/s{i}\"\ndetect_fps = {}\nskip_quiet_frames = {}\n",
            args.detect_fps, args.skip_quiet
        ));
    }
    text
}

/// The measured window of the agent's run: `/metrics` at its start and end,
/// its length, the CPU spent in it and RSS at both ends.
struct Window {
    m0: String,
    m1: String,
    secs: f64,
    cpu: f64,
    rss_start: f64,
    rss: f64,
}

/// Runs the agent on `cfg`, warms up (connect, first keyframe), then
/// measures `seconds` and stops it.
async fn measure_agent(
    cfg: Config,
    http: u16,
    token: &str,
    seconds: f64,
) -> Result<Window, String> {
    let cancel = tokio_util::sync::CancellationToken::new();
    let c = cancel.clone();
    let agent =
        tokio::spawn(async move { crate::run::run(cfg, c).await.map_err(|e| e.to_string()) });
    tokio::time::sleep(Duration::from_secs(5)).await;
    if agent.is_finished() {
        return Err(match agent.await {
            Ok(Err(e)) => format!("the agent stopped: {e}"),
            Ok(Ok(())) => "the agent stopped during warm-up".to_string(),
            Err(e) => format!("the agent failed: {e}"),
        });
    }
    let scrape = || -> Result<String, String> {
        let r = ureq::get(&format!("http://127.0.0.1:{http}/metrics"))
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .map_err(|e| e.to_string())?;
        r.into_string().map_err(|e| e.to_string())
    };
    let m0 = scrape()?;
    let rss_start = rss_mb();
    let (c0, t0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let m1 = scrape()?;
    let cpu = cpu_seconds() - c0;
    let secs = t0.elapsed().as_secs_f64();
    let rss = rss_mb();
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), agent).await;
    Ok(Window {
        m0,
        m1,
        secs,
        cpu,
        rss_start,
        rss,
    })
}

/// The first sample of `metric` in a scrape with all of `labels`, else 0.
fn metric_value(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && !l.starts_with('#'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .next()
        .unwrap_or(0.0)
}

/// Per-stream rates over the window, and the frame-latency histogram of all
/// streams together: `(upper bound ms, count)`, cumulative per bound.
fn stream_results(w: &Window, streams: usize) -> (Vec<StreamResult>, Vec<(f64, f64)>) {
    let delta = |metric: &str, labels: &[(&str, &str)]| {
        metric_value(&w.m1, metric, labels) - metric_value(&w.m0, metric, labels)
    };
    let mut per = Vec::new();
    let mut lat: Vec<(f64, f64)> = Vec::new();
    for i in 0..streams {
        let cam = format!("s{i}");
        let d = |metric: &str, extra: &[(&str, &str)]| {
            let mut l = vec![("camera", cam.as_str())];
            l.extend_from_slice(extra);
            delta(metric, &l) / w.secs
        };
        let (inferred, quiet) = (
            d("ioc_frames_inferred_total", &[]),
            d("ioc_frames_skipped_total", &[("reason", "quiet")]),
        );
        per.push(StreamResult {
            camera: cam.clone(),
            detect_fps: inferred + quiet,
            inferred_fps: inferred,
            skipped_quiet: quiet,
            skipped_rate: d("ioc_frames_skipped_total", &[("reason", "rate")]),
            skipped_busy: d("ioc_frames_skipped_total", &[("reason", "busy")]),
            skipped_backlog: d("ioc_frames_skipped_total", &[("reason", "backlog")]),
        });
        for b in crate::publish::payload::LATENCY_SLO_BUCKETS_MS
            .iter()
            .map(|b| format!("{}", b / 1000.0))
            .chain(std::iter::once("+Inf".to_string()))
        {
            let n = delta(
                "ioc_frame_latency_seconds_bucket",
                &[("camera", &cam), ("le", &b)],
            );
            let ub = if b == "+Inf" {
                f64::INFINITY
            } else {
                b.parse::<f64>().unwrap_or(0.0) * 1000.0
            };
            match lat.iter_mut().find(|x| x.0 == ub) {
                Some(x) => x.1 += n,
                None => lat.push((ub, n)),
            }
        }
    }
    (per, lat)
}

/// The floor of the same work, per stream.
struct Floors {
    /// Decoding the file flat out, CPU seconds per stream-second.
    decode_file: f64,
    /// The same RTSP streams decoded in real time, per stream-second.
    decode: f64,
    /// The model at the detection rate, per stream-second.
    model: f64,
    /// Software decoder threads per stream.
    threads: u32,
}

/// Measures the floors; the simulator (`sim`, serving on `port`) stops once
/// the RTSP decode floor is done, before the model's.
fn floors(
    args: &BenchArgs,
    fcfg: &Config,
    sim: SimProc,
    port: u16,
    streams: usize,
) -> Result<Floors, String> {
    let threads = crate::decode::decoder_threads(0, streams, crate::decode::cores());
    let decode_file = decode_floor(&args.file, threads)?;
    let codec = crate::simulate::Clip::load(&args.file)
        .map_err(|e| e.to_string())?
        .codec;
    let decode = decode_floor_rtsp(
        port,
        streams,
        codec,
        threads,
        args.seconds.clamp(10.0, 30.0),
    )?;
    drop(sim);
    let (w, h) = clip_size(&args.file).unwrap_or((1280, 720));
    let model = model_floor(fcfg, &args.model, w, h)? * args.detect_fps;
    Ok(Floors {
        decode_file,
        decode,
        model,
        threads,
    })
}

/// Width and height of the file's video (from its first decoded caps).
pub fn clip_size(file: &Path) -> Option<(u32, u32)> {
    use gstreamer::prelude::*;
    let desc = format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! video/x-raw,format=I420 ! appsink name=sink max-buffers=1",
        file.display()
    );
    let pipe = gstreamer::parse::launch(&desc)
        .ok()?
        .downcast::<gstreamer::Pipeline>()
        .ok()?;
    let sink = pipe
        .by_name("sink")?
        .downcast::<gstreamer_app::AppSink>()
        .ok()?;
    pipe.set_state(gstreamer::State::Playing).ok()?;
    let s = sink.try_pull_sample(gstreamer::ClockTime::from_seconds(10));
    let _ = pipe.set_state(gstreamer::State::Null);
    let caps = s?.caps()?.to_owned();
    let info = gstreamer_video::VideoInfo::from_caps(&caps).ok()?;
    Some((info.width(), info.height()))
}

impl std::fmt::Display for BenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} stream(s), {:.0} s, target {:.1} detections/s per stream",
            self.streams, self.seconds, self.target_fps
        )?;
        writeln!(
            f,
            "{:<8} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "stream", "analysed/s", "model/s", "skip rate", "skip busy", "skip gop"
        )?;
        for p in &self.per_stream {
            writeln!(
                f,
                "{:<8} {:>10.2} {:>10.2} {:>10.1} {:>10.2} {:>10.2}",
                p.camera,
                p.detect_fps,
                p.inferred_fps,
                p.skipped_rate,
                p.skipped_busy,
                p.skipped_backlog
            )?;
        }
        writeln!(
            f,
            "CPU per stream      {:.3} core (floor {:.3} = decode {:.3} + model {:.3}); agent ÷ floor {:.2}",
            self.cpu_per_stream,
            self.floor_decode_per_stream + self.floor_model_per_stream,
            self.floor_decode_per_stream,
            self.floor_model_per_stream,
            self.ratio_to_floor
        )?;
        writeln!(
            f,
            "                    (decode floor: the same RTSP streams into fakesinks in real time; the file decoded flat out costs {:.3})",
            self.floor_decode_file_per_stream
        )?;
        writeln!(
            f,
            "decoder threads     {} per stream (agent and floor)",
            self.decoder_threads
        )?;
        writeln!(
            f,
            "RSS                 {:.0} MB at the end ({:.0} MB when the window began)",
            self.rss_mb, self.rss_start_mb
        )?;
        writeln!(
            f,
            "fairness            highest ÷ lowest stream rate {:.2}",
            self.rate_spread
        )?;
        writeln!(
            f,
            "frame→decision      p50 ≤ {:.0} ms, p99 ≤ {:.0} ms (histogram bucket bounds)",
            self.latency_p50_ms, self.latency_p99_ms
        )?;
        writeln!(
            f,
            "sustained           {}",
            if self.sustained {
                "yes (every stream ≥ 95% of its rate)"
            } else {
                "no"
            }
        )
    }
}
