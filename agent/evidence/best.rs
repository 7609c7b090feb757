//! The best of each track, kept per camera while frames pass: the
//! best-quality close-up (`BestShots`) and the best plate reading
//! (`PlateBook`, with per-track read limits).

use std::collections::HashMap;

use crate::decode::Frame;
use crate::publish::payload::PlateInfo;

use super::picture::crop_rgb;

/// Per camera: the best-quality crop of each track (largest box × score), kept
/// as a small RGB image so the close-up never needs the old frame.
#[derive(Default)]
pub struct BestShots {
    shots: HashMap<u64, (f32, image::RgbImage)>,
}

impl BestShots {
    /// Updates with the tracks seen in `frame`; forgets tracks not in `alive`.
    pub fn update(&mut self, frame: &Frame, tracks: &[(u64, [f32; 4], f32)]) {
        self.shots.retain(|id, _| tracks.iter().any(|t| t.0 == *id));
        for (id, b, score) in tracks {
            let area = (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0);
            let q = area * score;
            let better = self.shots.get(id).is_none_or(|(old, _)| q > *old * 1.1);
            if better && let Some(img) = crop_rgb(frame, *b, 0.15, 480) {
                self.shots.insert(*id, (q, img));
            }
        }
    }

    pub fn get(&self, id: u64) -> Option<&image::RgbImage> {
        self.shots.get(&id).map(|(_, i)| i)
    }
}

/// The best plate reading per track, with per-track rate limits.
#[derive(Default)]
pub struct PlateBook {
    pub tracks: HashMap<u64, PlateTrack>,
}

#[derive(Default, Clone)]
pub struct PlateTrack {
    pub reads: u32,
    pub last_pts: f64,
    pub best: Option<(PlateInfo, Option<Vec<u8>>)>,
}

impl PlateBook {
    /// Whether `track` may be read at `pts` under the limits.
    pub fn due(&self, track: u64, pts: f64, min_interval: f64, max_reads: u32) -> bool {
        match self.tracks.get(&track) {
            None => true,
            Some(t) => t.reads < max_reads && pts - t.last_pts >= min_interval,
        }
    }

    /// Records a reading; keeps the best (valid first, then confidence).
    pub fn record(&mut self, track: u64, pts: f64, reading: Option<(PlateInfo, Option<Vec<u8>>)>) {
        let t = self.tracks.entry(track).or_default();
        t.reads += 1;
        t.last_pts = pts;
        if let Some(r) = reading {
            let better = match &t.best {
                None => true,
                Some((b, _)) => (r.0.valid, r.0.confidence) > (b.valid, b.confidence),
            };
            if better {
                t.best = Some(r);
            }
        }
    }

    pub fn best(&self, track: u64) -> Option<&(PlateInfo, Option<Vec<u8>>)> {
        self.tracks.get(&track).and_then(|t| t.best.as_ref())
    }

    /// Forgets tracks that are gone.
    pub fn retain(&mut self, alive: impl Fn(u64) -> bool) {
        self.tracks.retain(|id, _| alive(*id));
    }
}
