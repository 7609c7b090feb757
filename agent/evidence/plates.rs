//! Plate reading on vehicle tracks: the plate detector runs on the vehicle's
//! crop, the best plate box is cropped (two-row plates split into rows) and
//! each row goes through the text reader; the text is normalised and checked
//! against the Vietnamese plate patterns (`plate.rs`).

use std::sync::Arc;

use crate::decode::Frame;
use crate::infer::{DetectorHandle, InferError, Region};
use crate::publish::payload::PlateInfo;

use super::plate::{parse_plate, plate_confidence};

/// The two models of the plate cascade.
#[derive(Clone)]
pub struct PlateModels {
    pub detector: DetectorHandle,
    pub reader: DetectorHandle,
}

/// One reading with where the plate was.
#[derive(Debug, Clone)]
pub struct Reading {
    pub plate: PlateInfo,
    /// What the reader produced per row.
    pub raw: String,
    /// Plate box in frame pixels.
    pub bbox: [f32; 4],
    pub detector_score: f32,
}

fn clamp_box(b: [f32; 4], fw: u32, fh: u32, grow_x: f32, grow_y: f32) -> Option<[usize; 4]> {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let x0 = (b[0] - w * grow_x).max(0.0);
    let y0 = (b[1] - h * grow_y).max(0.0);
    let x1 = (b[2] + w * grow_x).min(fw as f32);
    let y1 = (b[3] + h * grow_y).min(fh as f32);
    (x1 - x0 >= 4.0 && y1 - y0 >= 4.0).then_some({
        [
            x0 as usize,
            y0 as usize,
            (x1 - x0) as usize,
            (y1 - y0) as usize,
        ]
    })
}

/// Width ÷ height a one-row plate is read at: perspective on a pole-mounted
/// camera shortens plates sideways, so the quad's own shape is too narrow.
/// (VN car plate 520×110 mm, grown by the margins; Chinese 440×140.)
const ONE_ROW_ASPECT: f32 = 4.0;
/// Each row of a two-row plate (VN motorbike 190×140 mm, split in two).
const ROW_ASPECT: f32 = 2.8;

/// Moves each corner of a quad (TL, TR, BR, BL) outwards by `gx` of the
/// width and `gy` of the height.
fn grow_quad(q: [f32; 8], gx: f32, gy: f32) -> [f32; 8] {
    let (cx, cy) = (
        (q[0] + q[2] + q[4] + q[6]) / 4.0,
        (q[1] + q[3] + q[5] + q[7]) / 4.0,
    );
    let mut out = q;
    for i in 0..4 {
        let (dx, dy) = (q[2 * i] - cx, q[2 * i + 1] - cy);
        out[2 * i] = cx + dx * (1.0 + 2.0 * gx);
        out[2 * i + 1] = cy + dy * (1.0 + 2.0 * gy);
    }
    out
}

impl PlateModels {
    /// Reads the plate of the vehicle at `vehicle` (frame pixels), if any.
    pub async fn read(
        &self,
        frame: Arc<Frame>,
        vehicle: [f32; 4],
    ) -> Result<Option<Reading>, InferError> {
        let Some(crop) = clamp_box(vehicle, frame.width, frame.height, 0.05, 0.05) else {
            return Ok(None);
        };
        let found = self.detector.infer(frame.clone(), Some(crop)).await?;
        let Some((bi, best)) = found
            .detections
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.score.total_cmp(&b.1.score))
        else {
            return Ok(None);
        };
        let b = best.bbox;
        let two_rows = best.class == 1;
        // The plate's corners (rectified), else its box; grown a little so
        // the reader sees the edge characters whole.
        let q = found
            .corners
            .get(bi)
            .copied()
            .unwrap_or([b[0], b[1], b[2], b[1], b[2], b[3], b[0], b[3]]);
        let quad = grow_quad(q, 0.04, 0.10);
        tracing::debug!(corners = ?q, "plate found");
        let rows: Vec<([f32; 8], f32)> = if two_rows {
            let lerp = |a: usize, c: usize, t: f32| {
                (
                    quad[2 * a] + (quad[2 * c] - quad[2 * a]) * t,
                    quad[2 * a + 1] + (quad[2 * c + 1] - quad[2 * a + 1]) * t,
                )
            };
            // Split at 45% of the height (the top row is the shorter on VN plates).
            let (l_mid, r_mid) = (lerp(0, 3, 0.45), lerp(1, 2, 0.45));
            let (l_top, r_top) = (lerp(0, 3, 0.40), lerp(1, 2, 0.40));
            vec![
                (
                    [
                        quad[0], quad[1], quad[2], quad[3], r_mid.0, r_mid.1, l_mid.0, l_mid.1,
                    ],
                    ROW_ASPECT,
                ),
                (
                    [
                        l_top.0, l_top.1, r_top.0, r_top.1, quad[4], quad[5], quad[6], quad[7],
                    ],
                    ROW_ASPECT,
                ),
            ]
        } else {
            vec![(quad, ONE_ROW_ASPECT)]
        };
        let mut texts = Vec::new();
        let mut confs = Vec::new();
        for (r, aspect) in rows {
            let out = self
                .reader
                .infer_region(frame.clone(), Region::Quad(r, aspect))
                .await?;
            let (t, conf) = out.text.unwrap_or_default();
            texts.push(t);
            confs.push(conf);
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let parsed = parse_plate(&refs);
        let conf = confs.iter().sum::<f32>() / confs.len().max(1) as f32;
        Ok(Some(Reading {
            plate: PlateInfo {
                text: parsed.text.clone(),
                confidence: (plate_confidence(conf, parsed.valid) * 1000.0).round() / 1000.0,
                valid: parsed.valid,
                two_rows,
            },
            raw: texts.join(" "),
            bbox: b,
            detector_score: best.score,
        }))
    }
}
