//! Model layer: manifests, the ONNX Runtime library, sessions on dedicated
//! threads, fused preprocessing and output decoders.

pub mod manifest;
pub mod postprocess;
pub mod preprocess;
pub mod providers;
pub mod pull;
pub mod sched;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ort::session::{Session, SessionOutputs};
use ort::value::{Shape, TensorRef};
use tokio::sync::oneshot;

use crate::decode::Frame;

/// The version of ONNX Runtime this build targets.
pub const ORT_VERSION: &str = "1.31.1";
use manifest::{Activation, Manifest, OutputSpec};
pub use postprocess::Detection;

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(
        "cannot load the ONNX Runtime library {path}: {reason} — ioc-agent needs ONNX Runtime {ORT_VERSION}; install it (`make ort`, or the `onnxruntime=={ORT_VERSION}` wheel's capi/libonnxruntime.so.{ORT_VERSION}) and set `onnxruntime = \"/path/to/libonnxruntime.so.{ORT_VERSION}\"` in the config or ORT_DYLIB_PATH"
    )]
    Runtime { path: PathBuf, reason: String },
    #[error(
        "model file {path} is missing — run `ioc-agent models pull --config <config> [--mirror DIR]` to fetch and verify it"
    )]
    MissingModel { path: PathBuf },
    #[error("cannot read model file {path}: {err}")]
    ReadModel { path: PathBuf, err: std::io::Error },
    #[error(
        "model file {path} is corrupt or not the expected version: sha256 {actual}, manifest expects {expected} — delete it and run `ioc-agent models pull`"
    )]
    Checksum {
        path: PathBuf,
        actual: String,
        expected: String,
    },
    #[error("ONNX Runtime could not load model {path}: {reason}")]
    Session { path: PathBuf, reason: String },
    #[error("model {model}: {reason}")]
    Run { model: String, reason: String },
    #[error("the inference thread of model {0} has stopped")]
    Stopped(String),
}

static RUNTIME: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loads the ONNX Runtime shared library once per process. A missing or wrong
/// library is an error naming the path and the version needed, never a panic.
pub fn init_runtime(path: &Path) -> Result<&'static ort::environment::Environment, InferError> {
    let res = RUNTIME.get_or_init(|| {
        let builder = ort::init_from(path).map_err(|e| e.to_string())?;
        builder
            .with_name("ioc-agent")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())
    });
    match res {
        Ok(env) => Ok(env),
        Err(reason) => Err(InferError::Runtime {
            path: path.to_path_buf(),
            reason: reason.clone(),
        }),
    }
}

/// sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Checks that the model file exists and matches the manifest's sha256.
pub fn verify_model_file(manifest: &Manifest, path: &Path) -> Result<(), InferError> {
    if !path.exists() {
        return Err(InferError::MissingModel {
            path: path.to_path_buf(),
        });
    }
    let actual = sha256_file(path).map_err(|err| InferError::ReadModel {
        path: path.to_path_buf(),
        err,
    })?;
    if !actual.eq_ignore_ascii_case(&manifest.sha256) {
        return Err(InferError::Checksum {
            path: path.to_path_buf(),
            actual,
            expected: manifest.sha256.clone(),
        });
    }
    Ok(())
}

/// A detector: one ONNX Runtime session plus the manifest's pre/post-processing.
pub struct Detector {
    pub manifest: Manifest,
    session: Session,
    input: Vec<f32>,
    threshold: f32,
    /// Which execution providers run it, and why others did not
    /// (e.g. `cpu; cuda skipped: not built into this ONNX Runtime library`).
    pub provider: String,
}

impl Detector {
    /// Verifies the file against the manifest and opens a CPU session.
    /// [`init_runtime`] must have succeeded first.
    pub fn load(
        env: &ort::environment::Environment,
        manifest: Manifest,
        model_path: &Path,
        intra_threads: usize,
        threshold: Option<f32>,
    ) -> Result<Detector, InferError> {
        Self::load_on(
            env,
            manifest,
            model_path,
            intra_threads,
            threshold,
            &[providers::Provider::Cpu],
        )
    }

    /// Like [`Detector::load`], on the first execution providers of
    /// `preferred` that this ONNX Runtime library has and that start; the
    /// CPU provider is always the last resort.
    pub fn load_on(
        env: &ort::environment::Environment,
        manifest: Manifest,
        model_path: &Path,
        intra_threads: usize,
        threshold: Option<f32>,
        preferred: &[providers::Provider],
    ) -> Result<Detector, InferError> {
        verify_model_file(&manifest, model_path)?;
        let err = |e: String| InferError::Session {
            path: model_path.to_path_buf(),
            reason: e,
        };
        let base = || {
            Session::builder(env)
                .map_err(|e| err(e.to_string()))?
                .with_intra_threads(intra_threads)
                .map_err(|e| err(e.to_string()))?
                .with_inter_threads(1)
                .map_err(|e| err(e.to_string()))
        };
        let plan = providers::plan(preferred, &providers::available());
        let mut skipped = plan.skipped.clone();
        let (mut builder, mut chosen, failed) = providers::register(base()?, &plan);
        skipped.extend(failed);
        let session = match builder.commit_from_file(model_path) {
            Ok(s) => s,
            Err(e) if !chosen.is_empty() => {
                // An accelerator registered but the session would not start on
                // it (e.g. an operator it lacks, no device): run on the CPU.
                for p in chosen.drain(..) {
                    skipped.push((p, format!("the session failed on it: {e}")));
                }
                base()?
                    .commit_from_file(model_path)
                    .map_err(|e| err(e.to_string()))?
            }
            Err(e) => return Err(err(e.to_string())),
        };
        let provider = providers::describe(&chosen, &skipped);
        if !session
            .inputs()
            .iter()
            .any(|i| i.name() == manifest.input.name)
        {
            let names: Vec<_> = session
                .inputs()
                .iter()
                .map(|i| i.name().to_string())
                .collect();
            return Err(err(format!(
                "the model has no input '{}' (it has {names:?}); fix input.name in the manifest",
                manifest.input.name
            )));
        }
        let threshold = threshold.unwrap_or(manifest.output.score_threshold());
        Ok(Detector {
            manifest,
            session,
            input: Vec::new(),
            threshold,
            provider,
        })
    }

    /// Runs the model on one frame; boxes come back in frame pixels.
    pub fn detect(&mut self, frame: &Frame) -> Result<Vec<Detection>, InferError> {
        Ok(self.run(frame, None)?.detections)
    }

    /// Runs the model on the whole frame or on a crop `[x, y, w, h]`
    /// (pixels). Detectors return boxes in frame pixels; classifiers return
    /// one score per label.
    pub fn run(&mut self, frame: &Frame, crop: Option<[usize; 4]>) -> Result<Output, InferError> {
        self.run_region(frame, crop.map_or(Region::Full, Region::Crop))
    }

    /// Runs the model on a region of the frame.
    pub fn run_region(&mut self, frame: &Frame, region: Region) -> Result<Output, InferError> {
        let t = self.prepare(frame, region);
        let spec = &self.manifest.input;
        let model = self.manifest.name.as_str();
        let tensor = TensorRef::from_array_view((spec.shape, self.input.as_slice()))
            .map_err(|e| run_error(model, e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![spec.name.as_str() => tensor])
            .map_err(|e| run_error(model, e.to_string()))?;
        let out = Outputs {
            outputs: &outputs,
            model,
        };
        decode_outputs(&self.manifest, self.threshold, &out, &t, frame)
    }

    /// Fills the input tensor from the region; the transform from model
    /// pixels back to frame pixels.
    fn prepare(&mut self, frame: &Frame, region: Region) -> preprocess::Transform {
        let spec = &self.manifest.input;
        match region {
            Region::Full => preprocess::i420_crop_to_tensor(frame, None, spec, &mut self.input),
            Region::Crop(c) => {
                preprocess::i420_crop_to_tensor(frame, Some(c), spec, &mut self.input)
            }
            Region::Quad(q, aspect) => {
                preprocess::i420_quad_to_tensor(frame, q, aspect, spec, &mut self.input);
                preprocess::Transform {
                    scale_x: 1.0,
                    scale_y: 1.0,
                    pad_x: 0.0,
                    pad_y: 0.0,
                }
            }
        }
    }
}

fn run_error(model: &str, reason: String) -> InferError {
    InferError::Run {
        model: model.to_string(),
        reason,
    }
}

/// A session's outputs, looked up by the manifest's names.
struct Outputs<'a, 'r> {
    outputs: &'a SessionOutputs<'r>,
    model: &'a str,
}

impl<'a> Outputs<'a, '_> {
    fn err(&self, reason: String) -> InferError {
        run_error(self.model, reason)
    }

    fn tensor(&self, n: &str) -> Result<(&'a Shape, &'a [f32]), InferError> {
        let v = self.outputs.get(n).ok_or_else(|| {
            self.err(format!(
                "the model has no output '{n}'; fix the manifest's output names"
            ))
        })?;
        v.try_extract_tensor::<f32>()
            .map_err(|e| self.err(e.to_string()))
    }

    fn f32s(&self, n: &str) -> Result<&'a [f32], InferError> {
        Ok(self.tensor(n)?.1)
    }
}

/// Turns the outputs into what the manifest's output decoder says: scores,
/// text, boxes with corners, or boxes (after NMS, in frame pixels).
fn decode_outputs(
    manifest: &Manifest,
    threshold: f32,
    out: &Outputs,
    t: &preprocess::Transform,
    frame: &Frame,
) -> Result<Output, InferError> {
    let ncls = manifest.labels.len();
    let (mw, mh) = (manifest.input.width(), manifest.input.height());
    let candidates = match &manifest.output {
        OutputSpec::Classifier { name, activation } => {
            return classifier_scores(out, name, *activation, ncls);
        }
        OutputSpec::Ctc { name } => return ctc_text(out, name, &manifest.labels),
        OutputSpec::Yolov5Corners { name, nms_iou, .. } => {
            let cands = postprocess::decode_yolov5_corners(out.f32s(name)?, ncls, threshold)
                .map_err(|e| out.err(e))?;
            return Ok(boxes_with_corners(&cands, *nms_iou, t, frame));
        }
        OutputSpec::Yolox { name, strides, .. } => {
            postprocess::decode_yolox(out.f32s(name)?, ncls, strides, mw, mh, threshold)
                .map_err(|e| out.err(e))?
        }
        OutputSpec::Nanodet {
            cls,
            reg,
            strides,
            reg_max,
            ..
        } => {
            let mut cands = Vec::new();
            for ((c, r), s) in cls.iter().zip(reg).zip(strides) {
                postprocess::decode_nanodet_level(
                    out.f32s(c)?,
                    out.f32s(r)?,
                    ncls,
                    *reg_max,
                    *s,
                    mw,
                    threshold,
                    &mut cands,
                )
                .map_err(|e| out.err(e))?;
            }
            cands
        }
    };
    let kept = postprocess::nms(candidates, manifest.output.nms_iou());
    Ok(Output {
        detections: postprocess::to_frame(kept, t, frame.width, frame.height),
        scores: Vec::new(),
        text: None,
        corners: Vec::new(),
    })
}

/// Classifier: one activated score per label.
fn classifier_scores(
    out: &Outputs,
    name: &str,
    activation: Activation,
    ncls: usize,
) -> Result<Output, InferError> {
    let raw = out.f32s(name)?;
    if raw.len() != ncls {
        return Err(out.err(format!(
            "classifier output has {} scores but the manifest has {ncls} labels",
            raw.len()
        )));
    }
    Ok(Output {
        detections: Vec::new(),
        scores: postprocess::activate(raw, activation),
        text: None,
        corners: Vec::new(),
    })
}

/// Text recogniser: greedy CTC over `[1, steps, labels + blank + space]`.
fn ctc_text(out: &Outputs, name: &str, labels: &[String]) -> Result<Output, InferError> {
    let ncls = labels.len();
    let (shape, data) = out.tensor(name)?;
    if shape.len() != 3 || shape[2] as usize != ncls + 2 {
        return Err(out.err(format!(
            "CTC output shape {shape:?} does not fit {ncls} labels + blank + space"
        )));
    }
    let text = postprocess::ctc_greedy(data, shape[1] as usize, shape[2] as usize, labels);
    Ok(Output {
        detections: Vec::new(),
        scores: Vec::new(),
        text: Some(text),
        corners: Vec::new(),
    })
}

/// Corner detector: the boxes NMS keeps, each with its 4 corners, both in
/// frame pixels.
fn boxes_with_corners(
    cands: &[(Detection, [f32; 8])],
    nms_iou: f32,
    t: &preprocess::Transform,
    frame: &Frame,
) -> Output {
    let kept = postprocess::nms(cands.iter().map(|c| c.0).collect(), nms_iou);
    let mut corners = Vec::new();
    let mut dets = Vec::new();
    for d in kept {
        let Some((_, q)) = cands
            .iter()
            .find(|(c, _)| c.bbox == d.bbox && c.score == d.score)
        else {
            continue;
        };
        let mut fq = [0f32; 8];
        for i in 0..4 {
            let (x, y) = t.to_frame(q[2 * i], q[2 * i + 1]);
            fq[2 * i] = x.clamp(0.0, frame.width as f32);
            fq[2 * i + 1] = y.clamp(0.0, frame.height as f32);
        }
        let one = postprocess::to_frame(vec![d], t, frame.width, frame.height);
        if let Some(d) = one.into_iter().next() {
            dets.push(d);
            corners.push(fq);
        }
    }
    Output {
        detections: dets,
        scores: Vec::new(),
        text: None,
        corners,
    }
}

/// What a model produced.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Detectors: boxes in frame pixels.
    pub detections: Vec<Detection>,
    /// Classifiers: one score per label.
    pub scores: Vec<f32>,
    /// Text recognisers: the text and its confidence.
    pub text: Option<(String, f32)>,
    /// Corner detectors: per detection, 4 corners (x, y) in frame pixels.
    pub corners: Vec<[f32; 8]>,
}

/// Result of one inference.
pub struct Inference {
    pub detections: Vec<Detection>,
    /// Classifier scores (one per label); empty for detectors.
    pub scores: Vec<f32>,
    /// Text recognisers: the text and its confidence.
    pub text: Option<(String, f32)>,
    /// Corner detectors: per detection, 4 corners (x, y) in frame pixels.
    pub corners: Vec<[f32; 8]>,
    pub millis: f64,
}

/// Which part of a frame a model looks at.
#[derive(Debug, Clone, Copy)]
pub enum Region {
    Full,
    /// `[x, y, w, h]` in frame pixels.
    Crop([usize; 4]),
    /// Four corners (top-left, top-right, bottom-right, bottom-left),
    /// rectified to the given width ÷ height (0: the quad's own).
    Quad([f32; 8], f32),
}

/// The newest decoded frame of a camera and its sequence number.
pub type LatestFrame = tokio::sync::watch::Receiver<Option<(u64, Arc<Frame>)>>;

/// What a job runs on: a given frame, or whatever frame is newest in the
/// camera's slot when a worker takes the job (so a frame never ages in the
/// queue: the wait for other cameras happens before the frame is chosen).
enum Input {
    Frame(Arc<Frame>),
    Latest(LatestFrame),
}

/// A result with the frame it was computed on and that frame's sequence
/// number (0 for a given frame).
type Reply = oneshot::Sender<Result<(Inference, u64, Arc<Frame>), InferError>>;

type Job = (Input, Region, Reply);

/// The queue between callers and a model's thread.
struct Shared {
    queue: std::sync::Mutex<sched::FairQueue<Job>>,
    ready: std::sync::Condvar,
    closed: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, sched::FairQueue<Job>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses new jobs, drops waiting ones (their callers get `Stopped`)
    /// and wakes the workers so they exit.
    fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        let mut q = self.lock();
        while q.pop().is_some() {}
        self.ready.notify_all();
    }
}

/// Closes the queue when dropped: held by the handles (the last one gone
/// stops the workers) and by each worker (a worker that ends, even by a
/// panic in the runtime, does not leave callers waiting).
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A detector running on its own OS thread; cameras share it through this
/// cheap handle. Each camera has at most one request in flight; which
/// camera's request runs next is decided by a weighted fair queue
/// ([`sched::FairQueue`]), so an overloaded model lowers every camera's
/// detection rate by its priority instead of building a queue.
#[derive(Clone)]
pub struct DetectorHandle {
    pub manifest: Arc<Manifest>,
    shared: Arc<Shared>,
    _close: Arc<CloseOnDrop>,
    /// The caller's flow (camera id) and weight.
    flow: (Arc<str>, f64),
}

impl DetectorHandle {
    /// Starts the model's inference thread.
    pub fn spawn(det: Detector) -> DetectorHandle {
        Self::spawn_pool(det, Vec::new())
    }

    /// Starts one inference thread per session (`first` and `more`, sessions
    /// of the same model); they take jobs from one fair queue, so cameras run
    /// on several cores without any camera getting more than its share.
    pub fn spawn_pool(first: Detector, more: Vec<Detector>) -> DetectorHandle {
        let manifest = Arc::new(first.manifest.clone());
        let dets: Vec<Detector> = std::iter::once(first).chain(more).collect();
        let shared = Arc::new(Shared {
            queue: std::sync::Mutex::new(sched::FairQueue::default()),
            ready: std::sync::Condvar::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        let workers = dets.len();
        for (i, mut det) in dets.into_iter().enumerate() {
            let name = if workers == 1 {
                format!("infer-{}", det.manifest.name)
            } else {
                format!("infer-{}-{i}", det.manifest.name)
            };
            let sh = shared.clone();
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                // However the thread ends (even by a panic in the runtime), close
                // the queue and drop waiting jobs so their callers get `Stopped`.
                let _guard = CloseOnDrop(sh.clone());
                loop {
                    let job = {
                        let mut q = sh.lock();
                        loop {
                            if let Some(j) = q.pop() {
                                break Some(j);
                            }
                            if sh.closed.load(std::sync::atomic::Ordering::Acquire) {
                                break None;
                            }
                            q = sh.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                        }
                    };
                    let Some((input, region, reply)) = job else {
                        return;
                    };
                    let (seq, frame) = match input {
                        Input::Frame(f) => (0, f),
                        Input::Latest(rx) => match rx.borrow().clone() {
                            Some(x) => x,
                            None => {
                                let _ = reply.send(Err(InferError::Run {
                                    model: det.manifest.name.clone(),
                                    reason: "no decoded frame yet".into(),
                                }));
                                continue;
                            }
                        },
                    };
                    let start = Instant::now();
                    let res = det.run_region(&frame, region).map(|o| {
                        let inf = Inference {
                            detections: o.detections,
                            scores: o.scores,
                            text: o.text,
                            corners: o.corners,
                            millis: start.elapsed().as_secs_f64() * 1e3,
                        };
                        (inf, seq, frame)
                    });
                    let _ = reply.send(res);
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start inference thread");
                shared.close();
            }
        }
        DetectorHandle {
            manifest,
            _close: Arc::new(CloseOnDrop(shared.clone())),
            shared,
            flow: (Arc::from(""), 1.0),
        }
    }

    /// The same model, with requests scheduled as camera `id` with weight
    /// `priority`.
    pub fn for_camera(&self, id: &str, priority: f64) -> DetectorHandle {
        let mut h = self.clone();
        h.flow = (Arc::from(id), priority);
        h
    }

    pub async fn detect(&self, frame: Arc<Frame>) -> Result<Inference, InferError> {
        self.infer(frame, None).await
    }

    /// Runs the model on the whole frame or a crop `[x, y, w, h]` in pixels.
    pub async fn infer(
        &self,
        frame: Arc<Frame>,
        crop: Option<[usize; 4]>,
    ) -> Result<Inference, InferError> {
        self.infer_region(frame, crop.map_or(Region::Full, Region::Crop))
            .await
    }

    /// Runs the model on any region (e.g. a plate's rectified quad).
    pub async fn infer_region(
        &self,
        frame: Arc<Frame>,
        region: Region,
    ) -> Result<Inference, InferError> {
        self.submit(Input::Frame(frame), region)
            .await
            .map(|(inf, _, _)| inf)
    }

    /// Runs the model on the whole of the newest frame in `latest` at the
    /// moment a worker is free for this camera; returns the result with that
    /// frame and its sequence number.
    pub async fn detect_latest(
        &self,
        latest: LatestFrame,
    ) -> Result<(Inference, u64, Arc<Frame>), InferError> {
        self.submit(Input::Latest(latest), Region::Full).await
    }

    async fn submit(
        &self,
        input: Input,
        region: Region,
    ) -> Result<(Inference, u64, Arc<Frame>), InferError> {
        let (rtx, rrx) = oneshot::channel();
        let stopped = || InferError::Stopped(self.manifest.name.clone());
        {
            let mut q = self.shared.lock();
            if self
                .shared
                .closed
                .load(std::sync::atomic::Ordering::Acquire)
            {
                return Err(stopped());
            }
            q.push(&self.flow.0, self.flow.1, (input, region, rtx));
        }
        self.shared.ready.notify_one();
        rrx.await.map_err(|_| stopped())?
    }
}
