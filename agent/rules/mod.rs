//! Rules (sans-IO): zones and lines in normalised coordinates, judged on the
//! tracker's output. Each rule fires at most once per tracked object.

use std::collections::HashSet;

use crate::config::{CameraConfig, Direction, RuleKind};
use crate::track::Track;

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
}

impl Geometry {
    pub fn name(&self) -> &str {
        match self {
            Geometry::Zone { name, .. } | Geometry::Line { name, .. } => name,
        }
    }
}

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
    pub severity: crate::store::Severity,
    fired: HashSet<u64>,
}

/// What a rule decided, for one tracked object.
#[derive(Debug, Clone)]
pub struct Firing {
    pub rule: usize,
    pub track_id: u64,
    pub class: usize,
    pub score: f32,
    /// Box normalised to 0..1.
    pub bbox: [f32; 4],
    /// Direction observed (line crossings).
    pub direction: Option<Direction>,
}

#[derive(Debug, Clone)]
pub struct RuleEngine {
    pub rules: Vec<Rule>,
}

impl RuleEngine {
    /// Compiles a camera's rules; `labels` maps class names to indices.
    /// The config has been validated, so names resolve.
    pub fn from_camera(cam: &CameraConfig, labels: &[String]) -> RuleEngine {
        let rules = cam
            .rules
            .iter()
            .filter_map(|r| {
                let kind = *r.kind.get_ref();
                let geometry = match kind {
                    RuleKind::ZoneEnter => {
                        let zn = r.zone.as_ref()?.get_ref();
                        let z = cam.zones.iter().find(|z| z.name.get_ref() == zn)?;
                        Geometry::Zone {
                            name: zn.clone(),
                            polygon: z.polygon.get_ref().clone(),
                        }
                    }
                    RuleKind::LineCross => {
                        let ln = r.line.as_ref()?.get_ref();
                        let l = cam.lines.iter().find(|l| l.name.get_ref() == ln)?;
                        let p = l.points.get_ref();
                        Geometry::Line {
                            name: ln.clone(),
                            points: [*p.first()?, *p.get(1)?],
                        }
                    }
                };
                Some(Rule {
                    name: r
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{}:{}", kind, geometry.name())),
                    kind,
                    classes: r
                        .classes
                        .get_ref()
                        .iter()
                        .filter_map(|c| labels.iter().position(|l| l == c))
                        .collect(),
                    geometry,
                    direction: r.direction,
                    min_score: r.min_score,
                    min_hits: r.min_hits,
                    severity: r.severity,
                    fired: HashSet::new(),
                })
            })
            .collect();
        RuleEngine { rules }
    }

    /// Judges the tracks of one frame of size `w`×`h`.
    pub fn evaluate(&mut self, tracks: &[Track], w: u32, h: u32) -> Vec<Firing> {
        let (w, h) = (w as f64, h as f64);
        let norm = |p: [f32; 2]| [p[0] as f64 / w, p[1] as f64 / h];
        let mut out = Vec::new();
        for (ri, rule) in self.rules.iter_mut().enumerate() {
            // Forget tracks that are gone.
            rule.fired.retain(|id| tracks.iter().any(|t| t.id == *id));
            for tr in tracks {
                if !tr.matched || !tr.confirmed(rule.min_hits) || rule.fired.contains(&tr.id) {
                    continue;
                }
                let class = tr.class();
                if (!rule.classes.is_empty() && !rule.classes.contains(&class))
                    || tr.best_score < rule.min_score
                {
                    continue;
                }
                let now = norm(tr.anchor());
                let hit = match &rule.geometry {
                    Geometry::Zone { polygon, .. } => {
                        point_in_polygon(now, polygon).then_some(None)
                    }
                    Geometry::Line { points, .. } => {
                        // Any step of the track's history may cross: the
                        // crossing can happen before the track is confirmed.
                        tr.history.windows(2).find_map(|w| {
                            let (a, b) = (norm(w[0].1), norm(w[1].1));
                            (segments_cross(a, b, points[0], points[1])
                                && movement_matches(rule.direction, a, b))
                            .then(|| Some(observed_direction(a, b)))
                        })
                    }
                };
                if let Some(direction) = hit {
                    rule.fired.insert(tr.id);
                    let b = tr.bbox;
                    out.push(Firing {
                        rule: ri,
                        track_id: tr.id,
                        class,
                        score: tr.best_score,
                        bbox: [
                            (b[0] as f64 / w) as f32,
                            (b[1] as f64 / h) as f32,
                            (b[2] as f64 / w) as f32,
                            (b[3] as f64 / h) as f32,
                        ],
                        direction,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::Detection;
    use crate::track::{Tracker, TrackerConfig};

    fn camera(toml_text: &str) -> CameraConfig {
        #[derive(serde::Deserialize)]
        struct W {
            cameras: Vec<CameraConfig>,
        }
        toml::from_str::<W>(toml_text).unwrap().cameras.remove(0)
    }

    const CAM: &str = r#"
[[cameras]]
id = "c"
url = "rtsp://x/y"
[[cameras.zones]]
name = "box"
polygon = [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]]
[[cameras.lines]]
name = "mid"
points = [[0.5, 0.0], [0.5, 1.0]]
[[cameras.rules]]
kind = "zone_enter"
zone = "box"
classes = ["car"]
[[cameras.rules]]
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
        let mut eng = RuleEngine::from_camera(&camera(CAM), &labels());
        let mut tr = Tracker::new(TrackerConfig::default());
        let mut all = Vec::new();
        for (i, &x) in xs.iter().enumerate() {
            let d = Detection {
                class,
                score: 0.9,
                bbox: [x - 5.0, 40.0, x + 5.0, 50.0],
            };
            let tracks = tr.update(&[d], i as f64 * 0.2).to_vec();
            all.extend(eng.evaluate(&tracks, 100, 100));
        }
        all
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
        assert_eq!(f[0].class, 2);
        assert!(f[0].bbox[0] >= 0.3 && f[0].bbox[2] <= 0.7);
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
