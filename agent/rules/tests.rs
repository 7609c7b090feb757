//! Unit tests of the rule engine (the scenarios in tests/scenarios cover every kind).

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

fn try_engine(toml_text: &str) -> Result<RuleEngine, RuleError> {
    let cam: Cam = toml::from_str(toml_text).unwrap();
    let setup = RuleSetup {
        zones: &cam.zones,
        lines: &cam.lines,
        lanes: &[],
        calibration: None,
        signal: None,
        rules: &cam.rules,
    };
    RuleEngine::new(&setup, &labels())
}

fn engine(toml_text: &str) -> RuleEngine {
    try_engine(toml_text).unwrap()
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
    assert_eq!(fire_events, vec![Some(Phase::Start), Some(Phase::End)]);
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

#[test]
fn a_rule_that_does_not_resolve_is_an_error_naming_it() {
    let e = try_engine("[[rules]]\nkind = \"zone_enter\"\nzone = \"nowhere\"\n").unwrap_err();
    assert_eq!(
        e,
        RuleError::Undefined {
            rule: "zone_enter:nowhere".into(),
            what: "zone",
            name: "nowhere".into()
        }
    );
    let e = try_engine("[[rules]]\nname = \"cars\"\nkind = \"line_cross\"\n").unwrap_err();
    assert_eq!(e.to_string(), "rule 'cars' needs a line");
    let text = CAM.replace(
        "classes = [\"car\"]\n[[rules]]",
        "classes = [\"cars\"]\n[[rules]]",
    );
    let e = try_engine(&text).unwrap_err();
    assert_eq!(
        e,
        RuleError::UnknownClass {
            rule: "zone_enter:box".into(),
            class: "cars".into()
        }
    );
}

/// A crowd still open when the camera stops or its stream is lost ends with
/// the count it last had, as a `cleared` end does (the MQTT contract says
/// `count` is in every crowd alert). Before, that end had no count.
#[test]
fn a_crowd_ended_by_a_stop_carries_its_count() {
    let mut eng = engine(
        r#"
[[zones]]
name = "square"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
[[rules]]
kind = "crowd"
zone = "square"
classes = ["person"]
max_count = 2
min_secs = 0.5
"#,
    );
    let mut tr = Tracker::new(TrackerConfig::default());
    let three_people: Vec<Detection> = (0..3)
        .map(|k| {
            let x = 20.0 + 25.0 * k as f32;
            Detection {
                class: 0,
                score: 0.9,
                bbox: [x, 30.0, x + 10.0, 60.0],
            }
        })
        .collect();
    let mut frame = 0;
    for reason in [EndReason::CameraStopped, EndReason::StreamLost] {
        // Four seconds of three people: the crowd starts.
        let mut starts = Vec::new();
        for _ in 0..20 {
            let t = frame as f64 * 0.2;
            frame += 1;
            let tracks = tr.update(&three_people, t).to_vec();
            starts.extend(eng.evaluate(&tracks, 100, 100, t, SystemTime::now()));
        }
        assert_eq!(
            starts.len(),
            1,
            "{reason:?}: three people over max_count 2 start a crowd"
        );
        assert_eq!(starts[0].phase, Some(Phase::Start));
        assert_eq!(starts[0].count, Some(3));
        let ends = eng.end_open(reason);
        assert_eq!(ends.len(), 1, "{reason:?}: one end for the open crowd");
        assert_eq!(ends[0].phase, Some(Phase::End));
        assert_eq!(ends[0].end_reason, Some(reason));
        assert_eq!(
            ends[0].count,
            Some(3),
            "{reason:?}: the end carries the count"
        );
    }
}

/// The Vietnamese names say what the rules do, in the words an officer uses:
/// `stop_line` fires on a vehicle standing on the line at red (not on
/// crossing it); `loitering` is one person staying (not a group, "tụ tập");
/// "Đối tượng" reads as "suspect" in police usage, so generic objects are
/// "người, phương tiện".
#[test]
fn vietnamese_names_say_what_the_rule_does() {
    let vi = |t: &str| {
        kinds::KINDS
            .iter()
            .find(|k| k.event_type == t)
            .map(|k| k.vi)
            .unwrap_or_default()
    };
    assert_eq!(vi("traffic.stop_line"), "Dừng xe đè vạch dừng khi đèn đỏ");
    assert!(
        !vi("order.loitering").contains("tụ tập"),
        "{}",
        vi("order.loitering")
    );
    for k in kinds::KINDS {
        assert!(!k.vi.contains("Đối tượng"), "{}: {}", k.event_type, k.vi);
        assert!(!k.vi.is_empty() && !k.en.is_empty(), "{}", k.event_type);
    }
}
