//! Model manifests: where a model comes from, how to prove it is the right
//! file, and how to feed it and read it. One `models/<name>.toml` per model.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Short name; must match the manifest's file name.
    pub name: String,
    /// Model version reported in alerts.
    pub version: String,
    /// File name in the model cache and in a mirror folder.
    pub file: String,
    /// Download URL, pinned to a commit.
    pub url: String,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
    /// SPDX licence of the weights.
    pub license: String,
    /// Free text: where the weights come from.
    #[serde(default)]
    pub source: String,
    pub input: InputSpec,
    pub output: OutputSpec,
    /// Class labels in output order.
    pub labels: Vec<String>,
}

/// Where the resized picture sits on the model's canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Letterbox {
    /// Keep aspect, paste at the top-left corner (YOLOX).
    TopLeft,
    /// Keep aspect, centre on the canvas (NanoDet, YOLOv5).
    Center,
    /// Stretch to the canvas, aspect not kept.
    Stretch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorOrder {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    Nchw,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input tensor name.
    pub name: String,
    /// `[1, 3, height, width]`.
    pub shape: [usize; 4],
    pub layout: Layout,
    pub color: ColorOrder,
    pub letterbox: Letterbox,
    /// Pad value in pixel units (0..255), before normalisation.
    #[serde(default)]
    pub pad: f32,
    /// Per channel (in `color` order), in pixel units: `(x - mean) / std`.
    #[serde(default = "zero3")]
    pub mean: [f32; 3],
    #[serde(default = "one3")]
    pub std: [f32; 3],
}

fn zero3() -> [f32; 3] {
    [0.0; 3]
}
fn one3() -> [f32; 3] {
    [1.0; 3]
}

impl InputSpec {
    pub fn width(&self) -> usize {
        self.shape[3]
    }
    pub fn height(&self) -> usize {
        self.shape[2]
    }
}

/// How to turn the model's output tensors into boxes.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "decoder", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputSpec {
    /// YOLOX: one `[1, N, 5 + classes]` tensor of grid offsets, log sizes,
    /// objectness and class scores (sigmoided), over `strides`.
    Yolox {
        name: String,
        strides: Vec<usize>,
        #[serde(default = "default_score")]
        score_threshold: f32,
        #[serde(default = "default_iou")]
        nms_iou: f32,
    },
    /// NanoDet: per stride a `[1, N, classes]` score tensor and a
    /// `[1, N, 4 * (reg_max + 1)]` distribution (DFL) tensor.
    Nanodet {
        cls: Vec<String>,
        reg: Vec<String>,
        strides: Vec<usize>,
        reg_max: usize,
        #[serde(default = "default_score")]
        score_threshold: f32,
        #[serde(default = "default_iou")]
        nms_iou: f32,
    },
    /// An image classifier: one `[1, classes]` tensor of scores, for cascades
    /// on crops (e.g. helmet / no_helmet on motorbike riders) or whole frames
    /// (fire / smoke, fight).
    /// YOLOv5 with four corner points per box (HyperLPR3 plate detector): one
    /// `[1, N, 13 + classes]` tensor of decoded cx, cy, w, h (input pixels),
    /// objectness, 4 corners (x, y) and class scores.
    Yolov5Corners {
        name: String,
        #[serde(default = "default_score")]
        score_threshold: f32,
        #[serde(default = "default_iou")]
        nms_iou: f32,
    },
    /// A text line recogniser with CTC output (PaddleOCR): one `[1, T, C]`
    /// tensor of per-step probabilities; index 0 is the CTC blank, 1..=labels
    /// are `labels`, the last index is a space.
    Ctc { name: String },
    Classifier {
        name: String,
        /// `softmax` (logits), `sigmoid` (independent logits) or `none` (already probabilities).
        #[serde(default)]
        activation: Activation,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Softmax,
    Sigmoid,
    #[default]
    None,
}

impl OutputSpec {
    pub fn score_threshold(&self) -> f32 {
        match self {
            OutputSpec::Classifier { .. } | OutputSpec::Ctc { .. } => 0.0,
            OutputSpec::Yolov5Corners {
                score_threshold, ..
            }
            | OutputSpec::Yolox {
                score_threshold, ..
            }
            | OutputSpec::Nanodet {
                score_threshold, ..
            } => *score_threshold,
        }
    }
    pub fn nms_iou(&self) -> f32 {
        match self {
            OutputSpec::Classifier { .. } | OutputSpec::Ctc { .. } => 1.0,
            OutputSpec::Yolox { nms_iou, .. }
            | OutputSpec::Nanodet { nms_iou, .. }
            | OutputSpec::Yolov5Corners { nms_iou, .. } => *nms_iou,
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            OutputSpec::Classifier { .. } => "classifier",
            OutputSpec::Yolox { .. } => "yolox",
            OutputSpec::Nanodet { .. } => "nanodet",
            OutputSpec::Yolov5Corners { .. } => "yolov5_corners",
            OutputSpec::Ctc { .. } => "ctc",
        }
    }
}

fn default_score() -> f32 {
    0.3
}
fn default_iou() -> f32 {
    0.45
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read model manifest {path}: {err} — check manifest_dir in the config")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("model manifest {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|err| ManifestError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks manifest text; `path` names it in errors and its
    /// stem must equal the manifest's `name`.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let m: Manifest = toml::from_str(text).map_err(|e| {
            let (l, c) = crate::base::diag::line_col(text, e.span().map(|s| s.start).unwrap_or(0));
            invalid(format!("line {l} column {c}: {}", e.message().trim()))
        })?;
        if path.file_stem().is_some_and(|s| s != m.name.as_str()) {
            return Err(invalid(format!(
                "name '{}' must match the file name ({}.toml)",
                m.name,
                path.file_stem()
                    .map(|s| s.to_string_lossy())
                    .unwrap_or_default()
            )));
        }
        if !(0.0..=1.0).contains(&m.output.score_threshold())
            || !(0.0..=1.0).contains(&m.output.nms_iou())
        {
            return Err(invalid(
                "output.score_threshold and output.nms_iou must be between 0 and 1".into(),
            ));
        }
        if m.sha256.len() != 64 || !m.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid("sha256 must be 64 hex digits".into()));
        }
        if m.file.contains('/') || m.file.contains("..") || m.file.is_empty() {
            return Err(invalid("file must be a plain file name".into()));
        }
        if m.input.shape[0] != 1
            || m.input.shape[1] != 3
            || m.input.width() == 0
            || m.input.height() == 0
        {
            return Err(invalid("input.shape must be [1, 3, height, width]".into()));
        }
        if m.input.std.contains(&0.0) {
            return Err(invalid("input.std must not contain 0".into()));
        }
        if m.labels.is_empty() {
            return Err(invalid("labels must not be empty".into()));
        }
        match &m.output {
            OutputSpec::Yolox { strides, .. } if strides.is_empty() => {
                return Err(invalid("output.strides must not be empty".into()));
            }
            OutputSpec::Nanodet {
                cls, reg, strides, ..
            } if cls.len() != strides.len() || reg.len() != strides.len() => {
                return Err(invalid(
                    "output.cls, output.reg and output.strides must have the same length".into(),
                ));
            }
            _ => {}
        }
        Ok(m)
    }
}
