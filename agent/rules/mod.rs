//! Rules (sans-IO): zones, lines and lanes in normalised coordinates, judged
//! on the tracker's output. Object rules fire at most once per tracked object;
//! zone-level rules (crowd) raise a start and an end.
//!
//! - `config`: the rule part of a camera's config, and its checks;
//! - `compile`: config → [`Rule`]s ([`RuleEngine::new`]);
//! - `kinds`: one row per kind ([`RuleKind::info`]) and one file per kind
//!   with its state and judgement;
//! - `common`, `geometry`: what the kinds share;
//! - `cascade`: running the cascade models the rules ask for;
//! - `signal`: the traffic-signal state (lamp pixels or the controller board);
//! - `controller`: signed controller messages and which ones to take.

pub mod cascade;
mod common;
mod compile;
pub mod config;
pub mod controller;
mod geometry;
mod kinds;
pub mod signal;

use std::collections::VecDeque;
use std::time::SystemTime;

use crate::store::Severity;
use crate::track::Track;
use common::{FrameCtx, SignalChange};
pub use common::{Schedule, parse_hhmm};
pub use compile::RuleError;
pub use config::{CropRegion, Direction, Needs, RuleKind, RuleSetup, SignalSource};
pub use geometry::{
    Geometry, Homography, movement_matches, observed_direction, point_in_polygon, polygon_area,
    segments_cross,
};
use kinds::Judge;
pub use kinds::{KINDS, KindInfo};
pub use signal::Light;

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
pub(crate) const MAX_CASCADES_PER_FRAME: usize = 4;

/// A compiled rule (its state is kept by the engine, beside it).
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
}

impl Rule {
    /// Whether the rule judges objects of class `class`.
    pub(crate) fn applies_to(&self, class: usize) -> bool {
        self.classes.is_empty() || self.classes.contains(&class)
    }

    /// Whether a track may trigger the rule in this frame: seen now,
    /// confirmed, of one of its classes, scored high enough.
    pub(crate) fn eligible(&self, tr: &Track) -> bool {
        tr.matched
            && tr.confirmed(self.min_hits)
            && self.applies_to(tr.class())
            && tr.best_score >= self.min_score
    }
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

/// `start` or `end` of a zone-level event (crowd, fire_smoke, fight).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Start,
    End,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::End => "end",
        }
    }
}

/// Why a zone-level event ended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The condition stopped holding.
    Cleared,
    /// The camera's stream ended while the event was open.
    StreamLost,
    /// The camera was stopped (shutdown, or a reload that changed or removed it).
    CameraStopped,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Cleared => "cleared",
            EndReason::StreamLost => "stream_lost",
            EndReason::CameraStopped => "camera_stopped",
        }
    }
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
    pub phase: Option<Phase>,
    /// Why an `end` came: `cleared` (the condition stopped holding) or
    /// `stream_lost` (the camera's stream ended while the event was open).
    pub end_reason: Option<EndReason>,
    pub dwell_secs: Option<f64>,
    /// Signal state that decided (red_light, stop_line) and its source.
    pub signal: Option<(Light, SignalSource)>,
    /// Best confidence of the cascade model (no_helmet, fire_smoke, fight).
    pub confidence: Option<f32>,
}

impl Firing {
    /// A firing about `objects`; the engine sets `rule`.
    pub(crate) fn new(objects: Vec<FiredObject>) -> Firing {
        Firing {
            rule: 0,
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

/// A camera's compiled rules and their state.
#[derive(Debug)]
pub struct RuleEngine {
    pub rules: Vec<Rule>,
    /// Each rule's state, in the order of `rules`.
    judges: Vec<Box<dyn Judge>>,
    calibration: Option<Homography>,
    person: Option<usize>,
    /// Recent signal changes, oldest first.
    signal: VecDeque<SignalChange>,
    has_signal: bool,
}

impl RuleEngine {
    /// The cascade runs due for this frame: per tracked object at most one
    /// per `interval`, at most [`MAX_CASCADES_PER_FRAME`] per rule.
    pub fn cascade_requests(
        &mut self,
        tracks: &[Track],
        w: u32,
        h: u32,
        t: f64,
    ) -> Vec<CascadeRequest> {
        let size = [w as f64, h as f64];
        let mut out = Vec::new();
        for (ri, (rule, judge)) in self.rules.iter().zip(&mut self.judges).enumerate() {
            for mut req in judge.cascade_requests(rule, tracks, size, t) {
                req.rule = ri;
                out.push(req);
            }
        }
        out
    }

    /// Feeds back a cascade run: `confidence` is the best score of any of the
    /// rule's labels in the model's output.
    pub fn cascade_result(&mut self, req: &CascadeRequest, confidence: f32) {
        let (Some(rule), Some(judge)) = (self.rules.get(req.rule), self.judges.get_mut(req.rule))
        else {
            return;
        };
        let Some(c) = &rule.cascade else { return };
        judge.cascade_result(req.track, confidence, confidence >= c.min_confidence);
    }

    /// Records the signal state seen at stream time `t`.
    pub fn set_signal(&mut self, t: f64, light: Light, source: SignalSource) {
        self.has_signal = true;
        if self.signal.back().is_some_and(|c| c.light == light) {
            return;
        }
        self.signal.push_back(SignalChange { t, light, source });
        // Keep a minute of changes, and at least the latest state.
        while self.signal.len() > 1 && self.signal.get(1).is_some_and(|c| t - c.t > 60.0) {
            self.signal.pop_front();
        }
    }

    /// The signal state at stream time `t`.
    pub fn light_at(&self, t: f64) -> Option<(Light, SignalSource)> {
        common::light_at(&self.signal, t)
    }

    /// Whether a zone-level event (crowd, fire/smoke, fight) is open.
    pub fn any_open(&self) -> bool {
        self.judges.iter().any(|j| j.is_open())
    }

    /// Ends every open zone-level event because the stream they were seen on
    /// ended (`reason`: `stream_lost`, or `camera_stopped` at shutdown or a
    /// reload): nothing can confirm they still hold, and an IOC operator must
    /// not be left with a `start` that never ends. State resets, so the same
    /// event starts afresh when the camera is back.
    pub fn end_open(&mut self, reason: EndReason) -> Vec<Firing> {
        let mut out = Vec::new();
        for (ri, judge) in self.judges.iter_mut().enumerate() {
            if let Some(mut f) = judge.end_open(reason) {
                f.rule = ri;
                out.push(f);
            }
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
        let ctx = FrameCtx {
            tracks,
            w: w as f64,
            h: h as f64,
            t,
            wall,
            calibration: self.calibration,
            person: self.person,
            signal: &self.signal,
            has_signal: self.has_signal,
        };
        let mut out = Vec::new();
        for (ri, (rule, judge)) in self.rules.iter().zip(&mut self.judges).enumerate() {
            for mut f in judge.evaluate(rule, &ctx) {
                f.rule = ri;
                out.push(f);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
