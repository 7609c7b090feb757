//! Scenario tests: scripted objects (paths over time, occlusions, jitter) →
//! the real tracker and rule engine → expected events. One file per rule in
//! tests/scenarios/*.toml; each holds positive objects, near misses that must
//! stay silent, occluded positives and jitter. See tests/scenarios/README.md.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ioc_agent::config::Config;
use ioc_agent::infer::Detection;
use ioc_agent::rules::{Firing, RuleEngine};
use ioc_agent::track::{Tracker, TrackerConfig};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    name: String,
    #[serde(default = "fps")]
    fps: f64,
    duration: f64,
    #[serde(default = "frame")]
    frame: [u32; 2],
    /// Wall-clock time of t = 0 (for schedules), RFC 3339.
    #[serde(default)]
    start_wall: Option<String>,
    /// `[[cameras]]` TOML (zones, lines, lanes, calibration, rules).
    camera: String,
    objects: Vec<Object>,
    #[serde(default)]
    expect: Vec<Expect>,
    /// Signal timeline `[[t, "red"], [t, "green"], …]` (as a controller would publish).
    #[serde(default)]
    signal: Vec<(f64, String)>,
    /// Intervals `[[from, to], …]` in which the camera's stream is down: at
    /// `from` the session ends (open events are ended, the tracker is new
    /// when frames come back at `to`), as in the agent.
    #[serde(default)]
    stream_gaps: Vec<[f64; 2]>,
}

fn fps() -> f64 {
    5.0
}
fn frame() -> [u32; 2] {
    [1280, 720]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Object {
    class: String,
    /// Box size, frame-normalised `[w, h]`.
    size: [f64; 2],
    /// Keyframes `[t, x, y]` of the ground point (bottom centre), normalised; linear in between.
    path: Vec<[f64; 3]>,
    /// Intervals `[from, to]` in which the detector sees it. Default: always on the path.
    #[serde(default)]
    visible: Vec<[f64; 2]>,
    /// Amplitude of deterministic jitter on the box, normalised. Default 0.003.
    #[serde(default = "jitter")]
    jitter: f64,
    #[serde(default = "score")]
    score: f32,
}

fn jitter() -> f64 {
    0.003
}
fn score() -> f32 {
    0.8
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(rename = "type")]
    kind: String,
    /// Scenario objects (by index) that must fire, each exactly once.
    #[serde(default)]
    objects: Vec<usize>,
    /// Exact number of events of this type (default: objects.len()).
    #[serde(default)]
    count: Option<usize>,
    #[serde(default)]
    phase: Option<String>,
    /// Only events with this `end_reason` (`cleared`, `stream_lost`).
    #[serde(default)]
    end_reason: Option<String>,
}

impl Object {
    /// Ground point at `t`, if on the path and visible.
    fn at(&self, t: f64) -> Option<[f64; 2]> {
        let first = self.path.first()?;
        let last = self.path.last()?;
        if t < first[0] || t > last[0] {
            return None;
        }
        if !self.visible.is_empty() && !self.visible.iter().any(|v| t >= v[0] && t <= v[1]) {
            return None;
        }
        self.pos(t)
    }
    fn pos(&self, t: f64) -> Option<[f64; 2]> {
        let w = self.path.windows(2).find(|w| t >= w[0][0] && t <= w[1][0]);
        match w {
            Some(w) => {
                let f = if w[1][0] > w[0][0] {
                    (t - w[0][0]) / (w[1][0] - w[0][0])
                } else {
                    0.0
                };
                Some([
                    w[0][1] + f * (w[1][1] - w[0][1]),
                    w[0][2] + f * (w[1][2] - w[0][2]),
                ])
            }
            None => self.path.last().map(|p| [p[1], p[2]]),
        }
    }
}

/// Deterministic noise in [-1, 1].
fn noise(seed: u64) -> f64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    (x % 20001) as f64 / 10000.0 - 1.0
}

/// Which scenario object fired, the phase (crowd) and the end reason.
type Fired<'a> = (Option<usize>, Option<&'a str>, Option<&'a str>);

type Event = (
    String,
    Option<usize>,
    Option<&'static str>,
    Option<&'static str>,
);

struct Outcome {
    events: Vec<Event>,
}

fn run(path: &Path) -> (Scenario, Outcome) {
    let text = std::fs::read_to_string(path).unwrap();
    let sc: Scenario = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cfg_text = format!(
        "agent_id = \"scenario\"\nmanifest_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1\"\n[[models]]\nname = \"yolox_nano\"\n{}",
        common::root().join("models").display(),
        sc.camera
    );
    let cfg = Config::parse(&cfg_text, path, Path::new("."))
        .unwrap_or_else(|e| panic!("{}: camera config: {e}", sc.name));
    let manifest =
        ioc_agent::infer::manifest::Manifest::load(&common::root().join("models/yolox_nano.toml"))
            .unwrap();
    let labels = manifest.labels;
    let mut engine = RuleEngine::new(&cfg.cameras[0].rule_setup(), &labels).unwrap();
    let mut tracker = Tracker::new(TrackerConfig::default());
    let wall0 = sc
        .start_wall
        .as_deref()
        .map(|s| SystemTime::from(chrono::DateTime::parse_from_rfc3339(s).unwrap()))
        .unwrap_or_else(SystemTime::now);
    let (fw, fh) = (sc.frame[0] as f64, sc.frame[1] as f64);
    let frames = (sc.duration * sc.fps).round() as u64;
    let mut events = Vec::new();
    let mut down = false;
    for i in 0..=frames {
        let t = i as f64 / sc.fps;
        if sc.stream_gaps.iter().any(|g| t >= g[0] && t < g[1]) {
            if !down {
                down = true;
                for f in engine.end_open(ioc_agent::rules::EndReason::StreamLost) {
                    let kind = engine.rules[f.rule].kind.event_type().to_string();
                    events.push((
                        kind,
                        None,
                        f.phase.map(|p| p.as_str()),
                        f.end_reason.map(|r| r.as_str()),
                    ));
                }
                tracker = Tracker::new(TrackerConfig::default());
            }
            continue;
        }
        down = false;
        let mut dets = Vec::new();
        for (k, o) in sc.objects.iter().enumerate() {
            let Some(p) = o.at(t) else { continue };
            let j = |n: u64| o.jitter * noise(i * 1000 + k as u64 * 10 + n);
            let (w, h) = (o.size[0] * (1.0 + j(3)), o.size[1] * (1.0 + j(4)));
            let (x, y) = (p[0] + j(1), p[1] + j(2));
            let class = labels
                .iter()
                .position(|l| l == &o.class)
                .unwrap_or_else(|| panic!("unknown class {}", o.class));
            dets.push(Detection {
                class,
                score: o.score,
                bbox: [
                    ((x - w / 2.0) * fw) as f32,
                    ((y - h) * fh) as f32,
                    ((x + w / 2.0) * fw) as f32,
                    (y * fh) as f32,
                ],
            });
        }
        if let Some((_, s)) = sc.signal.iter().rev().find(|(ts, _)| *ts <= t) {
            let light = ioc_agent::rules::Light::parse(s.as_bytes())
                .unwrap_or_else(|| panic!("bad signal state {s}"));
            engine.set_signal(t, light, ioc_agent::rules::SignalSource::Mqtt);
        }
        let tracks = tracker.update(&dets, t).to_vec();
        let wall = wall0 + Duration::from_secs_f64(t);
        for f in engine.evaluate(&tracks, sc.frame[0], sc.frame[1], t, wall) {
            let kind = engine.rules[f.rule].kind.event_type().to_string();
            let who = nearest(&sc, &f, t);
            events.push((
                kind,
                who,
                f.phase.map(|p| p.as_str()),
                f.end_reason.map(|r| r.as_str()),
            ));
        }
    }
    (sc, Outcome { events })
}

/// The scenario object whose ground point is nearest to the firing's main box.
fn nearest(sc: &Scenario, f: &Firing, t: f64) -> Option<usize> {
    let b = f.objects.first()?.bbox;
    let g = [((b[0] + b[2]) / 2.0) as f64, b[3] as f64];
    sc.objects
        .iter()
        .enumerate()
        .filter_map(|(k, o)| {
            o.pos(t)
                .filter(|_| o.path.first().is_some_and(|p| p[0] <= t))
                .map(|p| (k, (p[0] - g[0]).hypot(p[1] - g[1])))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| k)
}

#[test]
fn every_scenario_yields_exactly_its_expected_events() {
    let dir = common::root().join("tests/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "scenario files: {}", files.len());
    let mut failures = Vec::new();
    for f in &files {
        let (sc, out) = run(f);
        let mut by_type: BTreeMap<&str, Vec<Fired>> = BTreeMap::new();
        for (k, who, phase, reason) in &out.events {
            by_type
                .entry(k.as_str())
                .or_default()
                .push((*who, *phase, *reason));
        }
        println!("{:<40} {:?}", sc.name, by_type);
        for e in &sc.expect {
            let got: Vec<_> = by_type
                .get(e.kind.as_str())
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, p, r)| {
                    (e.phase.is_none() || e.phase.as_deref() == *p)
                        && (e.end_reason.is_none() || e.end_reason.as_deref() == *r)
                })
                .collect();
            let want = e.count.unwrap_or(e.objects.len());
            if got.len() != want {
                failures.push(format!(
                    "{}: {} events of {} (phase {:?}), expected {want}: {got:?}",
                    sc.name,
                    got.len(),
                    e.kind,
                    e.phase
                ));
                continue;
            }
            for o in &e.objects {
                if got.iter().filter(|(w, _, _)| *w == Some(*o)).count() != 1 {
                    failures.push(format!(
                        "{}: object {o} should fire {} once; fired: {got:?}",
                        sc.name, e.kind
                    ));
                }
            }
        }
        // Nothing fires that the scenario does not expect.
        for k in by_type.keys() {
            if !sc.expect.iter().any(|e| e.kind == *k) {
                failures.push(format!(
                    "{}: unexpected {k} events: {:?}",
                    sc.name, by_type[k]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "scenario failures:\n{}",
        failures.join("\n")
    );
}
