//! Config → runtime: a camera's rule config compiled into [`Rule`]s with
//! their defaults (from the kinds table) and fresh state.

use std::collections::VecDeque;

use super::config::{RuleConfig, RuleSetup};
use super::{Cascade, Geometry, Homography, Needs, Params, Rule, RuleEngine, Schedule, parse_hhmm};
use crate::rules::kinds::Judge;

/// Defaults of the rule parameters that do not depend on the kind.
const MIN_DISTANCE: f64 = 0.05;
const MAX_MOVE: f64 = 0.02;
const MAX_COUNT: u32 = 2;
const MIN_CONFIDENCE: f32 = 0.6;
const MIN_VOTES: u32 = 2;
const MAX_RATE_HZ: f64 = 1.0;

impl RuleEngine {
    /// Compiles a camera's rules; `labels` are the detector's class names
    /// (index = class). Fails on the first rule whose zone, line, lane,
    /// classes, schedule or model do not resolve.
    pub fn new(setup: &RuleSetup, labels: &[String]) -> Result<RuleEngine, RuleError> {
        let (rules, judges) = setup
            .rules
            .iter()
            .map(|r| compile_rule(r, setup, labels))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        let calibration = setup
            .calibration
            .and_then(|c| Homography::fit(c.image.get_ref(), c.world.get_ref()));
        Ok(RuleEngine {
            rules,
            judges,
            calibration,
            person: labels.iter().position(|l| l == "person"),
            signal: VecDeque::new(),
            has_signal: setup.signal.is_some(),
        })
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
fn rule_name(r: &RuleConfig, setup: &RuleSetup) -> String {
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
    r: &RuleConfig,
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
fn compile_schedule(r: &RuleConfig, rule: &str) -> Result<Option<Schedule>, RuleError> {
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

/// One rule of the config, compiled (defaults applied), with its fresh state.
fn compile_rule(
    r: &RuleConfig,
    setup: &RuleSetup,
    labels: &[String],
) -> Result<(Rule, Box<dyn Judge>), RuleError> {
    let kind = *r.kind.get_ref();
    let info = kind.info();
    let name = rule_name(r, setup);
    let geometry = resolve_geometry(r, &name, setup, labels)?;
    let schedule = compile_schedule(r, &name)?;
    let mut classes = class_indices(&name, r.classes.get_ref(), labels)?;
    if classes.is_empty() {
        // A model without some of the default classes simply never sees them.
        classes = info
            .classes
            .iter()
            .filter_map(|c| labels.iter().position(|l| l == c))
            .collect();
    }
    if info.cascade.is_some() && r.model.is_none() {
        return Err(RuleError::Missing {
            rule: name,
            what: "model",
        });
    }
    let rule = Rule {
        name,
        kind,
        classes,
        geometry,
        direction: r.direction,
        min_score: r.min_score,
        min_hits: r.min_hits,
        severity: r.severity.unwrap_or(info.severity),
        params: Params {
            min_secs: r.min_secs.unwrap_or(info.min_secs),
            dwell_secs: r.dwell_secs.unwrap_or(info.dwell_secs),
            min_distance: r.min_distance.unwrap_or(MIN_DISTANCE),
            max_move: r.max_move.unwrap_or(MAX_MOVE),
            max_count: r.max_count.unwrap_or(MAX_COUNT),
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
            min_confidence: r.min_confidence.unwrap_or(MIN_CONFIDENCE),
            min_votes: r.min_votes.unwrap_or(MIN_VOTES).max(1),
            interval: 1.0 / r.max_rate_hz.unwrap_or(MAX_RATE_HZ).max(1e-3),
            region: r.region.unwrap_or(info.cascade.unwrap_or_default()),
        }),
    };
    Ok((rule, (info.judge)()))
}
