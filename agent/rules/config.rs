//! The rule part of a camera's config: zones, lines, lanes, calibration, the
//! traffic signal and the rules themselves, as written in TOML, and the
//! checks of that part (`check_camera_rules`). The config module re-exports
//! these types; nothing here imports it.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::base::diag::Collector;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub name: Spanned<String>,
    /// Polygon corners as normalised `[x, y]` pairs (0..1, origin top-left), at least 3.
    pub polygon: Spanned<Vec<[f64; 2]>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    pub name: Spanned<String>,
    /// Two normalised `[x, y]` points.
    pub points: Spanned<Vec<[f64; 2]>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// An object of the given classes enters a zone.
    ZoneEnter,
    /// An object of the given classes crosses a line in the given direction.
    LineCross,
    /// A vehicle moves against its lane's direction.
    WrongWay,
    /// A vehicle crosses a solid lane line.
    LaneLine,
    /// A class drives in a lane that does not allow it.
    LaneClass,
    /// A vehicle stands still in a zone (no stopping) beyond `dwell_secs`.
    IllegalStop,
    /// Same as `illegal_stop`, with a longer default dwell (parking).
    IllegalParking,
    /// A vehicle in a pedestrian zone (sidewalk).
    Sidewalk,
    /// Calibrated speed over `speed_limit_kmh` for `min_secs`.
    Speeding,
    /// More than `max_count` persons on one motorbike.
    Overload,
    /// More than `max_count` persons in a zone for `min_secs`.
    Crowd,
    /// One person dwelling in a zone beyond `dwell_secs`.
    Loitering,
    /// Entering a restricted zone while its `schedule` is active.
    Intrusion,
    /// Crossing the stop line (`line`, in `direction`) while the signal is red.
    RedLight,
    /// Standing on or past the stop line while the signal is red (or always,
    /// without a signal) for `min_secs`.
    StopLine,
    /// A rider without a helmet: a cascade `model` on crops of tracked
    /// objects finds one of `labels` (e.g. `no_helmet`).
    NoHelmet,
    /// Fire or smoke: a `model` on the whole frame (or a zone) finds one of `labels`.
    FireSmoke,
    /// A fight: a `model` on the whole frame (or a zone) finds one of `labels`.
    Fight,
    /// An object of the given classes that was in a zone leaves it.
    ZoneExit,
}

/// Which part of a tracked object's box a cascade model sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CropRegion {
    #[default]
    Box,
    UpperHalf,
    UpperThird,
}

/// The geometry a rule kind refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Zone,
    Line,
    Lane,
    Nothing,
}

/// A lane: where it is, which way traffic must move, which classes may use it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneConfig {
    pub name: Spanned<String>,
    /// Normalised polygon of the lane, at least 3 points.
    pub polygon: Spanned<Vec<[f64; 2]>>,
    /// Allowed direction of travel: an arrow `[[x1, y1], [x2, y2]]` from tail to head.
    #[serde(default)]
    pub direction: Option<Spanned<Vec<[f64; 2]>>>,
    /// Classes allowed in the lane (for `lane_class`). Default: every class.
    #[serde(default = "default_classes")]
    pub classes: Spanned<Vec<String>>,
}

/// Ground-plane calibration: image points (normalised) and their positions on
/// the road in metres, at least four, no three on one line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationConfig {
    pub image: Spanned<Vec<[f64; 2]>>,
    pub world: Spanned<Vec<[f64; 2]>>,
}

/// Where a camera's traffic-signal state comes from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SignalSource {
    /// The signal head seen in the picture: `red_lamp` and `green_lamp` boxes.
    Image,
    /// Published by the traffic controller on an MQTT `topic` of the agent's broker.
    Mqtt,
}

/// Traffic-signal state for `red_light` and `stop_line`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalConfig {
    pub source: Spanned<SignalSource>,
    /// `image`: box `[[x1, y1], [x2, y2]]` (normalised) around the red lamp.
    #[serde(default)]
    pub red_lamp: Option<Spanned<Vec<[f64; 2]>>>,
    /// `image`: box around the green lamp.
    #[serde(default)]
    pub green_lamp: Option<Spanned<Vec<[f64; 2]>>>,
    /// `mqtt`: topic carrying `red`, `yellow` or `green` (plain or JSON
    /// `{"state": "red"}`; signed JSON with `controller_key`).
    #[serde(default)]
    pub topic: Option<Spanned<String>>,
    /// `mqtt`: the traffic controller's Ed25519 public key, 64 hex digits.
    /// With it, only messages that key signed for this topic, recent and
    /// newer than the last, change the state (see Traffic signal); without
    /// it, any client the broker lets publish on `topic` is believed.
    #[serde(default)]
    pub controller_key: Option<Spanned<String>>,
    /// `mqtt`: file holding `controller_key` (hex, first line), instead of
    /// `controller_key`; relative to the config file.
    #[serde(default)]
    pub controller_key_file: Option<Spanned<PathBuf>>,
    /// `image`: frames a new colour must persist before the state changes. Default 3.
    #[serde(default = "default_hold")]
    pub hold_frames: u32,
    /// `mqtt`: seconds after which a state not refreshed counts as unknown
    /// (a signed one: after its `ts`; older signed messages are refused). Default 10.
    #[serde(default = "default_signal_age")]
    pub max_age_secs: f64,
}

fn default_hold() -> u32 {
    3
}
fn default_signal_age() -> f64 {
    10.0
}

/// Local-time window in which a rule is active, e.g. 22:00–05:00 Asia/Ho_Chi_Minh.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// `HH:MM`, local time.
    pub start: Spanned<String>,
    /// `HH:MM`, local time; may be earlier than `start` (the window crosses midnight).
    pub end: Spanned<String>,
    /// IANA time zone, e.g. `Asia/Ho_Chi_Minh`.
    pub tz: Spanned<String>,
}

/// Direction of travel across a line, in image terms.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Any,
    LeftToRight,
    RightToLeft,
    TopToBottom,
    BottomToTop,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule name, used in alerts. Default `<kind>:<zone or line>`.
    #[serde(default)]
    pub name: Option<String>,
    pub kind: Spanned<RuleKind>,
    /// Zone name (for zone rules: zone_enter, zone_exit, illegal_stop,
    /// illegal_parking, sidewalk, crowd, loitering, intrusion).
    #[serde(default)]
    pub zone: Option<Spanned<String>>,
    /// Line name (for line rules: line_cross, lane_line, red_light, stop_line).
    #[serde(default)]
    pub line: Option<Spanned<String>>,
    /// Model labels this rule applies to. Default: every class.
    #[serde(default = "default_classes")]
    pub classes: Spanned<Vec<String>>,
    /// `any`, `left_to_right`, `right_to_left`, `top_to_bottom`, `bottom_to_top`
    /// (for line_cross, lane_line, red_light — required there — and stop_line). Default `any`.
    #[serde(default)]
    pub direction: Direction,
    /// Minimum detection score of the object. Default 0 (the model's threshold applies).
    #[serde(default)]
    pub min_score: f32,
    /// `low`, `normal` or `high`: decides what the outbox drops first when it
    /// is full during a long outage. Default `normal`.
    #[serde(default)]
    pub severity: Option<crate::store::Severity>,
    /// Frames the object must be tracked before it may trigger. Default 3.
    #[serde(default = "default_min_hits")]
    pub min_hits: u32,
    /// Lane name (for `wrong_way`, `lane_class`).
    #[serde(default)]
    pub lane: Option<Spanned<String>>,
    /// Seconds a condition must hold before the rule fires. Defaults per kind:
    /// wrong_way 1, lane_class 1, sidewalk 1, speeding 1, overload 1,
    /// stop_line 2, crowd 5.
    #[serde(default)]
    pub min_secs: Option<f64>,
    /// Seconds an object must stay (illegal_stop 30, illegal_parking 300, loitering 60).
    #[serde(default)]
    pub dwell_secs: Option<f64>,
    /// For `wrong_way`: distance moved against the lane, frame-normalised. Default 0.05.
    #[serde(default)]
    pub min_distance: Option<f64>,
    /// For stops: how far (frame-normalised) an object may drift and still
    /// count as standing still. Default 0.02.
    #[serde(default)]
    pub max_move: Option<f64>,
    /// For `crowd` and `overload`: the most persons allowed (crowd: required;
    /// overload default 2).
    #[serde(default)]
    pub max_count: Option<u32>,
    /// For `speeding`: the limit in km/h (needs the camera's calibration).
    #[serde(default)]
    pub speed_limit_kmh: Option<f64>,
    /// For `intrusion` (and `zone_enter`): when the rule is active. Default: always.
    #[serde(default)]
    pub schedule: Option<ScheduleConfig>,
    /// Cascade (`no_helmet`, `fire_smoke`, `fight`): the second model, one of `[[models]]`.
    #[serde(default)]
    pub model: Option<Spanned<String>>,
    /// Cascade: labels of that model that mean a violation (e.g. `["no_helmet"]`).
    #[serde(default)]
    pub labels: Option<Spanned<Vec<String>>>,
    /// Cascade: score of a label needed to count as a positive. Default 0.6.
    #[serde(default)]
    pub min_confidence: Option<f32>,
    /// Cascade: positive results needed before the rule fires (and, for
    /// whole-frame rules, negatives before it ends). Default 2.
    #[serde(default)]
    pub min_votes: Option<u32>,
    /// Cascade: most model runs per second per tracked object (or per frame
    /// region). Default 1.
    #[serde(default)]
    pub max_rate_hz: Option<f64>,
    /// Cascade on tracks: `box`, `upper_half` or `upper_third` of the object's
    /// box. Default `upper_half` for no_helmet.
    #[serde(default)]
    pub region: Option<CropRegion>,
}

fn default_classes() -> Spanned<Vec<String>> {
    Spanned::new(0..0, Vec::new())
}
fn default_min_hits() -> u32 {
    3
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the rule engine and the rule checks read of one camera's config.
#[derive(Debug, Clone, Copy)]
pub struct RuleSetup<'a> {
    pub zones: &'a [ZoneConfig],
    pub lines: &'a [LineConfig],
    pub lanes: &'a [LaneConfig],
    pub calibration: Option<&'a CalibrationConfig>,
    pub signal: Option<&'a SignalConfig>,
    pub rules: &'a [RuleConfig],
}

/// A model as the rule checks know it.
#[derive(Debug, Clone, Copy)]
pub struct ModelLabels<'a> {
    /// The manifest's name.
    pub name: &'a str,
    pub labels: &'a [String],
}

/// What the rule checks know of a camera and the agent's models.
#[derive(Debug, Clone, Copy)]
pub struct CameraModels<'a> {
    /// The camera's id (for messages).
    pub camera: &'a str,
    /// The camera's detector, when known and loaded.
    pub detector: Option<ModelLabels<'a>>,
    /// Every `[[models]]` entry by name; `None` when its manifest did not load.
    pub models: &'a [(&'a str, Option<ModelLabels<'a>>)],
}

/// Names of a camera's zones, lines and lanes.
struct Names {
    zones: HashSet<String>,
    lines: HashSet<String>,
    lanes: HashSet<String>,
}

/// Checks the rule part of one camera's config (geometry, calibration,
/// signal, rules), reporting each problem at its place in the file.
pub fn check_camera_rules(s: &RuleSetup, models: &CameraModels, c: &mut Collector) {
    let names = Names {
        zones: check_zones(s.zones, c),
        lines: check_lines(s.lines, c),
        lanes: check_lanes(s.lanes, models.detector, c),
    };
    if let Some(cal) = s.calibration {
        check_calibration(cal, c);
    }
    if let Some(sig) = s.signal {
        check_signal(sig, c);
    }
    for r in s.rules {
        check_references(r, s, &names, models.camera, c);
        check_cascade(r, &names, models, c);
        check_params(r, s, models, c);
    }
}

/// Zones, lines and lanes per camera, at most each.
pub const MAX_SHAPES: usize = 32;
/// Characters in a zone, line or lane name, at most.
pub const MAX_NAME_CHARS: usize = 64;

/// A name is free text (Vietnamese, punctuation) but bounded: 1–64
/// characters, no control characters (newlines, tabs, escapes).
fn check_name(kind: &str, name: &Spanned<String>, c: &mut Collector) {
    let n = name.get_ref();
    let chars = n.chars().count();
    if chars == 0 {
        c.at(
            name.span(),
            format!("{kind} name is empty; give it a short name"),
        );
    } else if chars > MAX_NAME_CHARS {
        c.at(
            name.span(),
            format!("{kind} name has {chars} characters; at most {MAX_NAME_CHARS}"),
        );
    } else if n.chars().any(char::is_control) {
        c.at(
            name.span(),
            format!("{kind} name contains a control character (newline, tab, …); use plain text"),
        );
    }
}

/// At most [`MAX_SHAPES`] of a kind; the first one past it is named.
fn check_count(kind: &str, names: &[&Spanned<String>], c: &mut Collector) {
    if names.len() > MAX_SHAPES {
        c.at(
            names[MAX_SHAPES].span(),
            format!(
                "{} {kind}s; at most {MAX_SHAPES} per camera — merge some or split the view across cameras",
                names.len()
            ),
        );
    }
}

fn check_zones(zones: &[ZoneConfig], c: &mut Collector) -> HashSet<String> {
    let mut zone_names = HashSet::new();
    check_count(
        "zone",
        &zones.iter().map(|z| &z.name).collect::<Vec<_>>(),
        c,
    );
    for z in zones {
        check_name("zone", &z.name, c);
        if !zone_names.insert(z.name.get_ref().clone()) {
            c.at(
                z.name.span(),
                format!("zone '{}' is defined twice", z.name.get_ref()),
            );
        }
        let poly = z.polygon.get_ref();
        if poly.len() < 3 {
            c.at(
                z.polygon.span(),
                format!(
                    "zone '{}': a polygon needs at least 3 points, got {}",
                    z.name.get_ref(),
                    poly.len()
                ),
            );
        } else if let Some(msg) = check_points(poly) {
            c.at(
                z.polygon.span(),
                format!("zone '{}': {msg}", z.name.get_ref()),
            );
        } else if super::polygon_area(poly).abs() < 1e-6 {
            c.at(
                z.polygon.span(),
                format!(
                    "zone '{}': the polygon has no area (points on one line?)",
                    z.name.get_ref()
                ),
            );
        }
    }
    zone_names
}

fn check_lines(lines: &[LineConfig], c: &mut Collector) -> HashSet<String> {
    let mut line_names = HashSet::new();
    check_count(
        "line",
        &lines.iter().map(|l| &l.name).collect::<Vec<_>>(),
        c,
    );
    for l in lines {
        check_name("line", &l.name, c);
        if !line_names.insert(l.name.get_ref().clone()) {
            c.at(
                l.name.span(),
                format!("line '{}' is defined twice", l.name.get_ref()),
            );
        }
        let pts = l.points.get_ref();
        if pts.len() != 2 {
            c.at(
                l.points.span(),
                format!(
                    "line '{}': needs exactly 2 points, got {}",
                    l.name.get_ref(),
                    pts.len()
                ),
            );
        } else if let Some(msg) = check_points(pts) {
            c.at(
                l.points.span(),
                format!("line '{}': {msg}", l.name.get_ref()),
            );
        } else if (pts[0][0] - pts[1][0]).hypot(pts[0][1] - pts[1][1]) < 1e-6 {
            c.at(
                l.points.span(),
                format!("line '{}': its two points are the same", l.name.get_ref()),
            );
        }
    }
    line_names
}

fn check_lanes(
    lanes: &[LaneConfig],
    manifest: Option<ModelLabels>,
    c: &mut Collector,
) -> HashSet<String> {
    let mut lane_names = HashSet::new();
    check_count(
        "lane",
        &lanes.iter().map(|l| &l.name).collect::<Vec<_>>(),
        c,
    );
    for l in lanes {
        check_name("lane", &l.name, c);
        let ln = l.name.get_ref();
        if !lane_names.insert(ln.clone()) {
            c.at(l.name.span(), format!("lane '{ln}' is defined twice"));
        }
        let poly = l.polygon.get_ref();
        if poly.len() < 3 {
            c.at(
                l.polygon.span(),
                format!(
                    "lane '{ln}': a polygon needs at least 3 points, got {}",
                    poly.len()
                ),
            );
        } else if let Some(msg) = check_points(poly) {
            c.at(l.polygon.span(), format!("lane '{ln}': {msg}"));
        }
        match &l.direction {
            None => c.at(
                l.name.span(),
                format!("lane '{ln}' has no direction — add `direction = [[x1, y1], [x2, y2]]`, an arrow along the allowed travel"),
            ),
            Some(d) => {
                let p = d.get_ref();
                if p.len() != 2 {
                    c.at(d.span(), format!("lane '{ln}': direction needs exactly 2 points (tail, head), got {}", p.len()));
                } else if let Some(msg) = check_points(p) {
                    c.at(d.span(), format!("lane '{ln}': direction {msg}"));
                } else if (p[0][0] - p[1][0]).hypot(p[0][1] - p[1][1]) < 1e-6 {
                    c.at(d.span(), format!("lane '{ln}': direction has zero length"));
                }
            }
        }
        if let Some(man) = manifest {
            for class in l.classes.get_ref() {
                if !man.labels.iter().any(|x| x == class) {
                    c.at(
                        l.classes.span(),
                        format!("class '{class}' is not a label of model '{}'", man.name),
                    );
                }
            }
        }
    }
    lane_names
}

fn check_calibration(cal: &CalibrationConfig, c: &mut Collector) {
    let (img, world) = (cal.image.get_ref(), cal.world.get_ref());
    if img.len() < 4 {
        c.at(
            cal.image.span(),
            format!(
                "calibration needs at least 4 image points with their road positions, got {}",
                img.len()
            ),
        );
    } else if img.len() != world.len() {
        c.at(cal.world.span(), format!("calibration has {} image points but {} world points; give one world point (metres) per image point", img.len(), world.len()));
    } else if let Some(msg) = check_points(img) {
        c.at(cal.image.span(), format!("calibration: {msg}"));
    } else if super::Homography::fit(img, world).is_none() {
        c.at(
            cal.image.span(),
            "calibration points do not fit one ground-plane mapping (three on one line, or a point mistyped?); pick four corners of a road rectangle",
        );
    }
}

fn check_signal(sig: &SignalConfig, c: &mut Collector) {
    match sig.source.get_ref() {
        SignalSource::Image => {
            let key = sig.controller_key.as_ref().map(|k| k.span());
            if let Some(span) = key.or(sig.controller_key_file.as_ref().map(|f| f.span())) {
                c.at(
                    span,
                    "controller_key applies to source = \"mqtt\" only (the picture has no signature); remove it",
                );
            }
            if sig.hold_frames == 0 {
                c.at(sig.source.span(), "signal hold_frames must be at least 1");
            }
            for (b, n) in [(&sig.red_lamp, "red_lamp"), (&sig.green_lamp, "green_lamp")] {
                match b {
                    None => c.at(sig.source.span(), format!("signal source 'image' needs `{n} = [[x1, y1], [x2, y2]]` around the lamp")),
                    Some(b) if b.get_ref().len() != 2 || check_points(b.get_ref()).is_some() => {
                        c.at(b.span(), format!("{n} must be two normalised corners [[x1, y1], [x2, y2]]"))
                    }
                    _ => {}
                }
            }
        }
        SignalSource::Mqtt => {
            if let Some(k) = &sig.controller_key
                && let Err(msg) = super::controller::parse_key(k.get_ref())
            {
                c.at(k.span(), msg);
            }
            if let (Some(_), Some(f)) = (&sig.controller_key, &sig.controller_key_file) {
                c.at(
                    f.span(),
                    "give controller_key or controller_key_file, not both",
                );
            }
            if !(sig.max_age_secs.is_finite()
                && sig.max_age_secs > 0.0
                && sig.max_age_secs <= 3_600.0)
            {
                c.at(
                    sig.source.span(),
                    format!("signal max_age_secs must be a number of seconds above 0 and at most 3600, got {}", sig.max_age_secs),
                );
            }
            if sig
                .topic
                .as_ref()
                .is_none_or(|t| t.get_ref().is_empty() || t.get_ref().contains(['#', '+']))
            {
                c.at(
                    sig.source.span(),
                    "signal source 'mqtt' needs `topic = \"...\"` (no wildcards)",
                );
            }
        }
    }
}

/// The signal a `red_light` needs, and the zone, line or lane a rule names.
fn check_references(r: &RuleConfig, s: &RuleSetup, names: &Names, cid: &str, c: &mut Collector) {
    let kind = *r.kind.get_ref();
    if kind == RuleKind::RedLight && s.signal.is_none() {
        c.at(r.kind.span(), format!("rule 'red_light' needs [cameras.signal] for camera '{cid}' (source = \"image\" or \"mqtt\")"));
    }
    if kind == RuleKind::RedLight && r.direction == Direction::Any {
        c.at(
            r.kind.span(),
            "rule 'red_light' needs `direction`: the way traffic crosses the stop line into the junction (e.g. \"bottom_to_top\")",
        );
    }
    let what = kind.as_str();
    match kind.needs() {
        Needs::Zone => match &r.zone {
            None => c.at(r.kind.span(), format!("rule '{what}' needs `zone = \"<zone name>\"`")),
            Some(z) if !names.zones.contains(z.get_ref()) => c.at(
                z.span(),
                format!("zone '{}' is not defined for camera '{cid}' — add a [[cameras.zones]] with that name", z.get_ref()),
            ),
            _ => {}
        },
        Needs::Line => match &r.line {
            None => c.at(r.kind.span(), format!("rule '{what}' needs `line = \"<line name>\"`")),
            Some(l) if !names.lines.contains(l.get_ref()) => c.at(
                l.span(),
                format!("line '{}' is not defined for camera '{cid}' — add a [[cameras.lines]] with that name", l.get_ref()),
            ),
            _ => {}
        },
        Needs::Lane => match &r.lane {
            None => c.at(r.kind.span(), format!("rule '{what}' needs `lane = \"<lane name>\"`")),
            Some(l) if !names.lanes.contains(l.get_ref()) => c.at(
                l.span(),
                format!("lane '{}' is not defined for camera '{cid}' — add a [[cameras.lanes]] with that name", l.get_ref()),
            ),
            _ => {}
        },
        Needs::Nothing => {}
    }
}

/// The second model of a cascade rule (`no_helmet`, `fire_smoke`, `fight`).
fn check_cascade(r: &RuleConfig, names: &Names, models: &CameraModels, c: &mut Collector) {
    let (kind, cid) = (*r.kind.get_ref(), models.camera);
    let what = kind.as_str();
    let cascade_kind = kind.is_cascade();
    if !cascade_kind && (r.model.is_some() || r.labels.is_some()) {
        c.at(r.kind.span(), format!("`model` and `labels` apply to no_helmet, fire_smoke and fight only; remove them from this '{what}' rule"));
    }
    if r.min_votes == Some(0) {
        c.at(r.kind.span(), "min_votes must be at least 1");
    }
    if !cascade_kind {
        return;
    }
    match &r.model {
        None => c.at(r.kind.span(), format!("rule '{what}' needs `model = \"<name>\"`: the model that judges it (see README, Cascades)")),
        Some(m) => match models.models.iter().find(|(n, _)| *n == m.get_ref().as_str()) {
            None => c.at(m.span(), format!("model '{}' is not in [[models]] — add it there", m.get_ref())),
            Some((_, Some(man))) => match &r.labels {
                None => c.at(r.kind.span(), format!("rule '{what}' needs `labels = [...]`: the labels of model '{}' that mean a violation", man.name)),
                Some(ls) => {
                    for l in ls.get_ref() {
                        if !man.labels.iter().any(|x| x == l) {
                            c.at(ls.span(), format!("label '{l}' is not a label of model '{}'", man.name));
                        }
                    }
                }
            },
            Some((_, None)) => {}
        },
    }
    if let Some(z) = &r.zone
        && !names.zones.contains(z.get_ref())
    {
        c.at(
            z.span(),
            format!("zone '{}' is not defined for camera '{cid}'", z.get_ref()),
        );
    }
    if r.min_confidence.is_some_and(|v| !(0.0..=1.0).contains(&v))
        || r.max_rate_hz.is_some_and(|v| v.is_nan() || v <= 0.0)
    {
        c.at(
            r.kind.span(),
            "min_confidence must be in 0..1 and max_rate_hz above 0",
        );
    }
}

/// Per-kind requirements, numbers, the schedule and the classes of a rule.
fn check_params(r: &RuleConfig, s: &RuleSetup, models: &CameraModels, c: &mut Collector) {
    let (kind, cid) = (*r.kind.get_ref(), models.camera);
    if kind == RuleKind::Crowd && r.max_count.is_none() {
        c.at(
            r.kind.span(),
            "rule 'crowd' needs `max_count`: the most persons allowed in the zone",
        );
    }
    if kind == RuleKind::Speeding {
        if r.speed_limit_kmh.is_none_or(|v| v <= 0.0) {
            c.at(r.kind.span(), "rule 'speeding' needs `speed_limit_kmh` > 0");
        }
        if s.calibration.is_none() {
            c.at(r.kind.span(), format!("rule 'speeding' needs [cameras.calibration] for camera '{cid}' (image points and their road positions in metres)"));
        }
    }
    for (v, n) in [
        (r.min_secs, "min_secs"),
        (r.dwell_secs, "dwell_secs"),
        (r.min_distance, "min_distance"),
        (r.max_move, "max_move"),
    ] {
        if v.is_some_and(|x| x.is_nan() || x < 0.0 || !x.is_finite()) {
            c.at(r.kind.span(), format!("{n} must be a non-negative number"));
        }
    }
    if let Some(sch) = &r.schedule {
        for t in [&sch.start, &sch.end] {
            if super::parse_hhmm(t.get_ref()).is_none() {
                c.at(
                    t.span(),
                    format!(
                        "'{}' is not a time of day; write HH:MM, e.g. \"22:00\"",
                        t.get_ref()
                    ),
                );
            }
        }
        if sch.tz.get_ref().parse::<chrono_tz::Tz>().is_err() {
            c.at(
                sch.tz.span(),
                format!(
                    "'{}' is not a time zone; use an IANA name such as \"Asia/Ho_Chi_Minh\"",
                    sch.tz.get_ref()
                ),
            );
        }
    }
    if let Some(man) = models.detector {
        for class in r.classes.get_ref() {
            if !man.labels.iter().any(|l| l == class) {
                c.at(
                    r.classes.span(),
                    format!(
                        "class '{class}' is not a label of model '{}' (e.g. {})",
                        man.name,
                        sample_labels(man.labels)
                    ),
                );
            }
        }
    }
    if !(0.0..=1.0).contains(&r.min_score) {
        c.at(r.kind.span(), "min_score must be between 0 and 1");
    }
}

/// Most corners of one zone, lane or calibration (a zone is a few corners;
/// a bound keeps a pasted trace or a hostile setup save out of the config).
pub const MAX_POINTS: usize = 64;

fn check_points(points: &[[f64; 2]]) -> Option<String> {
    if points.len() > MAX_POINTS {
        return Some(format!(
            "{} points; at most {MAX_POINTS} — draw the outline with fewer corners",
            points.len()
        ));
    }
    for (i, p) in points.iter().enumerate() {
        if !(0.0..=1.0).contains(&p[0]) || !(0.0..=1.0).contains(&p[1]) {
            return Some(format!(
                "point {} [{}, {}] is outside the frame; coordinates are normalised to 0..1 (x / width, y / height)",
                i + 1,
                p[0],
                p[1]
            ));
        }
    }
    None
}

fn sample_labels(labels: &[String]) -> String {
    let mut s = labels
        .iter()
        .take(4)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if labels.len() > 4 {
        s.push_str(", …");
    }
    s
}
