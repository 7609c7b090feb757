//! The camera task driven by an injected source: real footage, the real
//! decoder and model, no network. Needs the models (`make models`) and
//! ONNX Runtime (`ORT_DYLIB_PATH`), as `make test` provides.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, atomic::AtomicUsize as Count};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{Camera, Shared, supervise};
use crate::config::Config;
use crate::decode::Codec;
use crate::publish::StatusBoard;
use crate::publish::payload::CameraState;
use crate::source::{EncodedFrame, Opener, SourceError, Stream, StreamInfo, is_random_access};

const CLIP: &str = "../shared/videos/opencv4nodejs_traffic.mp4";

/// The clip's access units, paced like a live camera; panics at unit
/// `panic_at` when set (a bug in a session).
struct ClipStream {
    codec: Codec,
    units: Arc<Vec<(Vec<u8>, u64)>>,
    next: usize,
    started: Instant,
    panic_at: Option<usize>,
    /// Ends the stream as soon as this says so (checked every millisecond).
    end_when: Option<EndWhen>,
}

type EndWhen = Arc<dyn Fn() -> bool + Send + Sync>;

impl Stream for ClipStream {
    fn info(&self) -> StreamInfo {
        StreamInfo {
            codec: self.codec,
            url: "test://clip".into(),
            resolution: None,
            transport: "tcp",
        }
    }
    fn next_frame(&mut self) -> BoxFuture<'_, Result<EncodedFrame, SourceError>> {
        Box::pin(async move {
            if self.panic_at == Some(self.next) {
                panic!("injected fault at unit {}", self.next);
            }
            let Some((data, pts)) = self.units.get(self.next).cloned() else {
                return Err(SourceError::Ended {
                    url: "test://clip".into(),
                });
            };
            self.next += 1;
            let due = self.started + Duration::from_nanos(pts);
            match &self.end_when {
                None => tokio::time::sleep_until(due.into()).await,
                Some(end) => loop {
                    if end() {
                        return Err(SourceError::Ended {
                            url: "test://clip".into(),
                        });
                    }
                    if Instant::now() >= due {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                },
            }
            Ok(EncodedFrame {
                keyframe: is_random_access(self.codec, &data),
                data,
                pts_ns: pts,
            })
        })
    }
}

struct ClipOpener {
    codec: Codec,
    units: Arc<Vec<(Vec<u8>, u64)>>,
    panic_at: Option<usize>,
    opens: Arc<Count>,
    end_when: Option<EndWhen>,
}

impl Opener for ClipOpener {
    fn open<'a>(
        &'a self,
        _url: &'a str,
        _connect: Duration,
        _inactivity: Duration,
        _transport: crate::source::RtspTransport,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, SourceError>> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        let s = ClipStream {
            codec: self.codec,
            units: self.units.clone(),
            next: 0,
            started: Instant::now(),
            panic_at: self.panic_at,
            end_when: self.end_when.clone(),
        };
        Box::pin(async move { Ok(Box::new(s) as Box<dyn Stream>) })
    }
}

const CONFIG: &str = r#"
agent_id = "unit"
data_dir = "DATA"
model_dir = "data/models"
[mqtt]
url = "mqtt://127.0.0.1:9"
[[models]]
name = "yolox_nano"
[[cameras]]
id = "cam"
url = "rtsp://127.0.0.1:9/cam"
backoff_min_secs = 0.1
backoff_max_secs = 0.2
"#;

/// A camera on the injected opener, with the real detector and publisher.
fn camera(panic_at: Option<usize>, dir: &Path) -> (Camera, Arc<Count>, CancellationToken) {
    camera_with(panic_at, dir, |_| {})
}

/// As [`camera`], with the clip's access units edited first.
fn camera_with(
    panic_at: Option<usize>,
    dir: &Path,
    edit: impl FnOnce(&mut Vec<(Vec<u8>, u64)>),
) -> (Camera, Arc<Count>, CancellationToken) {
    let mut units = clip_units();
    edit(&mut units);
    camera_on(
        Setup {
            panic_at,
            units,
            ..Setup::default()
        },
        dir,
    )
}

fn clip_units() -> Vec<(Vec<u8>, u64)> {
    let clip = crate::simulate::Clip::load(Path::new(CLIP)).unwrap();
    let mut units = Vec::new();
    clip.for_each_unit(|d, pts| units.push((d.to_vec(), pts)));
    units
}

/// What a test camera is made of besides the base config.
#[derive(Default)]
struct Setup {
    panic_at: Option<usize>,
    units: Vec<(Vec<u8>, u64)>,
    /// TOML appended to the camera (zones, rules).
    camera_toml: &'static str,
    /// Evidence on (a local key in the data dir).
    evidence: bool,
    end_when: Option<EndWhen>,
}

fn camera_on(setup: Setup, dir: &Path) -> (Camera, Arc<Count>, CancellationToken) {
    let mut text = CONFIG.replace("DATA", &dir.display().to_string());
    text.push_str(setup.camera_toml);
    let cfg = Config::parse(&text, Path::new("unit.toml"), Path::new(".")).unwrap();
    let opens = Arc::new(Count::new(0));
    let detectors = Arc::new(super::super::load_detectors(&cfg).unwrap());
    let status = Arc::new(StatusBoard::new("unit"));
    let store = Arc::new(
        crate::store::Store::open(
            dir,
            crate::store::Limits {
                max_rows: 100,
                max_bytes: 1 << 24,
            },
        )
        .unwrap(),
    );
    let cancel = CancellationToken::new();
    let (publisher, _task) = crate::publish::start(
        &cfg.mqtt_settings().unwrap(),
        status.clone(),
        store.clone(),
        cancel.clone(),
    )
    .unwrap();
    let evidence = setup.evidence.then(|| {
        let key = crate::evidence::sign::load_or_create_key(&cfg.key_path()).unwrap();
        crate::evidence::Evidence::open(
            cfg.evidence_place(),
            crate::evidence::signer::Signer::Local(key),
            store.clone(),
            publisher.clone(),
        )
        .unwrap()
    });
    let sh = Arc::new(Shared {
        agent_id: "unit".into(),
        detectors,
        default_model: Some("yolox_nano".into()),
        publisher,
        status,
        signals: None,
        evidence,
        plates: None,
        evidence_cfg: cfg.evidence.clone(),
        time_zone: chrono_tz::Asia::Ho_Chi_Minh,
        snapshots: Default::default(),
        enabled_cameras: AtomicUsize::new(1),
        opener: Arc::new(ClipOpener {
            codec: Codec::H264,
            units: Arc::new(setup.units),
            panic_at: setup.panic_at,
            opens: opens.clone(),
            end_when: setup.end_when,
        }),
    });
    let cam = Camera::new(&sh, &cfg.cameras[0], cancel.child_token()).unwrap();
    (cam, opens, cancel)
}

async fn wait(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_footage_goes_through_decoder_and_model() {
    let dir = tempfile::tempdir().unwrap();
    let (cam, opens, cancel) = camera(None, dir.path());
    let counters = cam.counters.clone();
    let status = cam.sh.status.clone();
    let task = tokio::spawn(supervise(cam));
    wait("10 analysed frames", 60, || {
        counters.inferred.load(Ordering::Relaxed) >= 10
    })
    .await;
    let s = status.snapshot()["cam"].clone();
    assert_eq!(s.state, CameraState::Streaming);
    assert_eq!(s.codec.as_deref(), Some("h264"));
    assert_eq!(opens.load(Ordering::SeqCst), 1);
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(status.snapshot()["cam"].state, CameraState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_session_is_shown_failed_counted_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let (cam, opens, cancel) = camera(Some(5), dir.path());
    let status = cam.sh.status.clone();
    let task = tokio::spawn(supervise(cam));
    let panics = || status.snapshot().get("cam").map_or(0, |s| s.panics);
    wait("two panics", 30, || panics() >= 2).await;
    let s = status.snapshot()["cam"].clone();
    let err = s.last_error.unwrap_or_default();
    assert!(
        err.contains("camera task panicked: injected fault at unit 5"),
        "{err}"
    );
    // Restarted after each panic: the source was opened again.
    assert!(opens.load(Ordering::SeqCst) >= 2);
    cancel.cancel();
    // The supervisor itself survived the panics and stops cleanly.
    task.await.unwrap();
    assert_eq!(status.snapshot()["cam"].state, CameraState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_access_unit_is_dropped_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (cam, opens, cancel) = camera_with(None, dir.path(), |u| {
        u[30].0 = vec![0x41; crate::decode::MAX_ACCESS_UNIT_BYTES + 1];
    });
    let counters = cam.counters.clone();
    let status = cam.sh.status.clone();
    let task = tokio::spawn(supervise(cam));
    wait(
        "the oversized unit dropped and 10 frames analysed after it",
        60,
        || {
            counters.oversized.load(Ordering::Relaxed) == 1
                && counters.inferred.load(Ordering::Relaxed) >= 10
                && counters.received.load(Ordering::Relaxed) > 80
        },
    )
    .await;
    assert_eq!(opens.load(Ordering::SeqCst), 1, "the session was not ended");
    let s = status.snapshot()["cam"].clone();
    assert_eq!(s.state, CameraState::Streaming);
    cancel.cancel();
    task.await.unwrap();
}

/// A stream that ends the moment an alert is raised (the camera dropping
/// off the network just then): the alert's evidence is still built. Before,
/// the session dropped the analysis mid-alert and the package was never
/// submitted, though the alert had promised it (`evidence_pending`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_raised_as_the_stream_ends_keeps_its_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = Arc::new(std::sync::OnceLock::<Arc<StatusBoard>>::new());
    let seen = alerts.clone();
    let end: EndWhen = Arc::new(move || {
        seen.get()
            .and_then(|b| b.snapshot().get("cam").map(|s| s.alerts))
            .is_some_and(|n| n >= 1)
    });
    let (cam, opens, cancel) = camera_on(
        Setup {
            units: clip_units(),
            camera_toml: r#"
[[cameras.zones]]
name = "all"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
[[cameras.rules]]
name = "vehicle"
kind = "zone_enter"
zone = "all"
classes = ["car", "truck", "bus"]
"#,
            evidence: true,
            end_when: Some(end),
            ..Setup::default()
        },
        dir.path(),
    );
    let status = cam.sh.status.clone();
    let _ = alerts.set(status.clone());
    let ev = cam.sh.evidence.clone().unwrap();
    let task = tokio::spawn(supervise(cam));
    wait("the stream ended by the first alert", 60, || {
        opens.load(Ordering::SeqCst) >= 2
    })
    .await;
    cancel.cancel();
    task.await.unwrap();
    wait("evidence built", 30, || {
        ev.counters.pending.load(Ordering::Relaxed) == 0
    })
    .await;
    let raised = status.snapshot()["cam"].alerts;
    let c = &ev.counters;
    let built = c.sealed.load(Ordering::Relaxed)
        + c.failed.load(Ordering::Relaxed)
        + c.dropped.load(Ordering::Relaxed);
    assert!(raised >= 1, "no alert was raised");
    assert_eq!(
        built, raised,
        "{raised} alerts promised evidence, {built} packages were built or counted"
    );
}
