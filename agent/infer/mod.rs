//! Model layer: manifests, the ONNX Runtime library, sessions on dedicated
//! threads, fused preprocessing and output decoders.

pub mod manifest;
pub mod postprocess;
pub mod preprocess;
pub mod pull;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ort::session::Session;
use ort::value::TensorRef;
use tokio::sync::oneshot;

use crate::config::ORT_VERSION;
use crate::decode::Frame;
use manifest::{Manifest, OutputSpec};
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
}

impl Detector {
    /// Verifies the file against the manifest and opens a session.
    /// [`init_runtime`] must have succeeded first.
    pub fn load(
        env: &ort::environment::Environment,
        manifest: Manifest,
        model_path: &Path,
        intra_threads: usize,
        threshold: Option<f32>,
    ) -> Result<Detector, InferError> {
        verify_model_file(&manifest, model_path)?;
        let err = |e: String| InferError::Session {
            path: model_path.to_path_buf(),
            reason: e,
        };
        let mut builder = Session::builder(env)
            .map_err(|e| err(e.to_string()))?
            .with_intra_threads(intra_threads)
            .map_err(|e| err(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| err(e.to_string()))?;
        let session = builder
            .commit_from_file(model_path)
            .map_err(|e| err(e.to_string()))?;
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
        let spec = &self.manifest.input;
        let (mw, mh) = (spec.width(), spec.height());
        let t = match region {
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
        };
        let name = self.manifest.name.clone();
        let run_err = |e: String| InferError::Run {
            model: name.clone(),
            reason: e,
        };
        let tensor = TensorRef::from_array_view((spec.shape, self.input.as_slice()))
            .map_err(|e| run_err(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![spec.name.as_str() => tensor])
            .map_err(|e| run_err(e.to_string()))?;
        let ncls = self.manifest.labels.len();
        let get = |n: &str| -> Result<&[f32], InferError> {
            let v = outputs.get(n).ok_or_else(|| {
                run_err(format!(
                    "the model has no output '{n}'; fix the manifest's output names"
                ))
            })?;
            let (_, data) = v
                .try_extract_tensor::<f32>()
                .map_err(|e| run_err(e.to_string()))?;
            Ok(data)
        };
        let candidates = match &self.manifest.output {
            OutputSpec::Classifier { name, activation } => {
                let raw = get(name)?;
                if raw.len() != ncls {
                    return Err(run_err(format!(
                        "classifier output has {} scores but the manifest has {ncls} labels",
                        raw.len()
                    )));
                }
                return Ok(Output {
                    detections: Vec::new(),
                    scores: postprocess::activate(raw, *activation),
                    text: None,
                    corners: Vec::new(),
                });
            }
            OutputSpec::Ctc { name } => {
                let v = outputs.get(name).ok_or_else(|| {
                    run_err(format!(
                        "the model has no output '{name}'; fix the manifest's output names"
                    ))
                })?;
                let (shape, data) = v
                    .try_extract_tensor::<f32>()
                    .map_err(|e| run_err(e.to_string()))?;
                if shape.len() != 3 || shape[2] as usize != ncls + 2 {
                    return Err(run_err(format!(
                        "CTC output shape {shape:?} does not fit {ncls} labels + blank + space"
                    )));
                }
                let text = crate::evidence::plate::ctc_greedy(
                    data,
                    shape[1] as usize,
                    shape[2] as usize,
                    &self.manifest.labels,
                );
                return Ok(Output {
                    detections: Vec::new(),
                    scores: Vec::new(),
                    text: Some(text),
                    corners: Vec::new(),
                });
            }
            OutputSpec::Yolov5Corners { name, nms_iou, .. } => {
                let cands = postprocess::decode_yolov5_corners(get(name)?, ncls, self.threshold)
                    .map_err(run_err)?;
                let kept = postprocess::nms(cands.iter().map(|c| c.0).collect(), *nms_iou);
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
                    let one = postprocess::to_frame(vec![d], &t, frame.width, frame.height);
                    if let Some(d) = one.into_iter().next() {
                        dets.push(d);
                        corners.push(fq);
                    }
                }
                return Ok(Output {
                    detections: dets,
                    scores: Vec::new(),
                    text: None,
                    corners,
                });
            }
            OutputSpec::Yolox { name, strides, .. } => {
                postprocess::decode_yolox(get(name)?, ncls, strides, mw, mh, self.threshold)
                    .map_err(run_err)?
            }
            OutputSpec::Nanodet {
                cls,
                reg,
                strides,
                reg_max,
                ..
            } => {
                let mut out = Vec::new();
                for ((c, r), s) in cls.iter().zip(reg).zip(strides) {
                    postprocess::decode_nanodet_level(
                        get(c)?,
                        get(r)?,
                        ncls,
                        *reg_max,
                        *s,
                        mw,
                        self.threshold,
                        &mut out,
                    )
                    .map_err(run_err)?;
                }
                out
            }
        };
        let kept = postprocess::nms(candidates, self.manifest.output.nms_iou());
        Ok(Output {
            detections: postprocess::to_frame(kept, &t, frame.width, frame.height),
            scores: Vec::new(),
            text: None,
            corners: Vec::new(),
        })
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

type Job = (
    Arc<Frame>,
    Region,
    oneshot::Sender<Result<Inference, InferError>>,
);

/// A detector running on its own OS thread; cameras share it through this
/// cheap handle. Requests queue in a bounded channel (each camera has at most
/// one request in flight, so the bound is never the limiting factor).
#[derive(Clone)]
pub struct DetectorHandle {
    pub manifest: Arc<Manifest>,
    tx: std::sync::mpsc::SyncSender<Job>,
}

impl DetectorHandle {
    pub fn spawn(mut det: Detector, queue: usize) -> DetectorHandle {
        let manifest = Arc::new(det.manifest.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(queue.max(1));
        let name = format!("infer-{}", det.manifest.name);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            while let Ok((frame, region, reply)) = rx.recv() {
                let start = Instant::now();
                let res = det.run_region(&frame, region).map(|o| Inference {
                    detections: o.detections,
                    scores: o.scores,
                    text: o.text,
                    corners: o.corners,
                    millis: start.elapsed().as_secs_f64() * 1e3,
                });
                let _ = reply.send(res);
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start inference thread");
        }
        DetectorHandle { manifest, tx }
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
        let (rtx, rrx) = oneshot::channel();
        let stopped = || InferError::Stopped(self.manifest.name.clone());
        // try_send first; fall back to a blocking send off the async workers.
        match self.tx.try_send((frame, region, rtx)) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || tx.send(job))
                    .await
                    .map_err(|_| stopped())?
                    .map_err(|_| stopped())?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(stopped()),
        }
        rrx.await.map_err(|_| stopped())?
    }
}
