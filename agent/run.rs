//! `ioc-agent run`: loads models, starts the publisher and one supervisor per
//! camera. A camera's failure is retried with jittered backoff and never
//! touches another camera.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{CameraConfig, Config};
use crate::decode::{self, DecodeError, DecodePipeline, Frame, FrameCounters};
use crate::evidence;
use crate::infer::manifest::Manifest;
use crate::infer::{self, Detector, DetectorHandle, InferError};
use crate::publish::payload::{AlertObject, EvidenceRef, FrameSize, ModelRef, rfc3339};
use crate::publish::{self, Alert, Outgoing, PublisherHandle, StatusBoard};
use crate::rules::{Geometry, RuleEngine};
use crate::source::{Backoff, RtspSource, SourceError, redact};
use crate::track::{Tracker, TrackerConfig};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Infer(#[from] InferError),
    #[error(transparent)]
    Manifest(#[from] crate::infer::manifest::ManifestError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("MQTT: {0}")]
    Mqtt(String),
    #[error(transparent)]
    Evidence(#[from] crate::evidence::EvidenceError),
    #[error("HTTP server: {0}")]
    Http(String),
}

/// Errors that end one camera session (the supervisor retries).
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Infer(#[from] InferError),
    #[error(transparent)]
    Rules(#[from] crate::rules::RuleError),
}

/// Bytes allowed in front of the decoder before whole GOPs are dropped.
const DECODE_BACKLOG_BYTES: u64 = 8 * 1024 * 1024;
/// Seconds of video waiting in front of a decoder before whole GOPs are
/// dropped (and, below half of it, resumed at the next keyframe): a box that
/// cannot decode everything sheds load instead of queueing it.
const DECODE_BACKLOG_SECS: f64 = 2.0;

/// Loads the runtime and every model the enabled cameras use. Fails with a
/// clear error (path and fix) before anything starts.
pub fn load_detectors(cfg: &Config) -> Result<HashMap<String, DetectorHandle>, RunError> {
    let mut used: Vec<&str> = Vec::new();
    for cam in cfg.cameras.iter().filter(|c| c.enabled) {
        let name = cam
            .model
            .as_ref()
            .map(|m| m.get_ref().as_str())
            .or_else(|| cfg.models.first().map(|m| m.name.get_ref().as_str()));
        // The camera's detector and every cascade model of its rules.
        let cascades = cam
            .rules
            .iter()
            .filter_map(|r| r.model.as_ref().map(|m| m.get_ref().as_str()));
        for n in name.into_iter().chain(cascades) {
            if !used.contains(&n) {
                used.push(n);
            }
        }
    }
    if cfg.evidence.enabled
        && let Some(p) = &cfg.evidence.plates
    {
        for n in [p.detector.get_ref().as_str(), p.reader.get_ref().as_str()] {
            if !used.contains(&n) {
                used.push(n);
            }
        }
    }
    load_named(cfg, &used)
}

/// Loads the named models (skipping names not in `[[models]]`).
pub fn load_named(
    cfg: &Config,
    names: &[&str],
) -> Result<HashMap<String, DetectorHandle>, RunError> {
    let env = infer::init_runtime(&cfg.onnxruntime_path())?;
    let mut out = HashMap::new();
    for &name in names {
        let Some(mc) = cfg.models.iter().find(|m| m.name.get_ref() == name) else {
            continue;
        };
        let manifest = Manifest::load(&cfg.manifest_path(name))?;
        let path = cfg.model_dir().join(&manifest.file);
        // Cameras whose detector this is; a cascade or plate model has none
        // of its own and gets one worker.
        let users = cfg
            .cameras
            .iter()
            .filter(|c| c.enabled)
            .filter(|c| {
                c.model
                    .as_ref()
                    .map(|m| m.get_ref().as_str())
                    .or_else(|| cfg.models.first().map(|m| m.name.get_ref().as_str()))
                    == Some(name)
            })
            .count()
            .max(1);
        let workers = mc.worker_count(users, decode::cores());
        let load = || {
            Detector::load_on(
                env,
                manifest.clone(),
                &path,
                mc.intra_threads,
                mc.score_threshold,
                &mc.provider_list(),
            )
        };
        let det = load()?;
        let mut more = Vec::new();
        for _ in 1..workers {
            more.push(load()?);
        }
        info!(
            model = name,
            path = %path.display(),
            providers = %det.provider,
            intra_threads = mc.intra_threads,
            workers,
            "model loaded"
        );
        out.insert(name.to_string(), DetectorHandle::spawn_pool(det, more));
    }
    Ok(out)
}

/// Runs the agent until `cancel` fires.
pub async fn run(cfg: Config, cancel: CancellationToken) -> Result<(), RunError> {
    run_with_reload(cfg, None, cancel, None).await
}

/// What every camera task shares.
#[derive(Clone)]
struct Shared {
    agent_id: String,
    detectors: HashMap<String, DetectorHandle>,
    publisher: PublisherHandle,
    status: Arc<StatusBoard>,
    signals: Option<Arc<publish::signals::SignalBoard>>,
    models: Arc<HashMap<String, DetectorHandle>>,
    evidence: Option<Arc<crate::evidence::Evidence>>,
    plates: Option<
        Arc<(
            crate::evidence::plates::PlateModels,
            crate::config::PlatesConfig,
        )>,
    >,
    evidence_cfg: Arc<crate::config::EvidenceConfig>,
    default_model: Option<String>,
    snapshots: Arc<crate::http::setup::Snapshots>,
    /// Enabled cameras in the running config (decoder thread budget).
    enabled_cameras: Arc<std::sync::atomic::AtomicUsize>,
}

/// A running camera supervisor.
struct Running {
    /// The camera's TOML table as configured (span-free, for comparing on reload).
    table: Option<toml::Value>,
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

/// Starts one camera's supervisor (None when its model is not loaded).
fn start_camera(sh: &Shared, cam: &CameraConfig, parent: &CancellationToken) -> Option<Running> {
    let model = cam
        .model
        .as_ref()
        .map(|m| m.get_ref().clone())
        .or_else(|| sh.default_model.clone());
    let Some(detector) = model.as_ref().and_then(|m| {
        sh.detectors
            .get(m)
            .map(|d| d.for_camera(cam.id.get_ref(), cam.priority))
    }) else {
        warn!(camera = %cam.id.get_ref(), model = ?model, "camera's model is not loaded; not started (a new model needs a restart)");
        return None;
    };
    let cancel = parent.child_token();
    let ctx = CameraCtx {
        cam: Arc::new(cam.clone()),
        agent_id: sh.agent_id.clone(),
        detector,
        publisher: sh.publisher.clone(),
        status: sh.status.clone(),
        counters: Arc::new(FrameCounters::default()),
        cancel: cancel.clone(),
        signals: sh.signals.clone(),
        models: sh.models.clone(),
        ring: Arc::new(std::sync::Mutex::new(crate::evidence::ring::GopRing::new(
            decode::Codec::H264,
            sh.evidence_cfg.ring_bytes,
        ))),
        evidence: sh.evidence.clone(),
        plates: sh.plates.clone(),
        evidence_cfg: sh.evidence_cfg.clone(),
        snapshots: sh.snapshots.clone(),
        enabled_cameras: sh.enabled_cameras.clone(),
    };
    let span = info_span!("camera", id = %cam.id.get_ref());
    info!(camera = %cam.id.get_ref(), "camera started");
    let handle = tokio::spawn(supervise(ctx).instrument(span));
    Some(Running {
        table: None,
        cancel,
        handle,
    })
}

/// Each enabled camera's TOML table by id, from the config text.
fn camera_tables(text: Option<&str>) -> HashMap<String, toml::Value> {
    let mut out = HashMap::new();
    let Some(v) = text.and_then(|t| t.parse::<toml::Table>().ok()) else {
        return out;
    };
    if let Some(cams) = v.get("cameras").and_then(|c| c.as_array()) {
        for c in cams {
            if let Some(id) = c.get("id").and_then(|i| i.as_str()) {
                out.insert(id.to_string(), c.clone());
            }
        }
    }
    out
}

/// Everything but the cameras, to tell whether a reload changed global settings.
fn global_table(text: &str) -> Option<toml::Table> {
    let mut t = text.parse::<toml::Table>().ok()?;
    t.remove("cameras");
    Some(t)
}

/// Applies a changed config file: refuses an invalid one (the running config
/// stays); restarts changed cameras, starts new ones, stops removed ones, and
/// leaves unchanged cameras running without a gap. Global sections need a restart.
async fn apply_reload(
    path: &std::path::Path,
    current: Config,
    sh: &Shared,
    cameras: &mut HashMap<String, Running>,
    cancel: &CancellationToken,
) -> Config {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "config reload refused: cannot read the file; the running config stays");
            return current;
        }
    };
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            let msg = e.to_string().replace('\n', "; ");
            warn!(path = %path.display(), error = %msg, "config reload refused: the new config is invalid; the running config stays");
            return current;
        }
    };
    if let (Some(a), Some(b)) = (current_global(&current), global_table(&text))
        && a != b
    {
        warn!(
            "config reload: settings outside [[cameras]] changed (mqtt, models, evidence, http, …); they take effect after a restart"
        );
    }
    sh.enabled_cameras.store(
        new.cameras.iter().filter(|c| c.enabled).count(),
        Ordering::Relaxed,
    );
    let new_tables = camera_tables(Some(&text));
    let (mut restarted, mut started, mut stopped, mut kept) = (0, 0, 0, 0);
    // Stop removed or disabled cameras, and changed ones.
    let wanted: HashMap<String, &CameraConfig> = new
        .cameras
        .iter()
        .filter(|c| c.enabled)
        .map(|c| (c.id.get_ref().clone(), c))
        .collect();
    let ids: Vec<String> = cameras.keys().cloned().collect();
    for id in ids {
        let changed = match wanted.get(&id) {
            None => true,
            Some(_) => cameras.get(&id).and_then(|r| r.table.as_ref()) != new_tables.get(&id),
        };
        if changed && let Some(r) = cameras.remove(&id) {
            r.cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), r.handle).await;
            if wanted.contains_key(&id) {
                info!(camera = %id, "config reload: camera changed; restarting it");
            } else {
                info!(camera = %id, "config reload: camera removed or disabled; stopped");
                sh.status.remove(&id);
                stopped += 1;
            }
        }
    }
    for (id, cam) in &wanted {
        if cameras.contains_key(id) {
            kept += 1;
            continue;
        }
        if let Some(r) = start_camera(sh, cam, cancel) {
            if current.cameras.iter().any(|c| c.id.get_ref() == id) {
                restarted += 1;
            } else {
                started += 1;
            }
            cameras.insert(
                id.clone(),
                Running {
                    table: new_tables.get(id).cloned(),
                    ..r
                },
            );
        }
    }
    info!(
        restarted,
        started,
        stopped,
        unchanged = kept,
        "config reloaded"
    );
    *CONFIG_TEXT.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
    new
}

/// The global part of the config text in force (set at start and on reload).
static CONFIG_TEXT: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn current_global(_cfg: &Config) -> Option<toml::Table> {
    let t = CONFIG_TEXT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()?;
    global_table(&t)
}

/// Runs the agent until `cancel` fires. With `config_path` and `reload`, each
/// message on `reload` (SIGHUP, or a save from the setup page) re-reads the
/// file and applies camera changes live.
pub async fn run_with_reload(
    cfg: Config,
    config_path: Option<std::path::PathBuf>,
    cancel: CancellationToken,
    mut reload: Option<tokio::sync::mpsc::Receiver<()>>,
) -> Result<(), RunError> {
    let config_text = config_path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok());
    *CONFIG_TEXT.lock().unwrap_or_else(|p| p.into_inner()) = config_text.clone();
    decode::init()?;
    let detectors = load_detectors(&cfg)?;
    let models = Arc::new(detectors.clone());
    let status = Arc::new(StatusBoard::new(cfg.agent_id.get_ref()));
    let store = Arc::new(crate::store::Store::open(
        &cfg.data_dir(),
        crate::store::Limits {
            max_rows: cfg.mqtt.outbox_max_rows,
            max_bytes: cfg.mqtt.outbox_max_bytes,
        },
    )?);
    let pub_cancel = CancellationToken::new();
    let signals = publish::signals::spawn(&cfg, cancel.clone()).map_err(RunError::Mqtt)?;
    let (publisher, pub_task) =
        publish::start(&cfg, status.clone(), store.clone(), pub_cancel.clone())
            .map_err(RunError::Mqtt)?;
    let evidence = if cfg.evidence.enabled {
        let ev = crate::evidence::Evidence::open(&cfg, store.clone(), publisher.clone())?;
        info!(dir = %ev.dir.display(), public_key = %ev.public_key_hex(), "evidence enabled");
        Some(ev)
    } else {
        None
    };
    let plates = match (&evidence, &cfg.evidence.plates) {
        (Some(_), Some(p)) => match (
            detectors.get(p.detector.get_ref()),
            detectors.get(p.reader.get_ref()),
        ) {
            (Some(d), Some(r)) => Some(Arc::new((
                crate::evidence::plates::PlateModels {
                    detector: d.clone(),
                    reader: r.clone(),
                },
                p.clone(),
            ))),
            _ => None,
        },
        _ => None,
    };
    let http_cancel = CancellationToken::new();
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Reload requests: SIGHUP (from main) and saves from the setup page.
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<()>(4);
    if let Some(mut ext) = reload.take() {
        let tx = reload_tx.clone();
        tokio::spawn(async move {
            while ext.recv().await.is_some() {
                let _ = tx.send(()).await;
            }
        });
    }
    let snapshots = Arc::new(crate::http::setup::Snapshots::default());
    let running = Arc::new(std::sync::RwLock::new(cfg.clone()));
    if let Some(h) = &cfg.http {
        let token = cfg
            .http_token()
            .map_err(RunError::Http)?
            .ok_or_else(|| RunError::Http("http needs a token".into()))?;
        let state = crate::http::HttpState {
            evidence: evidence.clone(),
            token: Arc::new(token),
            status: status.clone(),
            ready: ready.clone(),
            setup: Some(Arc::new(crate::http::setup::SetupState {
                config_path: config_path.clone(),
                running: running.clone(),
                snapshots: snapshots.clone(),
                reload: reload_tx.clone(),
                lock: tokio::sync::Mutex::new(()),
            })),
        };
        let (addr, _task) = crate::http::serve(&h.listen, state, http_cancel.clone())
            .await
            .map_err(|e| RunError::Http(e.to_string()))?;
        info!(%addr, "HTTP server listening (review page at /review)");
    }

    let shared = Shared {
        agent_id: cfg.agent_id.get_ref().clone(),
        detectors: detectors.clone(),
        publisher: publisher.clone(),
        status: status.clone(),
        signals: signals.clone(),
        models: models.clone(),
        evidence: evidence.clone(),
        plates: plates.clone(),
        evidence_cfg: Arc::new(cfg.evidence.clone()),
        default_model: cfg.models.first().map(|m| m.name.get_ref().clone()),
        snapshots: snapshots.clone(),
        enabled_cameras: Arc::new(std::sync::atomic::AtomicUsize::new(
            cfg.cameras.iter().filter(|c| c.enabled).count(),
        )),
    };
    let mut cameras: HashMap<String, Running> = HashMap::new();
    let tables = camera_tables(config_text.as_deref());
    for cam in cfg.cameras.iter().filter(|c| c.enabled) {
        let id = cam.id.get_ref().clone();
        if let Some(r) = start_camera(&shared, cam, &cancel) {
            cameras.insert(
                id.clone(),
                Running {
                    table: tables.get(&id).cloned(),
                    ..r
                },
            );
        }
    }
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    crate::notify::ready();
    info!(
        agent_id = %cfg.agent_id.get_ref(),
        cameras = cameras.len(),
        "agent running"
    );
    let mut current = cfg;
    let mut watchdog = crate::notify::watchdog_interval().map(tokio::time::interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(()) = reload_rx.recv() => {
                if let Some(path) = &config_path {
                    crate::notify::reloading();
                    current = apply_reload(path, current, &shared, &mut cameras, &cancel).await;
                    if let Ok(mut r) = running.write() {
                        *r = current.clone();
                    }
                    crate::notify::ready();
                }
            }
            _ = async {
                match watchdog.as_mut() {
                    Some(w) => { w.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => crate::notify::watchdog(),
        }
    }
    crate::notify::stopping();
    info!("shutting down");
    for (_, r) in cameras.drain() {
        r.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), r.handle).await;
    }
    http_cancel.cancel();
    pub_cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), pub_task).await;
    Ok(())
}

#[derive(Clone)]
struct CameraCtx {
    cam: Arc<CameraConfig>,
    agent_id: String,
    detector: DetectorHandle,
    publisher: PublisherHandle,
    status: Arc<StatusBoard>,
    counters: Arc<FrameCounters>,
    cancel: CancellationToken,
    signals: Option<Arc<publish::signals::SignalBoard>>,
    /// Every loaded model, for cascades.
    models: Arc<HashMap<String, DetectorHandle>>,
    /// Encoded frames for pre-event clips (record stream).
    ring: Arc<std::sync::Mutex<crate::evidence::ring::GopRing>>,
    evidence: Option<Arc<crate::evidence::Evidence>>,
    plates: Option<
        Arc<(
            crate::evidence::plates::PlateModels,
            crate::config::PlatesConfig,
        )>,
    >,
    evidence_cfg: Arc<crate::config::EvidenceConfig>,
    /// Newest analysed frame, for the setup page's snapshot.
    snapshots: Arc<crate::http::setup::Snapshots>,
    enabled_cameras: Arc<std::sync::atomic::AtomicUsize>,
}

impl CameraCtx {
    fn id(&self) -> &str {
        self.cam.id.get_ref()
    }
    fn sync_counters(&self) {
        let c = &self.counters;
        self.status.update(self.id(), |s| {
            s.frames_received = c.received.load(Ordering::Relaxed);
            s.frames_decoded = c.decoded.load(Ordering::Relaxed);
            s.frames_inferred = c.inferred.load(Ordering::Relaxed);
            s.frames_skipped = crate::publish::payload::SkipCounts {
                rate: c.skipped_rate.load(Ordering::Relaxed),
                busy: c.skipped_busy.load(Ordering::Relaxed),
                backlog: c.skipped_backlog.load(Ordering::Relaxed),
                no_keyframe: c.skipped_no_keyframe.load(Ordering::Relaxed),
            };
        });
    }
}

/// Supervision loop of one camera: `run_once` until cancelled, with backoff.
async fn supervise(ctx: CameraCtx) {
    let cam = ctx.cam.clone();
    let mut backoff = Backoff::new(
        Duration::from_secs_f64(cam.backoff_min_secs),
        Duration::from_secs_f64(cam.backoff_max_secs),
    );
    let mut failed_decoders: Vec<String> = Vec::new();
    loop {
        ctx.status
            .update(ctx.id(), |s| s.state = "connecting".into());
        let started = Instant::now();
        // run_once watches the cancel token itself, so that a camera stopped
        // with an event open (shutdown, config reload) can still end it.
        let res = run_once(&ctx, &mut failed_decoders).await;
        if ctx.cancel.is_cancelled() {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        let msg = match res {
            Ok(()) => "session ended".to_string(),
            Err(e) => e.to_string(),
        };
        // Errors are built from redacted URLs; redact again in case a library echoed one.
        let msg = scrub(
            &msg,
            &[
                cam.url.get_ref(),
                cam.detect_url
                    .as_ref()
                    .map(|u| u.get_ref().as_str())
                    .unwrap_or(""),
            ],
        );
        warn!(error = %msg, retry_in_ms = delay.as_millis() as u64, "camera session failed; retrying");
        ctx.status.update(ctx.id(), |s| {
            s.state = "retrying".into();
            s.last_error = Some(msg.clone());
            s.reconnects += 1;
        });
        ctx.sync_counters();
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    ctx.status.update(ctx.id(), |s| s.state = "stopped".into());
}

/// Removes any password of the given URLs from a message.
fn scrub(msg: &str, urls: &[&str]) -> String {
    let mut out = msg.to_string();
    for u in urls {
        if let Ok((_, Some(c))) = crate::source::parse_rtsp_url(u)
            && !c.password.is_empty()
        {
            out = out.replace(&c.password, "***");
        }
        if !u.is_empty() {
            out = out.replace(u, &redact(u));
        }
    }
    out
}

/// One RTSP session: ingest → decode → (latest frame) → infer → track → rules → publish.
async fn run_once(ctx: &CameraCtx, failed_decoders: &mut Vec<String>) -> Result<(), SessionError> {
    let cam = &ctx.cam;
    let url = cam.detect_url.as_ref().unwrap_or(&cam.url).get_ref();
    let mut src = tokio::select! {
        _ = ctx.cancel.cancelled() => return Ok(()),
        r = RtspSource::open(
            url,
            Duration::from_secs_f64(cam.connect_timeout_secs),
            Duration::from_secs_f64(cam.inactivity_timeout_secs),
        ) => r?,
    };
    let choose = |failed: &[String]| {
        decode::choose_decoder_in(src.codec, &cam.decoders, cam.decoder.as_deref(), failed)
    };
    let decoder = match choose(failed_decoders) {
        Ok(d) => d,
        Err(DecodeError::NoDecoder { .. }) if !failed_decoders.is_empty() => {
            // Every decoder has failed once: start the ranking over.
            failed_decoders.clear();
            choose(failed_decoders)?
        }
        Err(e) => return Err(e.into()),
    };
    let threads = decode::decoder_threads(
        cam.decoder_threads,
        ctx.enabled_cameras.load(Ordering::Relaxed),
        decode::cores(),
    );
    info!(url = %src.url, codec = src.codec.as_str(), decoder = %decoder, decoder_threads = threads, resolution = ?src.resolution, "stream opened");
    ctx.status.update(ctx.id(), |s| {
        s.state = "streaming".into();
        s.codec = Some(src.codec.as_str().into());
        s.decoder = Some(decoder.clone());
        s.resolution = src.resolution.map(|(w, h)| [w, h]);
        s.last_error = None;
    });

    // With `detect_url`, clips come from the main stream (`url`), recorded by
    // its own session below; otherwise from the stream being analysed.
    let separate_record = cam.detect_url.is_some() && ctx.evidence.is_some();
    if !separate_record {
        let mut r = crate::evidence::lock_ring(&ctx.ring);
        r.restart(src.codec);
        r.wall_clock = false;
    }

    // Decoded frames due at detect_fps; the newest replaces an unread one.
    let (ftx, mut frx) = watch::channel::<Option<(u64, Arc<Frame>)>>(None);
    ctx.snapshots.watch(ctx.id(), frx.clone());
    let mut seq = 0u64;
    let pipe = DecodePipeline::start(
        src.codec,
        &decoder,
        *cam.detect_fps.get_ref(),
        threads,
        ctx.counters.clone(),
        move |f| {
            seq += 1;
            ftx.send_replace(Some((seq, Arc::new(f))));
        },
    )
    .inspect_err(|_| {
        // A decoder that cannot even start is skipped next time, like one
        // that fails while running.
        if !failed_decoders.contains(&decoder) {
            failed_decoders.push(decoder.clone());
        }
    })?;

    let ingest = async {
        let mut waiting_key = true;
        let mut dropping = false;
        let mut last_status = Instant::now();
        loop {
            let f = src.next_frame().await?;
            let wall = SystemTime::now();
            ctx.counters.received.fetch_add(1, Ordering::Relaxed);
            if waiting_key && !f.keyframe {
                ctx.counters
                    .skipped_no_keyframe
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            waiting_key = false;
            let ring_frame = ctx.evidence.as_ref().filter(|_| !separate_record).map(|_| {
                Arc::new(crate::evidence::ring::RingFrame {
                    data: f.data.clone(),
                    pts_ns: f.pts_ns,
                    keyframe: f.keyframe,
                    wall,
                })
            });
            if let Some(rf) = ring_frame {
                crate::evidence::lock_ring(&ctx.ring).push(rf);
            }
            // Never feed a partial GOP: drop whole GOPs while the decoder is behind.
            let backlog = pipe.backlog_bytes();
            let behind = pipe.backlog_secs();
            if !dropping && (backlog > DECODE_BACKLOG_BYTES || behind > DECODE_BACKLOG_SECS) {
                dropping = true;
                warn!(
                    backlog,
                    behind_secs = behind,
                    "decoder is behind; dropping whole GOPs"
                );
            }
            if dropping {
                if f.keyframe
                    && backlog < DECODE_BACKLOG_BYTES / 2
                    && behind < DECODE_BACKLOG_SECS / 2.0
                {
                    dropping = false;
                } else {
                    ctx.counters.skipped_backlog.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            let pushed = pipe.push(&f.data, f.pts_ns, wall).err();
            if let Some(e) = pushed.or_else(|| pipe.poll_error()) {
                if !failed_decoders.contains(&pipe.decoder) {
                    failed_decoders.push(pipe.decoder.clone());
                }
                return Err::<(), SessionError>(e.into());
            }
            if last_status.elapsed() > Duration::from_secs(1) {
                last_status = Instant::now();
                ctx.status
                    .update(ctx.id(), |s| s.last_frame_at = Some(rfc3339(wall)));
                ctx.sync_counters();
            }
        }
    };

    // Rule state outlives the analysis loop so that events still open when
    // the stream ends can be ended (see below).
    let labels = ctx.detector.manifest.labels.clone();
    let mut rules = RuleEngine::new(&cam.rule_setup(), &labels)?;
    let mut shots = crate::evidence::BestShots::default();
    let mut book = crate::evidence::PlateBook::default();
    // The last analysed frame while a zone-level event is open (its end
    // alert's picture if the stream ends); None otherwise, so no frame is held.
    let mut open_frame: Option<Arc<Frame>> = None;
    let analyze = async {
        let labels = &labels;
        let mut tracker = Tracker::new(TrackerConfig::default());
        let mut signal = SignalReader::new(cam, ctx.signals.clone());
        let mut last_seq = 0u64;
        let mut last_log = Instant::now();
        let mut infer_ms = 0.0f64;
        let mut infer_n = 0u64;
        loop {
            // Wait for a frame newer than the last one analysed, then queue
            // for the model; the worker takes the newest frame when it is
            // free, so no frame ages in the queue.
            let newer = frx
                .wait_for(|v| v.as_ref().is_some_and(|(q, _)| *q > last_seq))
                .await
                .is_ok();
            if !newer {
                return Ok::<(), SessionError>(());
            }
            let (inf, s, frame) = ctx.detector.detect_latest(frx.clone()).await?;
            if s <= last_seq {
                continue;
            }
            if s > last_seq + 1 {
                ctx.counters
                    .skipped_busy
                    .fetch_add(s - last_seq - 1, Ordering::Relaxed);
            }
            last_seq = s;
            ctx.counters.inferred.fetch_add(1, Ordering::Relaxed);
            ctx.status
                .update(ctx.id(), |s| s.observe_inference(inf.millis));
            infer_ms += inf.millis;
            infer_n += 1;
            if let Some((light, source)) = signal.read(&frame) {
                rules.set_signal(frame.pts, light, source);
                ctx.status.update(ctx.id(), |s| {
                    if s.signal.as_ref().is_none_or(|x| x.state != light) {
                        s.signal = Some(crate::publish::payload::SignalInfo {
                            state: light,
                            source: source.to_string(),
                        });
                    }
                });
            }
            let tracks = tracker.update(&inf.detections, frame.pts).to_vec();
            if ctx.evidence.is_some() {
                let seen: Vec<(u64, [f32; 4], f32)> = tracks
                    .iter()
                    .filter(|t| t.last_seen == frame.pts)
                    .map(|t| (t.id, t.bbox, t.score))
                    .collect();
                shots.update(&frame, &seen);
                if let Some(p) = &ctx.plates {
                    let (models, pc) = (&p.0, &p.1);
                    book.retain(|id| tracks.iter().any(|t| t.id == id));
                    for t in tracks.iter().filter(|t| t.last_seen == frame.pts) {
                        let is_vehicle = labels
                            .get(t.class())
                            .is_some_and(|l| pc.classes.contains(l));
                        if !is_vehicle
                            || !book.due(
                                t.id,
                                frame.pts,
                                pc.min_interval_secs,
                                pc.max_reads_per_track,
                            )
                        {
                            continue;
                        }
                        let reading = models.read(frame.clone(), t.bbox).await?;
                        let with_crop = reading.map(|r| {
                            let crop = crate::evidence::crop_rgb(&frame, r.bbox, 0.1, 400)
                                .and_then(|img| crate::evidence::encode_jpeg(&img, 90).ok());
                            (r.plate, crop)
                        });
                        book.record(t.id, frame.pts, with_crop);
                    }
                }
            }
            for req in rules.cascade_requests(&tracks, frame.width, frame.height, frame.pts) {
                let Some(c) = rules.rules[req.rule].cascade.clone() else {
                    continue;
                };
                let Some(model) = ctx.models.get(&c.model) else {
                    continue;
                };
                let (fw, fh) = (frame.width as f64, frame.height as f64);
                let crop = [
                    (req.crop[0] * fw).max(0.0) as usize,
                    (req.crop[1] * fh).max(0.0) as usize,
                    ((req.crop[2] - req.crop[0]) * fw).max(1.0) as usize,
                    ((req.crop[3] - req.crop[1]) * fh).max(1.0) as usize,
                ];
                let out = model
                    .for_camera(ctx.id(), cam.priority)
                    .infer(frame.clone(), Some(crop))
                    .await?;
                let labels = &model.manifest.labels;
                let wanted = |i: usize| labels.get(i).is_some_and(|l| c.labels.contains(l));
                let conf = if out.scores.is_empty() {
                    out.detections
                        .iter()
                        .filter(|d| wanted(d.class))
                        .map(|d| d.score)
                        .fold(0.0, f32::max)
                } else {
                    out.scores
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| wanted(*i))
                        .map(|(_, s)| *s)
                        .fold(0.0, f32::max)
                };
                rules.cascade_result(&req, conf);
            }
            let firings = rules.evaluate(&tracks, frame.width, frame.height, frame.pts, frame.wall);
            if let Ok(lat) = SystemTime::now().duration_since(frame.wall) {
                let ms = lat.as_secs_f64() * 1e3;
                ctx.status.update(ctx.id(), |s| s.observe_latency(ms));
            }
            for f in firings {
                let rule = &rules.rules[f.rule];
                let session = crate::evidence::lock_ring(&ctx.ring).session;
                emit(ctx, &frame, rule, &f, labels, session, &shots, &book).await;
            }
            open_frame = rules.any_open().then(|| frame.clone());
            if last_log.elapsed() > Duration::from_secs(30) {
                let c = &ctx.counters;
                info!(
                    received = c.received.load(Ordering::Relaxed),
                    decoded = c.decoded.load(Ordering::Relaxed),
                    inferred = c.inferred.load(Ordering::Relaxed),
                    skipped_rate = c.skipped_rate.load(Ordering::Relaxed),
                    skipped_busy = c.skipped_busy.load(Ordering::Relaxed),
                    skipped_backlog = c.skipped_backlog.load(Ordering::Relaxed),
                    infer_ms_avg = format!("{:.1}", infer_ms / infer_n.max(1) as f64),
                    tracks = tracks.len(),
                    "camera stats"
                );
                last_log = Instant::now();
                infer_ms = 0.0;
                infer_n = 0;
            }
        }
    };

    let record = async {
        if separate_record {
            record_main_stream(ctx).await;
        } else {
            std::future::pending::<()>().await;
        }
    };

    let mut result = tokio::select! {
        r = ingest => r,
        r = analyze => r,
        _ = record => Ok(()),
        _ = ctx.cancel.cancelled() => Ok(()),
    };
    // A decoder that stopped with an error also closes the frame channel, so
    // the analysis may end first: whichever side noticed, the decoder's own
    // error is what ended the session, and the next one skips that decoder.
    if let Some(e) = pipe.poll_error() {
        if !failed_decoders.contains(&pipe.decoder) {
            failed_decoders.push(pipe.decoder.clone());
        }
        if result.is_ok() {
            result = Err(e.into());
        }
    }
    // The stream is gone, or the camera is being stopped (shutdown, config
    // reload): events still open are ended, pictured with the last frame on
    // which they were seen.
    let ends = rules.end_open(if ctx.cancel.is_cancelled() {
        "camera_stopped"
    } else {
        "stream_lost"
    });
    if let Some(frame) = open_frame.take() {
        let session = crate::evidence::lock_ring(&ctx.ring).session;
        for f in &ends {
            let rule = &rules.rules[f.rule];
            info!(rule = %rule.name, reason = f.end_reason.unwrap_or(""), "session ended with the event open; ending it");
            emit(ctx, &frame, rule, f, &labels, session, &shots, &book).await;
        }
    }
    result
}

/// Feeds the evidence ring from the camera's main stream (`url`) while
/// detection runs on `detect_url`. Its failures are retried here and never
/// stop detection.
async fn record_main_stream(ctx: &CameraCtx) {
    let cam = &ctx.cam;
    let mut backoff = Backoff::new(
        Duration::from_secs_f64(cam.backoff_min_secs),
        Duration::from_secs_f64(cam.backoff_max_secs),
    );
    loop {
        match RtspSource::open(
            cam.url.get_ref(),
            Duration::from_secs_f64(cam.connect_timeout_secs),
            Duration::from_secs_f64(cam.inactivity_timeout_secs),
        )
        .await
        {
            Ok(mut src) => {
                {
                    let mut r = crate::evidence::lock_ring(&ctx.ring);
                    r.restart(src.codec);
                    r.wall_clock = true;
                }
                info!(url = %src.url, codec = src.codec.as_str(), "record stream opened (clips from the main stream)");
                backoff.reset();
                loop {
                    match src.next_frame().await {
                        Ok(f) => {
                            crate::evidence::lock_ring(&ctx.ring).push(Arc::new(
                                crate::evidence::ring::RingFrame {
                                    data: f.data,
                                    pts_ns: f.pts_ns,
                                    keyframe: f.keyframe,
                                    wall: SystemTime::now(),
                                },
                            ));
                        }
                        Err(e) => {
                            let msg = scrub(&e.to_string(), &[cam.url.get_ref()]);
                            warn!(error = %msg, "record stream failed; retrying");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                let msg = scrub(&e.to_string(), &[cam.url.get_ref()]);
                warn!(error = %msg, "record stream failed; retrying");
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Where a camera's signal state comes from.
enum SignalReader {
    None,
    Image(crate::rules::signal::ImageSignal),
    Mqtt(Arc<publish::signals::SignalBoard>, String, Duration),
}

impl SignalReader {
    fn new(cam: &CameraConfig, board: Option<Arc<publish::signals::SignalBoard>>) -> SignalReader {
        use crate::config::SignalSource;
        let Some(sig) = &cam.signal else {
            return SignalReader::None;
        };
        let corners = |b: &Option<serde_spanned::Spanned<Vec<[f64; 2]>>>| {
            b.as_ref().and_then(|b| {
                let p = b.get_ref();
                Some([p.first()?[0], p.first()?[1], p.get(1)?[0], p.get(1)?[1]])
            })
        };
        match sig.source.get_ref() {
            SignalSource::Image => {
                match (corners(&sig.red_lamp), corners(&sig.green_lamp)) {
                    (Some(r), Some(g)) => SignalReader::Image(
                        crate::rules::signal::ImageSignal::new(r, g, sig.hold_frames),
                    ),
                    _ => SignalReader::None,
                }
            }
            SignalSource::Mqtt => match (board, &sig.topic) {
                (Some(b), Some(t)) => SignalReader::Mqtt(
                    b,
                    t.get_ref().clone(),
                    Duration::from_secs_f64(sig.max_age_secs.max(0.1)),
                ),
                _ => SignalReader::None,
            },
        }
    }

    fn read(&mut self, frame: &Frame) -> Option<(crate::rules::Light, &'static str)> {
        match self {
            SignalReader::None => None,
            SignalReader::Image(s) => Some((s.observe(frame), "image")),
            SignalReader::Mqtt(b, t, age) => Some((b.get(t, *age), "mqtt")),
        }
    }
}

/// Builds the alert and its thumbnail and hands them to the publisher, then
/// the evidence package (clip, pictures, plate, signature) to the evidence store.
#[allow(clippy::too_many_arguments)]
async fn emit(
    ctx: &CameraCtx,
    frame: &Arc<Frame>,
    rule: &crate::rules::Rule,
    f: &crate::rules::Firing,
    labels: &[String],
    session: u64,
    shots: &crate::evidence::BestShots,
    book: &crate::evidence::PlateBook,
) {
    let id = ulid::Ulid::from_datetime(frame.wall).to_string();
    let label = |c: usize| labels.get(c).cloned().unwrap_or_else(|| c.to_string());
    let class = f
        .objects
        .first()
        .map(|o| label(o.class))
        .unwrap_or_default();
    let track = f.objects.first().map(|o| o.track_id).unwrap_or(0);
    let geometry = rule.geometry.clone();
    let boxes: Vec<[f32; 4]> = f.objects.iter().map(|o| o.bbox).collect();
    let max_side = ctx.cam.thumbnail_max_side;
    let fr = frame.clone();
    let jpeg = tokio::task::spawn_blocking(move || {
        evidence::thumbnail(&fr, max_side, Some(&geometry), &boxes)
    })
    .await
    .ok()
    .and_then(|r| r.map_err(|e| warn!(error = %e, "thumbnail failed")).ok());
    let topic = ctx.publisher.topics.thumbnail(&id);
    let thumbnail = jpeg.as_ref().map(|j| EvidenceRef {
        topic,
        content_type: "image/jpeg".into(),
        width: j.width,
        height: j.height,
        bytes: j.bytes.len(),
        sha256: {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&j.bytes))
        },
    });
    let (mut zone, mut line, mut lane) = (None, None, None);
    match &rule.geometry {
        Geometry::Zone { name, .. } => zone = Some(name.clone()),
        Geometry::Line { name, .. } => line = Some(name.clone()),
        Geometry::Lane { name, .. } => lane = Some(name.clone()),
        Geometry::None => {}
    }
    let alert = Alert {
        schema: publish::payload::ALERT_SCHEMA.into(),
        id: id.clone(),
        kind: rule.kind.event_type().to_string(),
        name: rule.kind.display_names().0.to_string(),
        name_vi: rule.kind.display_names().1.to_string(),
        agent_id: ctx.agent_id.clone(),
        camera: ctx.id().to_string(),
        rule: rule.name.clone(),
        time: rfc3339(frame.wall),
        severity: rule.severity,
        time_source: "agent_clock".into(),
        zone,
        line,
        direction: f.direction,
        lane,
        speed_kmh: f.speed_kmh,
        count: f.count,
        phase: f.phase.map(str::to_string),
        end_reason: f.end_reason.map(str::to_string),
        dwell_secs: f.dwell_secs,
        confidence: f.confidence.map(|c| (c * 1000.0).round() / 1000.0),
        signal: f
            .signal
            .map(|(state, source)| crate::publish::payload::SignalInfo {
                state,
                source: source.to_string(),
            }),
        objects: f
            .objects
            .iter()
            .map(|o| AlertObject {
                class: label(o.class),
                score: (o.score * 1000.0).round() / 1000.0,
                track_id: o.track_id,
                bbox: o.bbox.map(|v| (v * 10000.0).round() / 10000.0),
            })
            .collect(),
        frame: FrameSize {
            width: frame.width,
            height: frame.height,
        },
        thumbnail,
        plate: book.best(track).map(|b| b.0.clone()),
        evidence_pending: ctx.evidence.is_some(),
        model: ModelRef {
            name: ctx.detector.manifest.name.clone(),
            version: ctx.detector.manifest.version.clone(),
        },
        agent_version: env!("CARGO_PKG_VERSION").into(),
    };
    info!(event_id = %id, r#type = %alert.kind, rule = %rule.name, severity = %rule.severity.as_str(), class = %class, track, "alert");
    ctx.status.update(ctx.id(), |s| {
        s.alerts += 1;
        *s.events.entry(alert.kind.clone()).or_default() += 1;
    });
    let for_evidence = ctx.evidence.as_ref().map(|_| alert.clone());
    ctx.publisher
        .send(Outgoing {
            alert,
            thumbnail: jpeg.map(|j| j.bytes),
        })
        .await;
    let (Some(ev), Some(alert)) = (&ctx.evidence, for_evidence) else {
        return;
    };
    let fr = frame.clone();
    let geometry = rule.geometry.clone();
    let boxes: Vec<([f32; 4], u64)> = f.objects.iter().map(|o| (o.bbox, o.track_id)).collect();
    let banner = format!(
        "{} {} {}",
        ctx.id(),
        chrono::DateTime::<chrono::Utc>::from(frame.wall).format("%Y-%m-%d %H:%M:%S%.3f UTC"),
        rule.name
    );
    let max_side = ctx.evidence_cfg.overview_max_side;
    let closeup = shots.get(track).cloned();
    let plate_crop = book.best(track).and_then(|b| b.1.clone());
    let pictures = tokio::task::spawn_blocking(move || {
        let ov = evidence::overview(&fr, max_side, Some(&geometry), &boxes, &banner)
            .map(|j| j.bytes)
            .map_err(|e| warn!(error = %e, "overview picture failed"))
            .ok();
        let cu = closeup.and_then(|img| evidence::encode_jpeg(&img, 90).ok());
        (ov, cu)
    })
    .await
    .unwrap_or((None, None));
    ev.submit(crate::evidence::Package {
        alert,
        event_pts_ns: (frame.pts.max(0.0) * 1e9) as u64,
        event_wall: frame.wall,
        session,
        ring: ctx.ring.clone(),
        overview: pictures.0,
        closeup: pictures.1,
        plate_crop,
    });
}
