//! Geometry in normalised image coordinates (0..1, origin top-left): polygons,
//! segments, directions, the ground-plane homography, and the zone, line or
//! lane a compiled rule refers to.

use super::config::Direction;

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
    /// Whether a point is in the zone or lane (always, for a line or nothing).
    pub(crate) fn contains(&self, p: [f64; 2]) -> bool {
        match self {
            Geometry::Zone { polygon, .. } | Geometry::Lane { polygon, .. } => {
                point_in_polygon(p, polygon)
            }
            _ => true,
        }
    }
}
