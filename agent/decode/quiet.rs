//! Quiet frames: a picture that has not changed since the last one the model
//! saw need not be seen again. A frame's luma is reduced to a grid of cell
//! means (64 × 36: 20 × 20 pixels on 720p); a frame is quiet when no cell
//! moved by more than [`CELL_LEVELS`] grey levels once the whole picture's
//! brightness change is taken out (auto exposure, a cloud). The model's
//! last answer then stands for the frame, so tracks of things standing
//! still stay alive (parking, stopping, loitering go on counting) while
//! the model rests; [`QuietGate`] still runs the model every
//! `refresh_secs` to catch slow changes.
//!
//! Cost: a sum over every other luma row, about 0.2 ms for 720p on one
//! core, against ~20 ms for the model.

/// Grid of cells across and down.
pub const GRID_W: usize = 64;
pub const GRID_H: usize = 36;
/// A cell whose mean moved by more than this (0..255 levels, after the
/// picture's own shift) is a change. A person 8 × 20 pixels on 720p in a
/// 20 × 20 cell, 40 levels off the ground, moves its cell by 16; coding
/// noise of a still scene moves cells by under 1.
pub const CELL_LEVELS: f32 = 6.0;

/// A frame's luma reduced to cell means.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    w: usize,
    h: usize,
    size: (u32, u32),
    cells: Vec<f32>,
    mean: f32,
}

impl Signature {
    /// The signature of an 8-bit luma plane `width` × `height` (row
    /// stride = width). A plane shorter than that gives an empty signature,
    /// which is never quiet.
    pub fn of(y: &[u8], width: u32, height: u32) -> Signature {
        let (wd, ht) = (width as usize, height as usize);
        let (gw, gh) = (GRID_W.min(wd.max(1)), GRID_H.min(ht.max(1)));
        let mut sig = Signature {
            w: gw,
            h: gh,
            size: (width, height),
            cells: Vec::new(),
            mean: 0.0,
        };
        if wd == 0 || ht == 0 || y.len() < wd * ht {
            return sig;
        }
        let mut sums = vec![0u64; gw * gh];
        let mut counts = vec![0u64; gw * gh];
        let cols: Vec<(usize, usize)> = (0..gw).map(|c| (c * wd / gw, (c + 1) * wd / gw)).collect();
        for row in (0..ht).step_by(2) {
            let cy = row * gh / ht;
            let line = &y[row * wd..row * wd + wd];
            for (cx, &(x0, x1)) in cols.iter().enumerate() {
                let s: u64 = line[x0..x1].iter().map(|&v| u64::from(v)).sum();
                sums[cy * gw + cx] += s;
                counts[cy * gw + cx] += (x1 - x0) as u64;
            }
        }
        sig.cells = sums
            .iter()
            .zip(&counts)
            .map(|(&s, &n)| if n == 0 { 0.0 } else { s as f32 / n as f32 })
            .collect();
        sig.mean = sig.cells.iter().sum::<f32>() / sig.cells.len() as f32;
        sig
    }

    /// Cells that changed from `earlier` by more than `levels`, after the
    /// whole picture's shift; every cell when the two cannot be compared
    /// (other sizes, an empty signature).
    pub fn changed_cells(&self, earlier: &Signature, levels: f32) -> usize {
        if self.size != earlier.size
            || self.cells.is_empty()
            || self.cells.len() != earlier.cells.len()
        {
            return self.w * self.h;
        }
        let shift = self.mean - earlier.mean;
        self.cells
            .iter()
            .zip(&earlier.cells)
            .filter(|(a, b)| (*a - *b - shift).abs() > levels)
            .count()
    }
}

/// Decides, per frame due at `detect_fps`, whether the model must see it.
#[derive(Debug)]
pub struct QuietGate {
    enabled: bool,
    refresh_secs: f64,
    /// The last frame the model saw: its signature and time.
    seen: Option<(Signature, f64)>,
}

impl QuietGate {
    pub fn new(enabled: bool, refresh_secs: f64) -> QuietGate {
        QuietGate {
            enabled,
            refresh_secs,
            seen: None,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether a frame at `pts` with signature `sig` is quiet: nothing
    /// changed since the model last saw a frame, less than `refresh_secs`
    /// ago (a jump back in time is never quiet).
    pub fn quiet(&self, sig: &Signature, pts: f64) -> bool {
        self.enabled
            && self.seen.as_ref().is_some_and(|(s, t)| {
                pts >= *t && pts - t < self.refresh_secs && sig.changed_cells(s, CELL_LEVELS) == 0
            })
    }

    /// The model saw this frame.
    pub fn seen(&mut self, sig: Signature, pts: f64) {
        if self.enabled {
            self.seen = Some((sig, pts));
        }
    }

    /// A new session: the next frame goes to the model.
    pub fn reset(&mut self) {
        self.seen = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1280 × 720 plane with some texture, so cells differ.
    fn scene() -> Vec<u8> {
        (0..1280 * 720)
            .map(|i| {
                let (x, y) = (i % 1280, i / 1280);
                (60 + (x / 7 + y / 5) % 90) as u8
            })
            .collect()
    }

    fn paint(y: &mut [u8], x0: usize, y0: usize, w: usize, h: usize, add: u8) {
        for r in y0..y0 + h {
            for c in x0..x0 + w {
                y[r * 1280 + c] = y[r * 1280 + c].saturating_add(add);
            }
        }
    }

    #[test]
    fn the_same_picture_is_quiet_and_a_brighter_one_too() {
        let a = scene();
        let s = Signature::of(&a, 1280, 720);
        assert_eq!(s.changed_cells(&s.clone(), CELL_LEVELS), 0);
        let brighter: Vec<u8> = a.iter().map(|v| v + 20).collect();
        let b = Signature::of(&brighter, 1280, 720);
        assert_eq!(b.changed_cells(&s, CELL_LEVELS), 0);
    }

    #[test]
    fn a_small_far_person_is_a_change() {
        let a = scene();
        let mut b = a.clone();
        // 8 × 20 pixels, 40 levels brighter, astride no cell border.
        paint(&mut b, 602, 301, 8, 18, 40);
        let (sa, sb) = (Signature::of(&a, 1280, 720), Signature::of(&b, 1280, 720));
        assert!(sb.changed_cells(&sa, CELL_LEVELS) >= 1);
    }

    #[test]
    fn coding_noise_is_not_a_change() {
        let a = scene();
        // ±2 levels of pseudo-random noise everywhere.
        let mut x: u32 = 12345;
        let b: Vec<u8> = a
            .iter()
            .map(|&v| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (v as i32 + (x >> 16) as i32 % 5 - 2) as u8
            })
            .collect();
        let (sa, sb) = (Signature::of(&a, 1280, 720), Signature::of(&b, 1280, 720));
        assert_eq!(sb.changed_cells(&sa, CELL_LEVELS), 0);
    }

    #[test]
    fn other_sizes_and_short_planes_are_never_quiet() {
        let a = scene();
        let sa = Signature::of(&a, 1280, 720);
        let small = Signature::of(&a[..640 * 360], 640, 360);
        assert_eq!(small.changed_cells(&sa, CELL_LEVELS), GRID_W * GRID_H);
        let short = Signature::of(&a[..100], 1280, 720);
        assert!(short.changed_cells(&short.clone(), CELL_LEVELS) > 0);
        // Tiny frames: one cell per pixel at most.
        let t = Signature::of(&[10, 20, 30, 40], 2, 2);
        assert_eq!(t.changed_cells(&t.clone(), CELL_LEVELS), 0);
    }

    #[test]
    fn the_gate_refreshes_and_restarts() {
        let a = scene();
        let s = Signature::of(&a, 1280, 720);
        let mut g = QuietGate::new(true, 2.0);
        assert!(!g.quiet(&s, 10.0), "the first frame goes to the model");
        g.seen(s.clone(), 10.0);
        assert!(g.quiet(&s, 10.2));
        assert!(g.quiet(&s, 11.9));
        assert!(!g.quiet(&s, 12.0), "refresh");
        assert!(!g.quiet(&s, 9.0), "time went back");
        g.reset();
        assert!(!g.quiet(&s, 10.2));
        let mut off = QuietGate::new(false, 2.0);
        off.seen(s.clone(), 10.0);
        assert!(!off.quiet(&s, 10.2));
    }
}
