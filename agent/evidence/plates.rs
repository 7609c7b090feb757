//! Plate reading on vehicle tracks: the plate detector runs on the vehicle's
//! crop, the best plate box is cropped (two-row plates split into rows) and
//! each row goes through the text reader; the text is normalised and checked
//! against the Vietnamese plate patterns (`plate.rs`).

use std::sync::Arc;

use crate::decode::Frame;
use crate::infer::{DetectorHandle, InferError};
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
    (x1 - x0 >= 4.0 && y1 - y0 >= 4.0).then(|| {
        [
            x0 as usize,
            y0 as usize,
            (x1 - x0) as usize,
            (y1 - y0) as usize,
        ]
    })
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
        let Some(best) = found
            .detections
            .iter()
            .max_by(|a, b| a.score.total_cmp(&b.score))
        else {
            return Ok(None);
        };
        let b = best.bbox;
        let two_rows = best.class == 1;
        let rows: Vec<[f32; 4]> = if two_rows {
            let mid = b[1] + (b[3] - b[1]) * 0.5;
            let o = (b[3] - b[1]) * 0.04;
            vec![[b[0], b[1], b[2], mid + o], [b[0], mid - o, b[2], b[3]]]
        } else {
            vec![b]
        };
        let mut texts = Vec::new();
        let mut confs = Vec::new();
        for r in rows {
            let Some(c) = clamp_box(r, frame.width, frame.height, 0.04, 0.08) else {
                return Ok(None);
            };
            let out = self.reader.infer(frame.clone(), Some(c)).await?;
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
