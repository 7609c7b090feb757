//! Rules (sans-IO): zones, lines and lanes in normalised coordinates, judged
//! on the tracker's output. Object rules fire at most once per tracked object;
//! zone-level rules (crowd) raise a start and an end.

pub mod cascade;
pub mod config;
pub mod signal;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::SystemTime;

use chrono::Timelike;

use crate::store::Severity;
use crate::track::Track;
pub use config::{CropRegion, Direction, Needs, RuleKind, RuleSetup};
pub use signal::Light;

/// Signed area of a polygon (shoelace formula).
pub fn polygon_area(p: &[[f64; 2]]) -> f64 {
    let n = p.len();
    (0..n)
        .map(|i| p[i][0] * p[(i + 1) % n][1] - p[(i + 1) % n][0] * p[i][1])
        .sum::<f64>()
        / 2.0
}

/// Ray casting; points on the boundary may go either way.
pub fn point_in_polygon(pt: [f64; 2], poly: &[[f64; 2]]) -> bool {
    let mut inside = false;
    let n = poly.len();
    let mut j = n.wrapping_sub(1);
    for i in 0..n {
        let (a, b) = (poly[i], poly[j]);
        if (a[1] > pt[1]) != (b[1] > pt[1])
            && pt[0] < (b[0] - a[0]) * (pt[1] - a[1]) / (b[1] - a[1]) + a[0]
        {
            inside = !inside;
        }
        j = i;
    }
    inside
}

fn cross(o: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

/// Whether the segments p1→p2 and q1→q2 properly intersect (touching counts
/// once: the moving point must end strictly on the other side).
pub fn segments_cross(p1: [f64; 2], p2: [f64; 2], q1: [f64; 2], q2: [f64; 2]) -> bool {
    let d1 = cross(q1, q2, p1);
    let d2 = cross(q1, q2, p2);
    let d3 = cross(p1, p2, q1);
    let d4 = cross(p1, p2, q2);
    ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0) || (d1 == 0.0 && d2 != 0.0))
        && ((d3 > 0.0) != (d4 > 0.0) || d3 == 0.0 || d4 == 0.0)
}

/// Direction of a movement in image terms.
pub fn movement_matches(dir: Direction, from: [f64; 2], to: [f64; 2]) -> bool {
    let (dx, dy) = (to[0] - from[0], to[1] - from[1]);
    match dir {
        Direction::Any => true,
        Direction::LeftToRight => dx > 0.0,
        Direction::RightToLeft => dx < 0.0,
        Direction::TopToBottom => dy > 0.0,
        Direction::BottomToTop => dy < 0.0,
    }
}

/// The dominant image direction of a movement.
pub fn observed_direction(from: [f64; 2], to: [f64; 2]) -> Direction {
    let (dx, dy) = (to[0] - from[0], to[1] - from[1]);
    if dx.abs() >= dy.abs() {
        if dx > 0.0 {
            Direction::LeftToRight
        } else {
            Direction::RightToLeft
        }
    } else if dy > 0.0 {
        Direction::TopToBottom
    } else {
        Direction::BottomToTop
    }
}

/// Image (normalised) → ground plane (metres), from four or more point pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography {
    h: [f64; 9],
}

impl Homography {
    /// Least-squares DLT with h33 = 1; `None` when the points are degenerate.
    pub fn fit(img: &[[f64; 2]], world: &[[f64; 2]]) -> Option<Homography> {
        if img.len() < 4 || img.len() != world.len() {
            return None;
        }
        // Normal equations A^T A h = A^T b for the 8 unknowns.
        let mut ata = [[0f64; 8]; 8];
        let mut atb = [0f64; 8];
        for (p, q) in img.iter().zip(world) {
            let (x, y, u, v) = (p[0], p[1], q[0], q[1]);
            let rows = [
                ([x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y], u),
                ([0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y], v),
            ];
            for (r, b) in rows {
                for i in 0..8 {
                    atb[i] += r[i] * b;
                    for j in 0..8 {
                        ata[i][j] += r[i] * r[j];
                    }
                }
            }
        }
        let h = solve8(ata, atb)?;
        let hom = Homography {
            h: [h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], 1.0],
        };
        // Reject fits that do not reproduce the points (degenerate input).
        let scale = world
            .iter()
            .flat_map(|w| w.iter())
            .fold(1.0f64, |m, v| m.max(v.abs()));
        for (p, q) in img.iter().zip(world) {
            let r = hom.apply(*p)?;
            if (r[0] - q[0]).hypot(r[1] - q[1]) > 0.05 * scale {
                return None;
            }
        }
        Some(hom)
    }

    pub fn apply(&self, p: [f64; 2]) -> Option<[f64; 2]> {
        let h = &self.h;
        let w = h[6] * p[0] + h[7] * p[1] + h[8];
        if w.abs() < 1e-12 {
            return None;
        }
        Some([
            (h[0] * p[0] + h[1] * p[1] + h[2]) / w,
            (h[3] * p[0] + h[4] * p[1] + h[5]) / w,
        ])
    }
}

/// Gaussian elimination with partial pivoting.
fn solve8(mut a: [[f64; 8]; 8], mut b: [f64; 8]) -> Option<[f64; 8]> {
    for col in 0..8 {
        let piv = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        let pivot_row = a[col];
        let pivot_b = b[col];
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row.iter_mut().zip(pivot_row.iter()).skip(col) {
                    *x -= f * p;
                }
                b[r] -= f * pivot_b;
            }
        }
    }
    let mut x = [0f64; 8];
    for i in 0..8 {
        x[i] = b[i] / a[i][i];
    }
    Some(x)
}

/// `HH:MM` → minutes after midnight.
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// A daily local-time window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub start: u32,
    pub end: u32,
    pub tz: chrono_tz::Tz,
}

impl Schedule {
    /// Whether `t` falls in the window (which may cross midnight).
    pub fn active(&self, t: SystemTime) -> bool {
        let local = chrono::DateTime::<chrono::Utc>::from(t).with_timezone(&self.tz);
        let m = local.hour() * 60 + local.minute();
        if self.start <= self.end {
            (self.start..self.end).contains(&m)
        } else {
            m >= self.start || m < self.end
        }
    }
}

#[derive(Debug, Clone)]
pub enum Geometry {
    Zone {
        name: String,
        polygon: Vec<[f64; 2]>,
    },
    Line {
        name: String,
        points: [[f64; 2]; 2],
    },
    Lane {
        name: String,
        polygon: Vec<[f64; 2]>,
        arrow: [[f64; 2]; 2],
        allowed: Vec<usize>,
    },
    None,
}

impl Geometry {
    pub fn name(&self) -> &str {
        match self {
            Geometry::Zone { name, .. }
            | Geometry::Line { name, .. }
            | Geometry::Lane { name, .. } => name,
            Geometry::None => "",
        }
    }
    fn contains(&self, p: [f64; 2]) -> bool {
        match self {
            Geometry::Zone { polygon, .. } | Geometry::Lane { polygon, .. } => {
                point_in_polygon(p, polygon)
            }
            _ => true,
        }
    }
}

/// Parameters of a rule, defaults applied.
#[derive(Debug, Clone)]
pub struct Params {
    pub min_secs: f64,
    pub dwell_secs: f64,
    pub min_distance: f64,
    pub max_move: f64,
    pub max_count: u32,
    pub speed_limit_kmh: f64,
    pub schedule: Option<Schedule>,
}

/// A rule that asks a second model (on crops of tracked objects, or on the
/// whole frame / a zone) before it decides.
#[derive(Debug, Clone)]
pub struct Cascade {
    /// Model name (one of `[[models]]`).
    pub model: String,
    /// Labels of that model that mean a violation.
    pub labels: Vec<String>,
    pub min_confidence: f32,
    pub min_votes: u32,
    /// Seconds between two runs for the same object (or region).
    pub interval: f64,
    pub region: CropRegion,
}

/// One run of a cascade model the camera should do for this frame.
#[derive(Debug, Clone, PartialEq)]
pub struct CascadeRequest {
    pub rule: usize,
    /// The tracked object, or `None` for a whole-frame / zone rule.
    pub track: Option<u64>,
    /// Crop, normalised `[x1, y1, x2, y2]`.
    pub crop: [f64; 4],
}

/// Most cascade runs per rule and frame (bounds the cost of a busy scene).
const MAX_CASCADES_PER_FRAME: usize = 4;

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    pub geometry: Geometry,
    /// Class indices this rule applies to (empty = all).
    pub classes: Vec<usize>,
    pub direction: Direction,
    pub min_score: f32,
    pub min_hits: u32,
    pub severity: Severity,
    pub params: Params,
    pub cascade: Option<Cascade>,
    /// Cascade votes per track: (positives, last request time, best confidence).
    votes: HashMap<u64, (u32, f64, f32)>,
    /// Whole-frame cascade: last request, consecutive positives, consecutive negatives, best.
    frame_votes: (f64, u32, u32, f32),
    fired: HashSet<u64>,
    /// Per track: when and where the rule's condition started to hold.
    since: HashMap<u64, (f64, [f64; 2])>,
    /// Zone-level state (crowd): active, condition start, clear start.
    crowd: (bool, Option<f64>, Option<f64>),
}

/// One object in a firing.
#[derive(Debug, Clone)]
pub struct FiredObject {
    pub track_id: u64,
    pub class: usize,
    pub score: f32,
    /// Box normalised to 0..1.
    pub bbox: [f32; 4],
}

/// What a rule decided.
#[derive(Debug, Clone)]
pub struct Firing {
    pub rule: usize,
    /// The object(s) concerned; the first is the main one.
    pub objects: Vec<FiredObject>,
    /// Direction observed (line crossings).
    pub direction: Option<Direction>,
    pub speed_kmh: Option<f64>,
    pub count: Option<u32>,
    /// `start` or `end` for zone-level events (crowd).
    pub phase: Option<&'static str>,
    /// Why an `end` came: `cleared` (the condition stopped holding) or
    /// `stream_lost` (the camera's stream ended while the event was open).
    pub end_reason: Option<&'static str>,
    pub dwell_secs: Option<f64>,
    /// Signal state that decided (red_light, stop_line) and its source.
    pub signal: Option<(Light, &'static str)>,
    /// Best confidence of the cascade model (no_helmet, fire_smoke, fight).
    pub confidence: Option<f32>,
}

impl Firing {
    fn new(rule: usize, objects: Vec<FiredObject>) -> Firing {
        Firing {
            rule,
            objects,
            direction: None,
            speed_kmh: None,
            count: None,
            phase: None,
            end_reason: None,
            dwell_secs: None,
            signal: None,
            confidence: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RuleEngine {
    pub rules: Vec<Rule>,
    calibration: Option<Homography>,
    person: Option<usize>,
    /// Recent signal states (stream time, state, source), oldest first.
    signal: VecDeque<(f64, Light, &'static str)>,
    has_signal: bool,
}

fn defaults(kind: RuleKind) -> (f64, f64) {
    // (min_secs, dwell_secs)
    match kind {
        RuleKind::Crowd => (5.0, 0.0),
        RuleKind::IllegalStop => (0.0, 30.0),
        RuleKind::IllegalParking => (0.0, 300.0),
        RuleKind::Loitering => (0.0, 60.0),
        RuleKind::WrongWay
        | RuleKind::LaneClass
        | RuleKind::Sidewalk
        | RuleKind::Speeding
        | RuleKind::Overload => (1.0, 0.0),
        RuleKind::StopLine => (2.0, 0.0),
        _ => (0.0, 0.0),
    }
}

impl RuleEngine {
    /// Compiles a camera's rules; `labels` are the detector's class names
    /// (index = class). Fails on the first rule whose zone, line, lane,
    /// classes, schedule or model do not resolve.
    pub fn new(setup: &RuleSetup, labels: &[String]) -> Result<RuleEngine, RuleError> {
        let rules = setup
            .rules
            .iter()
            .map(|r| compile_rule(r, setup, labels))
            .collect::<Result<Vec<_>, _>>()?;
        let calibration = setup
            .calibration
            .and_then(|c| Homography::fit(c.image.get_ref(), c.world.get_ref()));
        Ok(RuleEngine {
            rules,
            calibration,
            person: labels.iter().position(|l| l == "person"),
            signal: VecDeque::new(),
            has_signal: setup.signal.is_some(),
        })
    }

    /// The cascade runs due for this frame: per tracked object at most one
    /// per `interval`, at most [`MAX_CASCADES_PER_FRAME`] per rule.
    pub fn cascade_requests(
        &mut self,
        tracks: &[Track],
        w: u32,
        h: u32,
        t: f64,
    ) -> Vec<CascadeRequest> {
        let (w, h) = (w as f64, h as f64);
        let mut out = Vec::new();
        for (ri, rule) in self.rules.iter_mut().enumerate() {
            let Some(c) = &rule.cascade else { continue };
            if matches!(rule.kind, RuleKind::FireSmoke | RuleKind::Fight) {
                if t - rule.frame_votes.0 >= c.interval {
                    rule.frame_votes.0 = t;
                    let crop = match &rule.geometry {
                        Geometry::Zone { polygon, .. } => {
                            polygon.iter().fold([1.0f64, 1.0, 0.0, 0.0], |b, p| {
                                [
                                    b[0].min(p[0]),
                                    b[1].min(p[1]),
                                    b[2].max(p[0]),
                                    b[3].max(p[1]),
                                ]
                            })
                        }
                        _ => [0.0, 0.0, 1.0, 1.0],
                    };
                    out.push(CascadeRequest {
                        rule: ri,
                        track: None,
                        crop,
                    });
                }
                continue;
            }
            // Least recently checked objects first.
            let mut cands: Vec<&Track> = tracks
                .iter()
                .filter(|tr| {
                    tr.matched
                        && tr.confirmed(rule.min_hits)
                        && !rule.fired.contains(&tr.id)
                        && tr.best_score >= rule.min_score
                })
                .filter(|tr| rule.classes.is_empty() || rule.classes.contains(&tr.class()))
                .filter(|tr| rule.votes.get(&tr.id).is_none_or(|v| t - v.1 >= c.interval))
                .collect();
            cands.sort_by(|a, b| {
                let la = rule.votes.get(&a.id).map_or(f64::NEG_INFINITY, |v| v.1);
                let lb = rule.votes.get(&b.id).map_or(f64::NEG_INFINITY, |v| v.1);
                la.total_cmp(&lb).then(a.id.cmp(&b.id))
            });
            for tr in cands.into_iter().take(MAX_CASCADES_PER_FRAME) {
                let b = tr.bbox;
                let (x1, y1, x2, y2) = (
                    b[0] as f64 / w,
                    b[1] as f64 / h,
                    b[2] as f64 / w,
                    b[3] as f64 / h,
                );
                let y2 = match c.region {
                    CropRegion::Box => y2,
                    CropRegion::UpperHalf => y1 + (y2 - y1) / 2.0,
                    CropRegion::UpperThird => y1 + (y2 - y1) / 3.0,
                };
                let v = rule.votes.entry(tr.id).or_insert((0, t, 0.0));
                v.1 = t;
                out.push(CascadeRequest {
                    rule: ri,
                    track: Some(tr.id),
                    crop: [x1, y1, x2, y2],
                });
            }
        }
        out
    }

    /// Feeds back a cascade run: `confidence` is the best score of any of the
    /// rule's labels in the model's output.
    pub fn cascade_result(&mut self, req: &CascadeRequest, confidence: f32) {
        let Some(rule) = self.rules.get_mut(req.rule) else {
            return;
        };
        let Some(c) = &rule.cascade else { return };
        let positive = confidence >= c.min_confidence;
        match req.track {
            Some(id) => {
                let v = rule.votes.entry(id).or_insert((0, f64::NEG_INFINITY, 0.0));
                if positive {
                    v.0 += 1;
                    v.2 = v.2.max(confidence);
                }
            }
            None => {
                let f = &mut rule.frame_votes;
                if positive {
                    f.1 += 1;
                    f.2 = 0;
                    f.3 = f.3.max(confidence);
                } else {
                    f.2 += 1;
                    f.1 = 0;
                }
            }
        }
    }

    /// Records the signal state seen at stream time `t`.
    pub fn set_signal(&mut self, t: f64, light: Light, source: &'static str) {
        self.has_signal = true;
        if self.signal.back().is_some_and(|(_, l, _)| *l == light) {
            return;
        }
        self.signal.push_back((t, light, source));
        // Keep a minute of changes, and at least the latest state.
        while self.signal.len() > 1 && self.signal.get(1).is_some_and(|(t1, _, _)| t - t1 > 60.0) {
            self.signal.pop_front();
        }
    }

    /// The signal state at stream time `t`.
    pub fn light_at(&self, t: f64) -> Option<(Light, &'static str)> {
        light_at(&self.signal, t)
    }

    /// Whether a zone-level event (crowd, fire/smoke, fight) is open.
    pub fn any_open(&self) -> bool {
        self.rules.iter().any(|r| r.crowd.0)
    }

    /// Ends every open zone-level event because the stream they were seen on
    /// ended (`reason`: `stream_lost`, or `camera_stopped` at shutdown or a
    /// reload): nothing can confirm they still hold, and an IOC operator must
    /// not be left with a `start` that never ends. State resets, so the same
    /// event starts afresh when the camera is back.
    pub fn end_open(&mut self, reason: &'static str) -> Vec<Firing> {
        let mut out = Vec::new();
        for (ri, rule) in self.rules.iter_mut().enumerate() {
            if rule.crowd.0 {
                let mut f = Firing::new(ri, Vec::new());
                f.phase = Some("end");
                f.end_reason = Some(reason);
                out.push(f);
            }
            rule.crowd = (false, None, None);
            rule.frame_votes.3 = 0.0;
        }
        out
    }

    /// Judges the tracks of one frame of size `w`×`h` at stream time `t`
    /// (seconds); `wall` is the frame's wall-clock time (for schedules).
    pub fn evaluate(
        &mut self,
        tracks: &[Track],
        w: u32,
        h: u32,
        t: f64,
        wall: SystemTime,
    ) -> Vec<Firing> {
        let (w, h) = (w as f64, h as f64);
        let norm = |p: [f32; 2]| [p[0] as f64 / w, p[1] as f64 / h];
        let obj = |tr: &Track| {
            let b = tr.bbox;
            FiredObject {
                track_id: tr.id,
                class: tr.class(),
                score: tr.best_score,
                bbox: [
                    (b[0] as f64 / w) as f32,
                    (b[1] as f64 / h) as f32,
                    (b[2] as f64 / w) as f32,
                    (b[3] as f64 / h) as f32,
                ],
            }
        };
        let calibration = self.calibration;
        let person = self.person;
        let (log, has_signal) = (&self.signal, self.has_signal);
        let light_at = |t: f64| light_at(log, t);
        let mut out = Vec::new();
        for (ri, rule) in self.rules.iter_mut().enumerate() {
            // Forget tracks that are gone.
            rule.fired.retain(|id| tracks.iter().any(|t| t.id == *id));
            rule.since
                .retain(|id, _| tracks.iter().any(|t| t.id == *id));
            let p = rule.params.clone();
            let eligible = |tr: &Track, rule: &Rule| {
                tr.matched
                    && tr.confirmed(rule.min_hits)
                    && (rule.classes.is_empty() || rule.classes.contains(&tr.class()))
                    && tr.best_score >= rule.min_score
            };

            rule.votes
                .retain(|id, _| tracks.iter().any(|t| t.id == *id));
            if matches!(rule.kind, RuleKind::FireSmoke | RuleKind::Fight) {
                let need = rule.cascade.as_ref().map_or(2, |c| c.min_votes);
                let (active, _, _) = rule.crowd;
                let (_, pos, neg, best) = rule.frame_votes;
                if !active && pos >= need {
                    rule.crowd.0 = true;
                    let mut f = Firing::new(ri, Vec::new());
                    f.phase = Some("start");
                    f.confidence = Some(best);
                    out.push(f);
                } else if active && neg >= need {
                    rule.crowd.0 = false;
                    rule.frame_votes.3 = 0.0;
                    let mut f = Firing::new(ri, Vec::new());
                    f.phase = Some("end");
                    f.end_reason = Some("cleared");
                    out.push(f);
                }
                continue;
            }
            if rule.kind == RuleKind::Crowd {
                // Count every live track seen in the last second, so that one
                // missed detection does not restart the timers.
                let counted = |tr: &Track| {
                    t - tr.last_seen <= 1.0
                        && tr.confirmed(rule.min_hits)
                        && (rule.classes.is_empty() || rule.classes.contains(&tr.class()))
                        && tr.best_score >= rule.min_score
                };
                let inside: Vec<&Track> = tracks
                    .iter()
                    .filter(|tr| counted(tr) && rule.geometry.contains(norm(tr.anchor())))
                    .collect();
                let n = inside.len() as u32;
                let (active, since, clear) = &mut rule.crowd;
                if n > p.max_count {
                    *clear = None;
                    let s0 = *since.get_or_insert(t);
                    if !*active && t - s0 >= p.min_secs {
                        *active = true;
                        let mut f = Firing::new(ri, inside.iter().map(|tr| obj(tr)).collect());
                        f.count = Some(n);
                        f.phase = Some("start");
                        out.push(f);
                    }
                } else {
                    *since = None;
                    if *active {
                        let c0 = *clear.get_or_insert(t);
                        if t - c0 >= p.min_secs {
                            *active = false;
                            *clear = None;
                            let mut f = Firing::new(ri, inside.iter().map(|tr| obj(tr)).collect());
                            f.count = Some(n);
                            f.phase = Some("end");
                            f.end_reason = Some("cleared");
                            out.push(f);
                        }
                    }
                }
                continue;
            }

            for tr in tracks {
                if rule.fired.contains(&tr.id) || !eligible(tr, rule) {
                    continue;
                }
                let now = norm(tr.anchor());
                let inside = rule.geometry.contains(now);
                let mut fire: Option<Firing> = None;
                match rule.kind {
                    RuleKind::ZoneEnter | RuleKind::Intrusion => {
                        let scheduled = p.schedule.is_none_or(|s| s.active(wall));
                        if inside && scheduled {
                            fire = Some(Firing::new(ri, vec![obj(tr)]));
                        }
                    }
                    RuleKind::LineCross | RuleKind::LaneLine => {
                        if let Geometry::Line { points, .. } = &rule.geometry
                            && let Some((_, _, a, b)) =
                                first_crossing(tr, *points, rule.direction, &norm)
                        {
                            let mut f = Firing::new(ri, vec![obj(tr)]);
                            f.direction = Some(observed_direction(a, b));
                            fire = Some(f);
                        }
                    }
                    RuleKind::WrongWay => {
                        if let Geometry::Lane { polygon, arrow, .. } = &rule.geometry
                            && inside
                        {
                            let (dx, dy) = (arrow[1][0] - arrow[0][0], arrow[1][1] - arrow[0][1]);
                            let len = dx.hypot(dy);
                            // The stretch of history spent in the lane, up to now.
                            let in_lane: Vec<(f64, [f64; 2])> = tr
                                .history
                                .iter()
                                .rev()
                                .map(|(ht, hp)| (*ht, norm(*hp)))
                                .take_while(|(_, hp)| point_in_polygon(*hp, polygon))
                                .collect();
                            if let (Some(last), Some(first)) = (in_lane.first(), in_lane.last()) {
                                let along = ((last.1[0] - first.1[0]) * dx
                                    + (last.1[1] - first.1[1]) * dy)
                                    / len;
                                if along <= -p.min_distance && last.0 - first.0 >= p.min_secs {
                                    let mut f = Firing::new(ri, vec![obj(tr)]);
                                    f.direction = Some(observed_direction(first.1, last.1));
                                    fire = Some(f);
                                }
                            }
                        }
                    }
                    RuleKind::LaneClass => {
                        if let Geometry::Lane { allowed, .. } = &rule.geometry {
                            let banned = !allowed.is_empty() && !allowed.contains(&tr.class());
                            fire = held(
                                rule,
                                tr.id,
                                inside && banned,
                                t,
                                now,
                                p.min_secs,
                                f64::INFINITY,
                            )
                            .map(|_| Firing::new(ri, vec![obj(tr)]));
                        }
                    }
                    RuleKind::Sidewalk => {
                        fire = held(rule, tr.id, inside, t, now, p.min_secs, f64::INFINITY)
                            .map(|_| Firing::new(ri, vec![obj(tr)]));
                    }
                    RuleKind::IllegalStop | RuleKind::IllegalParking | RuleKind::Loitering => {
                        let drift = if rule.kind == RuleKind::Loitering {
                            f64::INFINITY
                        } else {
                            p.max_move
                        };
                        fire = held(rule, tr.id, inside, t, now, p.dwell_secs, drift).map(|d| {
                            let mut f = Firing::new(ri, vec![obj(tr)]);
                            f.dwell_secs = Some((d * 10.0).round() / 10.0);
                            f
                        });
                    }
                    RuleKind::Speeding => {
                        let speed = calibration.and_then(|hm| speed_kmh(tr, &hm, w, h));
                        let over = speed.is_some_and(|v| v > p.speed_limit_kmh);
                        fire =
                            held(rule, tr.id, over, t, now, p.min_secs, f64::INFINITY).map(|_| {
                                let mut f = Firing::new(ri, vec![obj(tr)]);
                                f.speed_kmh = speed.map(|v| (v * 10.0).round() / 10.0);
                                f
                            });
                    }
                    RuleKind::Overload => {
                        let riders: Vec<&Track> = tracks
                            .iter()
                            .filter(|o| {
                                o.matched && Some(o.class()) == person && on_bike(&o.bbox, &tr.bbox)
                            })
                            .collect();
                        let over = riders.len() as u32 > p.max_count;
                        fire =
                            held(rule, tr.id, over, t, now, p.min_secs, f64::INFINITY).map(|_| {
                                let mut objs = vec![obj(tr)];
                                objs.extend(riders.iter().map(|r| obj(r)));
                                let mut f = Firing::new(ri, objs);
                                f.count = Some(riders.len() as u32);
                                f
                            });
                    }
                    RuleKind::RedLight => {
                        if let Geometry::Line { points, .. } = &rule.geometry {
                            // Red both just before and just after the crossing step:
                            // a light that changed during the step gets the benefit of the doubt.
                            if let Some((ta, tb, a, b)) =
                                first_crossing(tr, *points, rule.direction, &norm)
                            {
                                match (light_at(ta), light_at(tb)) {
                                    (Some((Light::Red, src)), Some((Light::Red, _))) => {
                                        let mut f = Firing::new(ri, vec![obj(tr)]);
                                        f.direction = Some(observed_direction(a, b));
                                        f.signal = Some((Light::Red, src));
                                        fire = Some(f);
                                    }
                                    // Crossed on another light: never judge this track again.
                                    _ => {
                                        rule.fired.insert(tr.id);
                                    }
                                }
                            }
                        }
                    }
                    RuleKind::StopLine => {
                        if let Geometry::Line { points, .. } = &rule.geometry {
                            let light = light_at(t);
                            let red = !has_signal || light.is_some_and(|(l, _)| l == Light::Red);
                            let b = tr.bbox;
                            let (l, r, bottom) = (
                                [b[0] as f64 / w, b[3] as f64 / h],
                                [b[2] as f64 / w, b[3] as f64 / h],
                                b[3] as f64 / h,
                            );
                            let mid = [
                                (b[0] + b[2]) as f64 / 2.0 / w,
                                (b[1] as f64 / h + bottom) / 2.0,
                            ];
                            // On the line: it passes under the lower half of the box.
                            let over = segments_cross(l, r, points[0], points[1])
                                || segments_cross(mid, now, points[0], points[1]);
                            fire = held(rule, tr.id, over && red, t, now, p.min_secs, p.max_move)
                                .map(|_| {
                                    let mut f = Firing::new(ri, vec![obj(tr)]);
                                    f.signal = light.filter(|_| has_signal);
                                    f
                                });
                        }
                    }
                    RuleKind::NoHelmet => {
                        let need = rule.cascade.as_ref().map_or(2, |c| c.min_votes);
                        if let Some(&(pos, _, best)) = rule.votes.get(&tr.id)
                            && pos >= need
                        {
                            let mut f = Firing::new(ri, vec![obj(tr)]);
                            f.confidence = Some(best);
                            fire = Some(f);
                        }
                    }
                    RuleKind::Crowd | RuleKind::FireSmoke | RuleKind::Fight => {}
                }
                if let Some(f) = fire {
                    rule.fired.insert(tr.id);
                    rule.since.remove(&tr.id);
                    out.push(f);
                }
            }
        }
        out
    }
}

/// A rule of the config that cannot be compiled for its camera.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error("rule '{rule}' needs a {what}")]
    Missing { rule: String, what: &'static str },
    #[error("rule '{rule}': {what} '{name}' is not defined for this camera")]
    Undefined {
        rule: String,
        what: &'static str,
        name: String,
    },
    #[error("rule '{rule}': {what} '{name}' needs two points")]
    TwoPoints {
        rule: String,
        what: &'static str,
        name: String,
    },
    #[error("rule '{rule}': class '{class}' is not a label of the camera's model")]
    UnknownClass { rule: String, class: String },
    #[error(
        "rule '{rule}': schedule {start}–{end} {tz} is not valid (HH:MM and an IANA time zone)"
    )]
    Schedule {
        rule: String,
        start: String,
        end: String,
        tz: String,
    },
}

/// The rule's name in alerts: as configured, else `<kind>:<zone, line or lane>`.
fn rule_name(r: &config::RuleConfig, setup: &RuleSetup) -> String {
    let kind = *r.kind.get_ref();
    let geometry = match kind.needs() {
        Needs::Zone => r.zone.as_ref(),
        Needs::Line => r.line.as_ref(),
        Needs::Lane => r.lane.as_ref(),
        // Optional zone of a whole-frame rule: named only when it exists.
        Needs::Nothing => r
            .zone
            .as_ref()
            .filter(|z| setup.zones.iter().any(|x| x.name.get_ref() == z.get_ref())),
    };
    match (&r.name, geometry) {
        (Some(n), _) => n.clone(),
        (None, Some(g)) => format!("{}:{}", kind.as_str(), g.get_ref()),
        (None, None) => kind.as_str().to_string(),
    }
}

/// Class names → indices in `labels`; every name must be a label.
fn class_indices(rule: &str, names: &[String], labels: &[String]) -> Result<Vec<usize>, RuleError> {
    names
        .iter()
        .map(|c| {
            labels
                .iter()
                .position(|l| l == c)
                .ok_or_else(|| RuleError::UnknownClass {
                    rule: rule.to_string(),
                    class: c.clone(),
                })
        })
        .collect()
}

/// The first two points of a line or arrow.
fn two_points(
    rule: &str,
    what: &'static str,
    name: &str,
    p: &[[f64; 2]],
) -> Result<[[f64; 2]; 2], RuleError> {
    match p {
        [a, b, ..] => Ok([*a, *b]),
        _ => Err(RuleError::TwoPoints {
            rule: rule.to_string(),
            what,
            name: name.to_string(),
        }),
    }
}

/// The zone, line or lane a rule refers to.
fn resolve_geometry(
    r: &config::RuleConfig,
    rule: &str,
    setup: &RuleSetup,
    labels: &[String],
) -> Result<Geometry, RuleError> {
    let missing = |what| RuleError::Missing {
        rule: rule.to_string(),
        what,
    };
    let undefined = |what, name: &String| RuleError::Undefined {
        rule: rule.to_string(),
        what,
        name: name.clone(),
    };
    Ok(match r.kind.get_ref().needs() {
        Needs::Zone => {
            let zn = r.zone.as_ref().ok_or_else(|| missing("zone"))?.get_ref();
            let z = setup
                .zones
                .iter()
                .find(|z| z.name.get_ref() == zn)
                .ok_or_else(|| undefined("zone", zn))?;
            Geometry::Zone {
                name: zn.clone(),
                polygon: z.polygon.get_ref().clone(),
            }
        }
        Needs::Line => {
            let ln = r.line.as_ref().ok_or_else(|| missing("line"))?.get_ref();
            let l = setup
                .lines
                .iter()
                .find(|l| l.name.get_ref() == ln)
                .ok_or_else(|| undefined("line", ln))?;
            Geometry::Line {
                name: ln.clone(),
                points: two_points(rule, "line", ln, l.points.get_ref())?,
            }
        }
        Needs::Lane => {
            let ln = r.lane.as_ref().ok_or_else(|| missing("lane"))?.get_ref();
            let l = setup
                .lanes
                .iter()
                .find(|l| l.name.get_ref() == ln)
                .ok_or_else(|| undefined("lane", ln))?;
            let d = l
                .direction
                .as_ref()
                .ok_or_else(|| missing("lane direction"))?;
            Geometry::Lane {
                name: ln.clone(),
                polygon: l.polygon.get_ref().clone(),
                arrow: two_points(rule, "lane direction", ln, d.get_ref())?,
                allowed: class_indices(rule, l.classes.get_ref(), labels)?,
            }
        }
        // A whole-frame rule may be narrowed to a zone; one that does not
        // exist leaves it on the whole frame.
        Needs::Nothing => match r
            .zone
            .as_ref()
            .and_then(|z| setup.zones.iter().find(|x| x.name.get_ref() == z.get_ref()))
        {
            Some(z) => Geometry::Zone {
                name: z.name.get_ref().clone(),
                polygon: z.polygon.get_ref().clone(),
            },
            None => Geometry::None,
        },
    })
}

/// The rule's daily window, if it has one.
fn compile_schedule(r: &config::RuleConfig, rule: &str) -> Result<Option<Schedule>, RuleError> {
    let Some(s) = &r.schedule else {
        return Ok(None);
    };
    let parsed = (|| {
        Some(Schedule {
            start: parse_hhmm(s.start.get_ref())?,
            end: parse_hhmm(s.end.get_ref())?,
            tz: s.tz.get_ref().parse().ok()?,
        })
    })();
    parsed.map(Some).ok_or_else(|| RuleError::Schedule {
        rule: rule.to_string(),
        start: s.start.get_ref().clone(),
        end: s.end.get_ref().clone(),
        tz: s.tz.get_ref().clone(),
    })
}

/// One rule of the config, compiled; defaults applied.
fn compile_rule(
    r: &config::RuleConfig,
    setup: &RuleSetup,
    labels: &[String],
) -> Result<Rule, RuleError> {
    let kind = *r.kind.get_ref();
    let name = rule_name(r, setup);
    let geometry = resolve_geometry(r, &name, setup, labels)?;
    let schedule = compile_schedule(r, &name)?;
    let (min_secs, dwell) = defaults(kind);
    let mut classes = class_indices(&name, r.classes.get_ref(), labels)?;
    if classes.is_empty() {
        let default: &[&str] = match kind {
            RuleKind::Crowd | RuleKind::Loitering => &["person"],
            RuleKind::Overload | RuleKind::NoHelmet => &["motorcycle"],
            RuleKind::Sidewalk
            | RuleKind::IllegalStop
            | RuleKind::IllegalParking
            | RuleKind::RedLight
            | RuleKind::StopLine => &["car", "motorcycle", "bus", "truck", "bicycle"],
            _ => &[],
        };
        // A model without some of these classes simply never sees them.
        classes = default
            .iter()
            .filter_map(|c| labels.iter().position(|l| l == c))
            .collect();
    }
    let cascade_kind = matches!(
        kind,
        RuleKind::NoHelmet | RuleKind::FireSmoke | RuleKind::Fight
    );
    if cascade_kind && r.model.is_none() {
        return Err(RuleError::Missing {
            rule: name,
            what: "model",
        });
    }
    Ok(Rule {
        name,
        kind,
        classes,
        geometry,
        direction: r.direction,
        min_score: r.min_score,
        min_hits: r.min_hits,
        severity: r.severity,
        params: Params {
            min_secs: r.min_secs.unwrap_or(min_secs),
            dwell_secs: r.dwell_secs.unwrap_or(dwell),
            min_distance: r.min_distance.unwrap_or(0.05),
            max_move: r.max_move.unwrap_or(0.02),
            max_count: r.max_count.unwrap_or(2),
            speed_limit_kmh: r.speed_limit_kmh.unwrap_or(f64::INFINITY),
            schedule,
        },
        cascade: r.model.as_ref().map(|m| Cascade {
            model: m.get_ref().clone(),
            labels: r
                .labels
                .as_ref()
                .map(|l| l.get_ref().clone())
                .unwrap_or_default(),
            min_confidence: r.min_confidence.unwrap_or(0.6),
            min_votes: r.min_votes.unwrap_or(2).max(1),
            interval: 1.0 / r.max_rate_hz.unwrap_or(1.0).max(1e-3),
            region: r.region.unwrap_or(if kind == RuleKind::NoHelmet {
                CropRegion::UpperHalf
            } else {
                CropRegion::Box
            }),
        }),
        votes: HashMap::new(),
        frame_votes: (f64::NEG_INFINITY, 0, 0, 0.0),
        fired: HashSet::new(),
        since: HashMap::new(),
        crowd: (false, None, None),
    })
}

/// The first step of a track's history that crosses the line segment in
/// `dir`: (time before, time after, point before, point after), normalised.
/// Any step counts, so a crossing made before the track was confirmed is
/// still seen.
fn first_crossing(
    tr: &Track,
    line: [[f64; 2]; 2],
    dir: Direction,
    norm: &impl Fn([f32; 2]) -> [f64; 2],
) -> Option<(f64, f64, [f64; 2], [f64; 2])> {
    tr.history.windows(2).find_map(|w| {
        let (a, b) = (norm(w[0].1), norm(w[1].1));
        (segments_cross(a, b, line[0], line[1]) && movement_matches(dir, a, b))
            .then_some((w[0].0, w[1].0, a, b))
    })
}

/// The signal state at stream time `t` in a log of changes.
fn light_at(log: &VecDeque<(f64, Light, &'static str)>, t: f64) -> Option<(Light, &'static str)> {
    log.iter()
        .rev()
        .find(|(ts, _, _)| *ts <= t)
        .map(|(_, l, s)| (*l, *s))
}

/// Tracks how long `cond` has held for a track (restarting when it breaks or
/// the object drifts more than `max_move` from where it started); returns the
/// duration once it reaches `need` seconds.
fn held(
    rule: &mut Rule,
    id: u64,
    cond: bool,
    t: f64,
    p: [f64; 2],
    need: f64,
    max_move: f64,
) -> Option<f64> {
    if !cond {
        rule.since.remove(&id);
        return None;
    }
    let e = rule.since.entry(id).or_insert((t, p));
    if (p[0] - e.1[0]).hypot(p[1] - e.1[1]) > max_move {
        *e = (t, p);
    }
    let d = t - e.0;
    (d >= need).then_some(d)
}

/// Ground speed over the last second of the track's history.
fn speed_kmh(tr: &Track, hm: &Homography, w: f64, h: f64) -> Option<f64> {
    let (t1, p1) = *tr.history.last()?;
    let (t0, p0) = *tr.history.iter().rev().find(|(ht, _)| t1 - ht >= 0.8)?;
    let a = hm.apply([p0[0] as f64 / w, p0[1] as f64 / h])?;
    let b = hm.apply([p1[0] as f64 / w, p1[1] as f64 / h])?;
    Some((b[0] - a[0]).hypot(b[1] - a[1]) / (t1 - t0) * 3.6)
}

/// A person riding a motorbike: their feet are within the bike's width and
/// their box overlaps the bike's box vertically.
fn on_bike(person: &[f32; 4], bike: &[f32; 4]) -> bool {
    let cx = (person[0] + person[2]) / 2.0;
    cx >= bike[0] && cx <= bike[2] && person[3] >= bike[1] && person[1] <= bike[3]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::Detection;
    use crate::track::{Tracker, TrackerConfig};

    /// The rule part of a camera's config.
    #[derive(serde::Deserialize)]
    struct Cam {
        #[serde(default)]
        zones: Vec<config::ZoneConfig>,
        #[serde(default)]
        lines: Vec<config::LineConfig>,
        rules: Vec<config::RuleConfig>,
    }

    fn engine(toml_text: &str) -> RuleEngine {
        let cam: Cam = toml::from_str(toml_text).unwrap();
        let setup = RuleSetup {
            zones: &cam.zones,
            lines: &cam.lines,
            lanes: &[],
            calibration: None,
            signal: None,
            rules: &cam.rules,
        };
        RuleEngine::new(&setup, &labels()).unwrap()
    }

    const CAM: &str = r#"
[[zones]]
name = "box"
polygon = [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]]
[[lines]]
name = "mid"
points = [[0.5, 0.0], [0.5, 1.0]]
[[rules]]
kind = "zone_enter"
zone = "box"
classes = ["car"]
[[rules]]
kind = "line_cross"
line = "mid"
classes = ["car"]
direction = "right_to_left"
"#;

    fn labels() -> Vec<String> {
        ["person", "bicycle", "car"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// A car (class 2) moving horizontally across a 100x100 frame; its ground
    /// point is at y = 0.5.
    fn run(xs: &[f32], class: usize) -> Vec<Firing> {
        let mut eng = engine(CAM);
        let mut tr = Tracker::new(TrackerConfig::default());
        let mut all = Vec::new();
        for (i, &x) in xs.iter().enumerate() {
            let d = Detection {
                class,
                score: 0.9,
                bbox: [x - 5.0, 40.0, x + 5.0, 50.0],
            };
            let tracks = tr.update(&[d], i as f64 * 0.2).to_vec();
            all.extend(eng.evaluate(&tracks, 100, 100, i as f64 * 0.2, SystemTime::now()));
        }
        all
    }

    #[test]
    fn cascade_votes_are_rate_limited_and_fire_once() {
        let text = r#"
[[rules]]
kind = "no_helmet"
classes = ["car"]
model = "helmet"
labels = ["no_helmet"]
min_votes = 2
max_rate_hz = 1.0
[[rules]]
kind = "fire_smoke"
model = "fire"
labels = ["fire"]
min_votes = 2
max_rate_hz = 2.0
"#;
        let mut eng = engine(text);
        let mut tr = Tracker::new(TrackerConfig::default());
        let (mut requests, mut fired, mut fire_events) = (0, 0, Vec::new());
        for i in 0..30 {
            let t = i as f64 * 0.2;
            let d = Detection {
                class: 2,
                score: 0.9,
                bbox: [10.0 + i as f32, 40.0, 30.0 + i as f32, 60.0],
            };
            let tracks = tr.update(&[d], t).to_vec();
            for req in eng.cascade_requests(&tracks, 100, 100, t) {
                if req.track.is_some() {
                    requests += 1;
                    // Upper half of the box only.
                    assert!((req.crop[3] - 0.5).abs() < 1e-6, "{:?}", req.crop);
                    eng.cascade_result(&req, 0.9);
                } else {
                    // Fire seen for the first 3 s, then gone.
                    eng.cascade_result(&req, if t < 3.0 { 0.8 } else { 0.1 });
                }
            }
            for f in eng.evaluate(&tracks, 100, 100, t, SystemTime::now()) {
                match eng.rules[f.rule].kind {
                    RuleKind::NoHelmet => {
                        fired += 1;
                        assert_eq!(f.confidence, Some(0.9));
                    }
                    _ => fire_events.push(f.phase),
                }
            }
        }
        // 1 Hz per track: the second positive comes about 1 s after the first; then it stops asking.
        assert_eq!(fired, 1);
        assert_eq!(requests, 2, "requests after firing");
        assert_eq!(fire_events, vec![Some("start"), Some("end")]);
    }

    #[test]
    fn geometry_primitives() {
        let sq = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
        assert!(point_in_polygon([0.5, 0.5], &sq));
        assert!(!point_in_polygon([1.5, 0.5], &sq));
        assert_eq!(polygon_area(&sq), 1.0);
        assert!(segments_cross(
            [0.0, 0.5],
            [1.0, 0.5],
            [0.5, 0.0],
            [0.5, 1.0]
        ));
        assert!(!segments_cross(
            [0.0, 0.5],
            [0.4, 0.5],
            [0.5, 0.0],
            [0.5, 1.0]
        ));
    }

    #[test]
    fn zone_enter_fires_once_per_track() {
        let xs: Vec<f32> = (0..30).map(|i| 90.0 - 3.0 * i as f32).collect();
        let f: Vec<_> = run(&xs, 2).into_iter().filter(|f| f.rule == 0).collect();
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].objects[0].class, 2);
        assert!(f[0].objects[0].bbox[0] >= 0.3 && f[0].objects[0].bbox[2] <= 0.7);
    }

    #[test]
    fn zone_ignores_other_classes() {
        let xs: Vec<f32> = (0..30).map(|i| 90.0 - 3.0 * i as f32).collect();
        assert!(run(&xs, 0).is_empty());
    }

    #[test]
    fn line_cross_respects_direction() {
        let right_to_left: Vec<f32> = (0..30).map(|i| 90.0 - 3.0 * i as f32).collect();
        let f: Vec<_> = run(&right_to_left, 2)
            .into_iter()
            .filter(|f| f.rule == 1)
            .collect();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].direction, Some(Direction::RightToLeft));
        let left_to_right: Vec<f32> = (0..30).map(|i| 10.0 + 3.0 * i as f32).collect();
        assert!(run(&left_to_right, 2).iter().all(|f| f.rule != 1));
    }

    #[test]
    fn unconfirmed_tracks_do_not_fire() {
        // Two frames only: the track never reaches min_hits = 3.
        assert!(run(&[52.0, 48.0], 2).is_empty());
    }
}
