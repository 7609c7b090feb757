//! Output decoders (sans-IO): raw model tensors → boxes in frame pixels.

use super::preprocess::Transform;

/// Greedy CTC decoding of a recogniser output laid out row-major
/// `[steps, classes]`, softmax already applied.
///
/// Class 0 is the CTC blank, classes `1..=dict.len()` are `dict[i - 1]` and
/// class `dict.len() + 1` is a space, which is dropped. The argmax of each step
/// is taken, repeats are collapsed, then blanks (and spaces, and any class past
/// the space) are dropped. Confidence is the mean of the step maxima of the kept
/// characters, 0.0 when nothing is kept. A short `probs` is read only as far as
/// its complete rows go.
pub fn ctc_greedy(probs: &[f32], steps: usize, classes: usize, dict: &[String]) -> (String, f32) {
    let mut text = String::new();
    if classes == 0 {
        return (text, 0.0);
    }
    let (mut sum, mut kept) = (0.0f32, 0usize);
    let mut prev = usize::MAX;
    for row in probs.chunks_exact(classes).take(steps) {
        let (mut best, mut best_p) = (0usize, row[0]);
        for (i, &p) in row.iter().enumerate().skip(1) {
            if p > best_p {
                best = i;
                best_p = p;
            }
        }
        if best != prev
            && best != 0
            && let Some(s) = dict.get(best - 1)
        {
            text.push_str(s);
            sum += best_p;
            kept += 1;
        }
        prev = best;
    }
    let conf = if kept == 0 { 0.0 } else { sum / kept as f32 };
    (text, conf)
}

/// One detected object, box in frame pixels `[x1, y1, x2, y2]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub class: usize,
    pub score: f32,
    pub bbox: [f32; 4],
}

/// Most candidates kept before NMS (highest scores first).
const MAX_CANDIDATES: usize = 2000;
/// Most detections kept after NMS.
const MAX_DETECTIONS: usize = 300;

/// YOLOX: `rows` is `[N, 5 + classes]` over the grids of `strides` on a
/// `mw`×`mh` canvas. Returns candidates in canvas pixels (before NMS).
/// Decodes a YOLOv5-with-corners output (HyperLPR3): rows of cx, cy, w, h
/// (input pixels), objectness, 4 corner points and class scores. Score =
/// objectness × best class score. Corners are not kept: crops are axis-aligned.
pub fn decode_yolov5_corners(
    rows: &[f32],
    num_classes: usize,
    threshold: f32,
) -> Result<Vec<(Detection, [f32; 8])>, String> {
    let len = 13 + num_classes;
    if rows.is_empty() || !rows.len().is_multiple_of(len) {
        return Err(format!(
            "YOLOv5-corners output has {} values, not a multiple of 13 + {num_classes} labels; check labels in the manifest",
            rows.len()
        ));
    }
    let mut out = Vec::new();
    for r in rows.chunks_exact(len) {
        let obj = r[4];
        if obj < threshold {
            continue;
        }
        let (class, cls) = argmax(&r[13..]);
        let score = obj * cls;
        if score < threshold {
            continue;
        }
        let (cx, cy, w, h) = (r[0], r[1], r[2], r[3]);
        let mut corners = [0f32; 8];
        corners.copy_from_slice(&r[5..13]);
        out.push((
            Detection {
                class,
                score,
                bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
            },
            corners,
        ));
    }
    Ok(out)
}

pub fn decode_yolox(
    rows: &[f32],
    num_classes: usize,
    strides: &[usize],
    mw: usize,
    mh: usize,
    threshold: f32,
) -> Result<Vec<Detection>, String> {
    let stride_len = 5 + num_classes;
    let expected: usize = strides.iter().map(|s| (mw / s) * (mh / s)).sum();
    if rows.len() != expected * stride_len {
        return Err(format!(
            "YOLOX output has {} values, expected {} anchors × {} = {}; check input.shape, output.strides and labels in the manifest",
            rows.len(),
            expected,
            stride_len,
            expected * stride_len
        ));
    }
    let mut out = Vec::new();
    let mut i = 0;
    for &s in strides {
        let (gw, gh) = (mw / s, mh / s);
        for gy in 0..gh {
            for gx in 0..gw {
                let r = &rows[i * stride_len..(i + 1) * stride_len];
                i += 1;
                let obj = r[4];
                if obj < threshold {
                    continue;
                }
                let (class, cls) = argmax(&r[5..]);
                let score = obj * cls;
                if score < threshold {
                    continue;
                }
                let cx = (r[0] + gx as f32) * s as f32;
                let cy = (r[1] + gy as f32) * s as f32;
                let w = r[2].exp() * s as f32;
                let h = r[3].exp() * s as f32;
                out.push(Detection {
                    class,
                    score,
                    bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
                });
            }
        }
    }
    Ok(out)
}

/// NanoDet (GFL head): per stride, `cls` is `[N, classes]` (sigmoided) and
/// `reg` is `[N, 4 * (reg_max + 1)]` logits of a distance distribution for
/// left, top, right, bottom.
#[allow(clippy::too_many_arguments)] // one flat call per stride on the hot path
pub fn decode_nanodet_level(
    cls: &[f32],
    reg: &[f32],
    num_classes: usize,
    reg_max: usize,
    stride: usize,
    mw: usize,
    threshold: f32,
    out: &mut Vec<Detection>,
) -> Result<(), String> {
    let bins = reg_max + 1;
    let n = cls.len() / num_classes.max(1);
    if cls.len() != n * num_classes || reg.len() != n * 4 * bins {
        return Err(format!(
            "NanoDet stride {stride}: {} class values and {} distance values do not fit {num_classes} classes and {bins} bins",
            cls.len(),
            reg.len()
        ));
    }
    let gw = mw.div_ceil(stride);
    for i in 0..n {
        let (class, score) = argmax(&cls[i * num_classes..(i + 1) * num_classes]);
        if score < threshold {
            continue;
        }
        let gx = (i % gw) as f32;
        let gy = (i / gw) as f32;
        let s = stride as f32;
        let cx = gx * s + 0.5 * (s - 1.0);
        let cy = gy * s + 0.5 * (s - 1.0);
        let mut d = [0f32; 4];
        for (side, dist) in d.iter_mut().enumerate() {
            let logits = &reg[i * 4 * bins + side * bins..i * 4 * bins + (side + 1) * bins];
            *dist = dfl_expectation(logits) * s;
        }
        out.push(Detection {
            class,
            score,
            bbox: [cx - d[0], cy - d[1], cx + d[2], cy + d[3]],
        });
    }
    Ok(())
}

/// Softmax over the bins, then the expected bin index.
pub fn dfl_expectation(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    let mut acc = 0.0;
    for (k, &l) in logits.iter().enumerate() {
        let e = (l - max).exp();
        sum += e;
        acc += e * k as f32;
    }
    acc / sum
}

fn argmax(v: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &x) in v.iter().enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best
}

/// Classifier scores from raw outputs.
pub fn activate(raw: &[f32], act: crate::infer::manifest::Activation) -> Vec<f32> {
    use crate::infer::manifest::Activation;
    match act {
        Activation::None => raw.to_vec(),
        Activation::Sigmoid => raw.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect(),
        Activation::Softmax => {
            let m = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = raw.iter().map(|x| (x - m).exp()).collect();
            let s: f32 = e.iter().sum();
            e.into_iter().map(|x| x / s).collect()
        }
    }
}

pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Class-aware greedy non-maximum suppression; highest scores first.
/// Boxes of different classes overlapping more than this are one object seen
/// twice (a car also scored as a truck): only the better one is kept, so the
/// tracker does not start two tracks — and rules fire twice — for one vehicle.
pub const CROSS_CLASS_IOU: f32 = 0.7;

pub fn nms(mut dets: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    dets.truncate(MAX_CANDIDATES);
    let mut keep: Vec<Detection> = Vec::new();
    for d in dets {
        if keep.iter().all(|k| {
            let o = iou(&k.bbox, &d.bbox);
            if k.class == d.class {
                o <= iou_threshold
            } else {
                o <= CROSS_CLASS_IOU
            }
        }) {
            keep.push(d);
            if keep.len() == MAX_DETECTIONS {
                break;
            }
        }
    }
    keep
}

/// Canvas pixels → frame pixels, clipped to the frame; drops empty boxes.
pub fn to_frame(dets: Vec<Detection>, t: &Transform, w: u32, h: u32) -> Vec<Detection> {
    dets.into_iter()
        .filter_map(|mut d| {
            let (x1, y1) = t.to_frame(d.bbox[0], d.bbox[1]);
            let (x2, y2) = t.to_frame(d.bbox[2], d.bbox[3]);
            d.bbox = [
                x1.clamp(0.0, w as f32),
                y1.clamp(0.0, h as f32),
                x2.clamp(0.0, w as f32),
                y2.clamp(0.0, h as f32),
            ];
            (d.bbox[2] - d.bbox[0] >= 1.0 && d.bbox[3] - d.bbox[1] >= 1.0).then_some(d)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yolox_grid_decode() {
        // 16x16 canvas, strides 8 and 16: 2x2 + 1x1 = 5 anchors, 2 classes.
        let mut rows = vec![0f32; 5 * 7];
        // anchor 3 = stride 8, gx 1, gy 1
        let r = &mut rows[3 * 7..4 * 7];
        r.copy_from_slice(&[0.5, 0.25, 0.0, (2.0f32).ln(), 0.9, 0.1, 0.8]);
        let d = decode_yolox(&rows, 2, &[8, 16], 16, 16, 0.3).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].class, 1);
        assert!((d[0].score - 0.72).abs() < 1e-6);
        // cx = (0.5+1)*8 = 12, cy = (0.25+1)*8 = 10, w = 8, h = 16
        assert_eq!(d[0].bbox, [8.0, 2.0, 16.0, 18.0]);
        // Wrong size is an error, not a panic.
        assert!(decode_yolox(&rows[..30], 2, &[8, 16], 16, 16, 0.3).is_err());
    }

    #[test]
    fn yolox_threshold_filters_low_scores() {
        let mut rows = vec![0f32; 5 * 7];
        rows[4] = 0.5;
        rows[5] = 0.5; // score 0.25
        assert!(
            decode_yolox(&rows, 2, &[8, 16], 16, 16, 0.3)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn dfl_expectation_of_peaked_distribution() {
        let mut l = [-10f32; 8];
        l[3] = 10.0;
        assert!((dfl_expectation(&l) - 3.0).abs() < 1e-3);
        let flat = [0f32; 8];
        assert!((dfl_expectation(&flat) - 3.5).abs() < 1e-5);
    }

    #[test]
    fn nanodet_level_decode() {
        // stride 8 on a 16-wide canvas: 2x2 cells, 1 class, reg_max 7.
        let cls = vec![0.1, 0.2, 0.9, 0.1];
        let mut reg = vec![-10f32; 4 * 32];
        // cell 2 (gx 0, gy 1): distances 1, 2, 3, 4 bins
        for (side, bin) in [1usize, 2, 3, 4].iter().enumerate() {
            reg[2 * 32 + side * 8 + bin] = 10.0;
        }
        let mut out = Vec::new();
        decode_nanodet_level(&cls, &reg, 1, 7, 8, 16, 0.5, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        let b = out[0].bbox;
        // centre = (0*8 + 3.5, 1*8 + 3.5) = (3.5, 11.5); distances ×8 = 8, 16, 24, 32
        let want = [3.5 - 8.0, 11.5 - 16.0, 3.5 + 24.0, 11.5 + 32.0];
        for k in 0..4 {
            assert!((b[k] - want[k]).abs() < 0.01, "{b:?} vs {want:?}");
        }
        assert!(decode_nanodet_level(&cls, &reg[..10], 1, 7, 8, 16, 0.5, &mut out).is_err());
    }

    #[test]
    fn nms_is_class_aware() {
        let d = |class, score, x: f32| Detection {
            class,
            score,
            bbox: [x, 0.0, x + 10.0, 10.0],
        };
        // Same class, overlapping: one kept. Another class on a half-overlapping
        // box: kept. Another class on the very same box: one object seen twice.
        let kept = nms(
            vec![
                d(0, 0.5, 1.0),
                d(0, 0.9, 0.0),
                d(1, 0.8, 5.0),
                d(0, 0.7, 50.0),
                d(2, 0.6, 0.0),
            ],
            0.45,
        );
        assert_eq!(kept.len(), 3, "{kept:?}");
        assert_eq!(kept[0].score, 0.9);
        assert!(kept.iter().any(|k| k.class == 1));
        assert!(!kept.iter().any(|k| k.score == 0.5 || k.class == 2));
    }

    #[test]
    fn classifier_activations() {
        use crate::infer::manifest::Activation;
        let s = activate(&[1.0, 1.0, 3.0], Activation::Softmax);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6 && s[2] > 0.7);
        assert_eq!(activate(&[0.0], Activation::Sigmoid), vec![0.5]);
        assert_eq!(activate(&[0.2, 0.8], Activation::None), vec![0.2, 0.8]);
    }

    #[test]
    fn iou_basics() {
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[0.0, 0.0, 10.0, 10.0]), 1.0);
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[20.0, 20.0, 30.0, 30.0]), 0.0);
        assert!((iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
    }
}
