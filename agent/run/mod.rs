//! `ioc-agent run`: the agent's lifetime. Loads models, starts the
//! publisher, evidence store and HTTP server, then one supervised task per
//! camera ([`camera`]); applies live reloads ([`reload`], a pure diff) and
//! shuts everything down through one task tracker, nothing detached.
//! A camera's failure is retried with jittered backoff and never touches
//! another camera.

mod analysis;
mod camera;
mod emit;
mod ingest;
mod models;
mod record;
pub mod reload;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{CameraConfig, Config};
use crate::decode::{self, DecodeError};
use crate::evidence::camera::PlateSetup;
use crate::evidence::plates::PlateModels;
use crate::infer::{DetectorHandle, InferError};
use crate::publish::{self, StatusBoard};
use camera::{Camera, Shared};
pub use models::{load_detectors, load_named};

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
    #[error("config: {0}")]
    Config(String),
}

/// How long stopping cameras may take before their tasks are aborted.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the agent until `cancel` fires.
pub async fn run(cfg: Config, cancel: CancellationToken) -> Result<(), RunError> {
    run_with_reload(cfg, None, cancel, None).await
}

/// A running camera task.
struct Running {
    /// The camera's settings as started (compared on reload).
    cfg: CameraConfig,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

/// The cameras and the tracker every task of the agent is spawned on.
struct Cameras {
    sh: Arc<Shared>,
    running: BTreeMap<String, Running>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    /// The signal topics the subscriber follows (updated by each reload).
    signal_topics: tokio::sync::watch::Sender<publish::signals::Topics>,
}

impl Cameras {
    /// Starts one camera's supervisor (nothing when its model is not loaded).
    fn start(&mut self, cam: &CameraConfig) -> bool {
        let cancel = self.cancel.child_token();
        let Some(camera) = Camera::new(&self.sh, cam, cancel.clone()) else {
            return false;
        };
        let span = info_span!("camera", id = %cam.id.get_ref());
        info!(camera = %cam.id.get_ref(), "camera started");
        let handle = self
            .tracker
            .spawn(camera::supervise(camera).instrument(span));
        let running = Running {
            cfg: cam.clone(),
            cancel,
            handle,
        };
        self.running.insert(cam.id.get_ref().clone(), running);
        true
    }

    /// Stops one camera, waiting for it to end its open events; aborted
    /// after [`STOP_TIMEOUT`].
    async fn stop(&mut self, id: &str) {
        let Some(r) = self.running.remove(id) else {
            return;
        };
        r.cancel.cancel();
        let abort = r.handle.abort_handle();
        if tokio::time::timeout(STOP_TIMEOUT, r.handle).await.is_err() {
            warn!(camera = %id, "camera did not stop within {STOP_TIMEOUT:?}; aborted");
            abort.abort();
        }
    }

    /// Carries out a reload: the running config stays when the new file is
    /// unreadable or invalid; otherwise changed cameras restart, new ones
    /// start, removed ones stop and unchanged ones keep running without a gap.
    async fn reload(&mut self, path: &std::path::Path, current: Config) -> Config {
        let new = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                let msg = e.to_string().replace('\n', "; ");
                warn!(path = %path.display(), error = %msg, "config reload refused: the new config is invalid; the running config stays");
                return current;
            }
        };
        if reload::globals_changed(&current, &new) {
            warn!(
                "config reload: settings outside [[cameras]] changed (mqtt, models, evidence, http, …); they take effect after a restart"
            );
        }
        // Subscribe the new signal topics before the cameras that read them start.
        let topics = match new.signal_topics() {
            Ok(t) => t,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "config reload refused: the running config stays");
                return current;
            }
        };
        let before = current.untrusted_signal_topics();
        let open: Vec<String> = new
            .untrusted_signal_topics()
            .into_iter()
            .filter(|t| !before.contains(t))
            .collect();
        if !open.is_empty() {
            warn!("{}", crate::config::untrusted_signal_warning(&open));
        }
        self.signal_topics.send_if_modified(|t| {
            let changed = *t != topics;
            *t = topics;
            changed
        });
        let wanted = reload::enabled_cameras(&new);
        let running: BTreeMap<String, CameraConfig> = self
            .running
            .iter()
            .map(|(id, r)| (id.clone(), r.cfg.clone()))
            .collect();
        let plan = reload::plan(&running, &wanted);
        self.sh
            .enabled_cameras
            .store(wanted.len(), Ordering::Relaxed);
        for id in &plan.stop {
            self.stop(id).await;
            info!(camera = %id, "config reload: camera removed or disabled; stopped");
            self.sh.status.remove(id);
        }
        let mut restarted = 0;
        for id in &plan.restart {
            info!(camera = %id, "config reload: camera changed; restarting it");
            self.stop(id).await;
            restarted += self.start(&wanted[id]) as usize;
        }
        let mut started = 0;
        for id in &plan.start {
            started += self.start(&wanted[id]) as usize;
        }
        info!(
            restarted,
            started,
            stopped = plan.stop.len(),
            unchanged = plan.keep.len(),
            "config reloaded"
        );
        new
    }

    /// Stops every camera (their open events end with `camera_stopped`).
    async fn stop_all(&mut self) {
        self.cancel.cancel();
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for id in ids {
            self.stop(&id).await;
        }
    }
}

/// The plate cascade, when evidence and `[evidence.plates]` are on and both
/// models loaded.
fn plate_setup(
    cfg: &Config,
    evidence_on: bool,
    detectors: &HashMap<String, DetectorHandle>,
) -> Option<Arc<PlateSetup>> {
    let p = cfg.evidence.plates.as_ref().filter(|_| evidence_on)?;
    let models = PlateModels {
        detector: detectors.get(p.detector.get_ref())?.clone(),
        reader: detectors.get(p.reader.get_ref())?.clone(),
    };
    Some(Arc::new(PlateSetup {
        models,
        cfg: p.clone(),
    }))
}

/// Passes reload requests from outside (SIGHUP) on until the agent stops.
async fn forward_reloads(
    mut ext: tokio::sync::mpsc::Receiver<()>,
    tx: tokio::sync::mpsc::Sender<()>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            m = ext.recv() => match m {
                Some(()) => { let _ = tx.send(()).await; }
                None => break,
            },
        }
    }
}

/// The evidence signer: the signer process when `evidence.signer_socket` is
/// set, else the agent's own key. Named in the status from the first one on.
fn open_signer(
    cfg: &Config,
    status: &StatusBoard,
) -> Result<crate::evidence::signer::Signer, RunError> {
    use crate::evidence::sign::Sign;
    use crate::evidence::signer::{Remote, Signer};
    let signer = match cfg.signer_socket() {
        Some(sock) => Signer::Remote(
            Remote::connect(&sock, Duration::from_secs(10))
                .map_err(crate::evidence::EvidenceError::from)?,
        ),
        None => Signer::Local(
            crate::evidence::sign::load_or_create_key(&cfg.key_path())
                .map_err(crate::evidence::EvidenceError::from)?,
        ),
    };
    let public = signer.public();
    status.set_signing_key(crate::publish::payload::SigningKeyInfo {
        public_key: hex::encode(public.as_bytes()),
        key_id: crate::evidence::sign::key_id(&public),
    });
    Ok(signer)
}

/// Starts the HTTP server when `[http]` is configured.
async fn start_http(
    cfg: &Config,
    state: impl FnOnce(crate::http::auth::Users, bool) -> crate::http::HttpState,
    cancel: CancellationToken,
) -> Result<Option<JoinHandle<()>>, RunError> {
    let Some(h) = &cfg.http else {
        return Ok(None);
    };
    let users = cfg.http_users().map_err(RunError::Http)?;
    if users.is_empty() {
        return Err(RunError::Http(
            "http needs someone to log in: add [[http.users]] or a token".into(),
        ));
    }
    if users.iter().any(|u| u.1 == crate::config::HttpRole::Admin) {
        tracing::warn!(
            "http: the single [http] token can do everything (review, setup, metrics); on a ward give each person and scraper their own [[http.users]] with a role"
        );
    }
    let tls = match (&h.tls_cert_file, &h.tls_key_file) {
        (Some(c), Some(k)) => Some(
            crate::http::serve::tls_config(&cfg.resolve(c), &cfg.resolve(k))
                .map_err(RunError::Http)?,
        ),
        _ => None,
    };
    let opts = crate::http::serve::ServeOptions {
        max_connections: h.max_connections,
        header_timeout: crate::base::secs(h.header_timeout_secs),
        tls: tls.clone(),
    };
    let ttl = crate::base::secs(h.session_hours * 3600.0);
    let users = crate::http::auth::Users::new(users, ttl);
    let (addr, task) = crate::http::serve(&h.listen, state(users, tls.is_some()), opts, cancel)
        .await
        .map_err(|e| RunError::Http(e.to_string()))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(%addr, "HTTP server listening ({scheme}; review page at /review)");
    Ok(Some(task))
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
    decode::init()?;
    let detectors = Arc::new(load_detectors(&cfg)?);
    let status = Arc::new(StatusBoard::new(cfg.agent_id.get_ref()));
    let store = Arc::new(crate::store::Store::open(
        &cfg.data_dir(),
        crate::store::Limits {
            max_rows: cfg.mqtt.outbox_max_rows,
            max_bytes: cfg.mqtt.outbox_max_bytes,
        },
    )?);
    // The signing key before the first status goes out, so the retained
    // status names it from the start.
    let signer = if cfg.evidence.enabled {
        Some(open_signer(&cfg, &status)?)
    } else {
        None
    };
    let tracker = TaskTracker::new();
    let pub_cancel = CancellationToken::new();
    let mqtt = cfg.mqtt_settings().map_err(RunError::Mqtt)?;
    let signals = Arc::new(publish::signals::SignalBoard::default());
    let (signal_topics, topics_rx) =
        tokio::sync::watch::channel(cfg.signal_topics().map_err(RunError::Config)?);
    for w in cfg.warnings() {
        warn!("{w}");
    }
    let subscriber =
        publish::signals::subscriber(&mqtt, topics_rx, signals.clone(), cancel.clone())
            .map_err(RunError::Mqtt)?;
    tracker.spawn(subscriber);
    let (publisher, pub_task) =
        publish::start(&mqtt, status.clone(), store.clone(), pub_cancel.clone())
            .map_err(RunError::Mqtt)?;
    let evidence = if let Some(signer) = signer {
        let ev = crate::evidence::Evidence::open(
            cfg.evidence_place(),
            signer,
            store.clone(),
            publisher.clone(),
        )?;
        info!(dir = %ev.dir.display(), public_key = %ev.public_key_hex(), "evidence enabled");
        Some(ev)
    } else {
        None
    };
    let ready = Arc::new(AtomicBool::new(false));
    // Reload requests: SIGHUP (from the command) and saves from the setup page.
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<()>(4);
    if let Some(ext) = reload.take() {
        tracker.spawn(forward_reloads(ext, reload_tx.clone(), cancel.clone()));
    }
    let snapshots = Arc::new(crate::http::setup::Snapshots::default());
    let running_cfg = Arc::new(std::sync::RwLock::new(cfg.clone()));
    let http_cancel = CancellationToken::new();
    let setup = Arc::new(crate::http::setup::SetupState {
        config_path: config_path.clone(),
        running: running_cfg.clone(),
        snapshots: snapshots.clone(),
        reload: reload_tx.clone(),
        lock: tokio::sync::Mutex::new(()),
    });
    let http_state = |users, tls| crate::http::HttpState {
        evidence: evidence.clone(),
        users: Arc::new(users),
        tls,
        conns: Default::default(),
        status: status.clone(),
        ready: ready.clone(),
        setup: Some(setup),
        logins: Default::default(),
        signals: Some(signals.clone()),
        time_zone: crate::config::site_time_zone(&cfg).name().to_string(),
    };
    let http_task = start_http(&cfg, http_state, http_cancel.clone()).await?;
    let sh = Arc::new(Shared {
        agent_id: cfg.agent_id.get_ref().clone(),
        plates: plate_setup(&cfg, evidence.is_some(), &detectors),
        detectors,
        default_model: cfg.models.first().map(|m| m.name.get_ref().clone()),
        publisher,
        status: status.clone(),
        signals: Some(signals.clone()),
        evidence,
        evidence_cfg: cfg.evidence.clone(),
        time_zone: crate::config::site_time_zone(&cfg),
        snapshots,
        enabled_cameras: AtomicUsize::new(cfg.cameras.iter().filter(|c| c.enabled).count()),
        opener: Arc::new(crate::source::RtspOpener),
    });
    let mut cameras = Cameras {
        sh,
        running: BTreeMap::new(),
        tracker: tracker.clone(),
        cancel: cancel.child_token(),
        signal_topics,
    };
    for cam in cfg.cameras.iter().filter(|c| c.enabled) {
        cameras.start(cam);
    }
    ready.store(true, Ordering::Relaxed);
    crate::notify::ready();
    info!(
        agent_id = %cfg.agent_id.get_ref(),
        cameras = cameras.running.len(),
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
                    current = cameras.reload(path, current).await;
                    if let Ok(mut r) = running_cfg.write() {
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
    cameras.stop_all().await;
    http_cancel.cancel();
    if let Some(t) = http_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    pub_cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), pub_task).await;
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(2), tracker.wait())
        .await
        .is_err()
    {
        warn!(left = tracker.len(), "tasks still running at exit");
    }
    Ok(())
}
