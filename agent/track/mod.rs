//! Multi-object tracker (sans-IO, deterministic): ByteTrack-style two-stage
//! association (high-score detections first, then low-score ones to keep
//! existing tracks alive), a constant-velocity Kalman filter per box centre
//! axis, a centre-distance fallback for fast objects at low detection rates,
//! and death after `max_age` seconds without a match. Whether a track is
//! confirmed enough to trigger is each rule's `min_hits`.

use crate::infer::Detection;
use crate::infer::postprocess::iou;

#[derive(Debug, Clone, Copy)]
pub struct TrackerConfig {
    /// Detections at or above this score may start tracks and match first.
    pub high_score: f32,
    /// Detections between `low_score` and `high_score` only extend tracks.
    pub low_score: f32,
    /// Minimum IoU between a track's predicted box and a detection.
    pub min_iou: f32,
    /// Seconds a track survives without a match.
    pub max_age: f64,
    /// Centre-distance fallback: largest distance between predicted and
    /// detected centres, in diagonals of the predicted box.
    pub max_center_dist: f32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            high_score: 0.4,
            low_score: 0.15,
            min_iou: 0.2,
            max_age: 1.5,
            max_center_dist: 1.0,
        }
    }
}

/// Longest position history kept per track.
const HISTORY: usize = 64;

#[derive(Debug, Clone)]
pub struct Track {
    pub id: u64,
    /// Box in frame pixels `[x1, y1, x2, y2]` at the last match.
    pub bbox: [f32; 4],
    pub score: f32,
    /// Best score seen.
    pub best_score: f32,
    class_votes: Vec<(usize, u32)>,
    pub hits: u32,
    pub first_seen: f64,
    pub last_seen: f64,
    /// Centre velocity (Kalman estimate), pixels per second.
    pub velocity: [f32; 2],
    kx: Kalman1,
    ky: Kalman1,
    /// (time, ground point = bottom centre of the box), oldest first.
    pub history: Vec<(f64, [f32; 2])>,
    /// True if the track was matched in the latest update.
    pub matched: bool,
}

impl Track {
    /// Most frequently detected class.
    pub fn class(&self) -> usize {
        self.class_votes
            .iter()
            .max_by_key(|(_, n)| *n)
            .map(|(c, _)| *c)
            .unwrap_or(0)
    }
    pub fn confirmed(&self, min_hits: u32) -> bool {
        self.hits >= min_hits
    }
    pub fn dwell(&self) -> f64 {
        self.last_seen - self.first_seen
    }
    pub fn anchor(&self) -> [f32; 2] {
        ground_point(&self.bbox)
    }
    fn predict(&self, t: f64) -> [f32; 4] {
        let dt = (t - self.last_seen) as f32;
        let (cx, cy) = (self.kx.x + self.kx.v * dt, self.ky.x + self.ky.v * dt);
        let (hw, hh) = (
            (self.bbox[2] - self.bbox[0]) / 2.0,
            (self.bbox[3] - self.bbox[1]) / 2.0,
        );
        [cx - hw, cy - hh, cx + hw, cy + hh]
    }
    fn update(&mut self, d: &Detection, t: f64) {
        let dt = (t - self.last_seen) as f32;
        let c = center(&d.bbox);
        // Measurement noise scales with the object's size (detector box jitter).
        let size = (d.bbox[2] - d.bbox[0]).max(d.bbox[3] - d.bbox[1]);
        let r = (0.05 * size).max(2.0).powi(2);
        if self.hits == 0 {
            self.kx = Kalman1::new(c[0], r, size);
            self.ky = Kalman1::new(c[1], r, size);
        } else {
            self.kx.predict(dt.max(0.0), ACCEL_SIGMA);
            self.ky.predict(dt.max(0.0), ACCEL_SIGMA);
            self.kx.update(c[0], r);
            self.ky.update(c[1], r);
        }
        self.velocity = [self.kx.v, self.ky.v];
        self.bbox = d.bbox;
        self.score = d.score;
        self.best_score = self.best_score.max(d.score);
        match self.class_votes.iter_mut().find(|(c, _)| *c == d.class) {
            Some((_, n)) => *n += 1,
            None => self.class_votes.push((d.class, 1)),
        }
        self.hits += 1;
        self.last_seen = t;
        self.matched = true;
        self.history.push((t, ground_point(&d.bbox)));
        if self.history.len() > HISTORY {
            self.history.remove(0);
        }
    }
}

/// Process noise: how hard objects accelerate, pixels per second squared.
const ACCEL_SIGMA: f32 = 300.0;

/// Constant-velocity Kalman filter on one axis: state (position, velocity).
#[derive(Debug, Clone, Copy, Default)]
struct Kalman1 {
    x: f32,
    v: f32,
    p: [[f32; 2]; 2],
}

impl Kalman1 {
    fn new(x: f32, r: f32, size: f32) -> Kalman1 {
        // Unknown velocity: up to a few box sizes per second.
        let pv = (4.0 * size).powi(2);
        Kalman1 {
            x,
            v: 0.0,
            p: [[r, 0.0], [0.0, pv]],
        }
    }

    fn predict(&mut self, dt: f32, accel_sigma: f32) {
        let q = accel_sigma * accel_sigma;
        self.x += self.v * dt;
        let p = self.p;
        let (dt2, dt3, dt4) = (dt * dt, dt * dt * dt, dt * dt * dt * dt);
        self.p = [
            [
                p[0][0] + dt * (p[1][0] + p[0][1]) + dt2 * p[1][1] + q * dt4 / 4.0,
                p[0][1] + dt * p[1][1] + q * dt3 / 2.0,
            ],
            [p[1][0] + dt * p[1][1] + q * dt3 / 2.0, p[1][1] + q * dt2],
        ];
    }

    fn update(&mut self, z: f32, r: f32) {
        let s = self.p[0][0] + r;
        let (k0, k1) = (self.p[0][0] / s, self.p[1][0] / s);
        let y = z - self.x;
        self.x += k0 * y;
        self.v += k1 * y;
        let p = self.p;
        self.p = [
            [(1.0 - k0) * p[0][0], (1.0 - k0) * p[0][1]],
            [p[1][0] - k1 * p[0][0], p[1][1] - k1 * p[0][1]],
        ];
    }
}

pub fn center(b: &[f32; 4]) -> [f32; 2] {
    [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0]
}

/// Bottom centre of a box: where a vehicle or person touches the road.
pub fn ground_point(b: &[f32; 4]) -> [f32; 2] {
    [(b[0] + b[2]) / 2.0, b[3]]
}

#[derive(Debug)]
pub struct Tracker {
    cfg: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Self {
        Tracker {
            cfg,
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.cfg
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Associates the detections of the frame at time `t` (seconds) with the
    /// tracks; returns the live tracks.
    pub fn update(&mut self, dets: &[Detection], t: f64) -> &[Track] {
        for tr in &mut self.tracks {
            tr.matched = false;
        }
        let (high, low): (Vec<&Detection>, Vec<&Detection>) = dets
            .iter()
            .filter(|d| d.score >= self.cfg.low_score)
            .partition(|d| d.score >= self.cfg.high_score);
        let unmatched_high = self.associate(&high, t);
        let _ = self.associate(&low, t);
        for d in unmatched_high {
            let mut tr = Track {
                id: self.next_id,
                bbox: d.bbox,
                score: d.score,
                best_score: d.score,
                class_votes: Vec::new(),
                hits: 0,
                first_seen: t,
                last_seen: t,
                velocity: [0.0, 0.0],
                kx: Kalman1::default(),
                ky: Kalman1::default(),
                history: Vec::new(),
                matched: false,
            };
            self.next_id += 1;
            tr.update(d, t);
            self.tracks.push(tr);
        }
        let max_age = self.cfg.max_age;
        self.tracks.retain(|tr| t - tr.last_seen <= max_age);
        &self.tracks
    }

    /// Greedy association by IoU between predicted track boxes and detections,
    /// best pairs first. Returns the detections left unmatched.
    fn associate<'a>(&mut self, dets: &[&'a Detection], t: f64) -> Vec<&'a Detection> {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (ti, tr) in self.tracks.iter().enumerate() {
            if tr.matched {
                continue;
            }
            let p = tr.predict(t);
            let (pc, diag) = (center(&p), (p[2] - p[0]).hypot(p[3] - p[1]).max(1.0));
            let area = |b: &[f32; 4]| ((b[2] - b[0]) * (b[3] - b[1])).max(1.0);
            for (di, d) in dets.iter().enumerate() {
                let o = iou(&p, &d.bbox).max(iou(&tr.bbox, &d.bbox));
                if o >= self.cfg.min_iou {
                    pairs.push((o, ti, di));
                    continue;
                }
                // Fast objects at a low detection rate move more than their own
                // size between frames: fall back to centre distance (same class,
                // similar size), ranked below every IoU match.
                let dc = center(&d.bbox);
                let dist = (dc[0] - pc[0]).hypot(dc[1] - pc[1]) / diag;
                let ratio = area(&d.bbox) / area(&p);
                if d.class == tr.class()
                    && dist < self.cfg.max_center_dist
                    && (0.5..2.0).contains(&ratio)
                {
                    pairs.push((
                        self.cfg.min_iou * (1.0 - dist / self.cfg.max_center_dist) * 0.99,
                        ti,
                        di,
                    ));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut det_used = vec![false; dets.len()];
        for (_, ti, di) in pairs {
            if det_used[di] || self.tracks[ti].matched {
                continue;
            }
            det_used[di] = true;
            self.tracks[ti].update(dets[di], t);
        }
        dets.iter()
            .zip(det_used)
            .filter(|(_, u)| !u)
            .map(|(d, _)| *d)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, score: f32) -> Detection {
        Detection {
            class: 2,
            score,
            bbox: [x, 100.0, x + 40.0, 140.0],
        }
    }

    #[test]
    fn one_moving_object_keeps_one_id() {
        let mut t = Tracker::new(TrackerConfig::default());
        for i in 0..20 {
            let tracks = t.update(&[det(10.0 + 8.0 * i as f32, 0.8)], i as f64 * 0.2);
            assert_eq!(tracks.len(), 1);
            assert_eq!(tracks[0].id, 1);
        }
        assert_eq!(t.tracks()[0].hits, 20);
        assert!(
            t.tracks()[0].velocity[0] > 30.0,
            "{:?}",
            t.tracks()[0].velocity
        );
    }

    #[test]
    fn survives_missed_detections_and_dies_after_max_age() {
        let mut t = Tracker::new(TrackerConfig::default());
        t.update(&[det(10.0, 0.8)], 0.0);
        t.update(&[det(18.0, 0.8)], 0.2);
        t.update(&[], 0.4);
        t.update(&[], 0.6);
        // reappears where the motion predicts it
        let tr = t.update(&[det(42.0, 0.8)], 0.8);
        assert_eq!(tr.len(), 1);
        assert_eq!(tr[0].id, 1);
        t.update(&[], 1.6);
        assert_eq!(t.update(&[], 2.5).len(), 0);
    }

    #[test]
    fn low_scores_extend_but_never_start_tracks() {
        let mut t = Tracker::new(TrackerConfig::default());
        assert!(t.update(&[det(10.0, 0.2)], 0.0).is_empty());
        t.update(&[det(10.0, 0.8)], 0.2);
        let tr = t.update(&[det(12.0, 0.2)], 0.4);
        assert_eq!(tr.len(), 1);
        assert_eq!(tr[0].hits, 2);
    }

    #[test]
    fn two_objects_two_ids_and_confirmation() {
        let mut t = Tracker::new(TrackerConfig::default());
        for i in 0..3 {
            let x = 8.0 * i as f32;
            t.update(&[det(x, 0.9), det(300.0 - x, 0.9)], i as f64 * 0.2);
        }
        let tr = t.tracks();
        assert_eq!(tr.len(), 2);
        assert_ne!(tr[0].id, tr[1].id);
        assert!(tr.iter().all(|x| x.confirmed(3)));
        assert_eq!(tr[0].class(), 2);
    }
}
