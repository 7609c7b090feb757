//! What every kind of rule shares: the frame as the rules see it, the
//! once-per-track bookkeeping, how long a condition has held, schedules, and
//! small judgements on tracks (line crossings, ground speed, riders).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::SystemTime;

use chrono::Timelike;

use super::config::{Direction, SignalSource};
use super::geometry::{Homography, movement_matches, segments_cross};
use super::{FiredObject, Firing, Light, Rule};
use crate::track::Track;

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

/// A change of the traffic signal, at stream time `t`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignalChange {
    pub t: f64,
    pub light: Light,
    pub source: SignalSource,
}

/// The signal state at stream time `t` in a log of changes.
pub(crate) fn light_at(log: &VecDeque<SignalChange>, t: f64) -> Option<(Light, SignalSource)> {
    log.iter()
        .rev()
        .find(|c| c.t <= t)
        .map(|c| (c.light, c.source))
}

/// One frame as the rules see it.
pub(crate) struct FrameCtx<'a> {
    /// The tracker's output for this frame.
    pub tracks: &'a [Track],
    /// Frame size in pixels.
    pub w: f64,
    pub h: f64,
    /// Stream time, seconds.
    pub t: f64,
    /// Wall-clock time of the frame (schedules).
    pub wall: SystemTime,
    pub calibration: Option<Homography>,
    /// Index of the `person` class, if the detector has one.
    pub person: Option<usize>,
    /// Recent signal changes, oldest first.
    pub signal: &'a VecDeque<SignalChange>,
    /// Whether the camera has a signal at all.
    pub has_signal: bool,
}

impl FrameCtx<'_> {
    /// A pixel point, normalised.
    pub fn norm(&self, p: [f32; 2]) -> [f64; 2] {
        [p[0] as f64 / self.w, p[1] as f64 / self.h]
    }

    /// The signal state at stream time `t`.
    pub fn light_at(&self, t: f64) -> Option<(Light, SignalSource)> {
        light_at(self.signal, t)
    }

    /// Whether the track `id` is still in the tracker's output.
    pub fn is_live(&self, id: u64) -> bool {
        self.tracks.iter().any(|t| t.id == id)
    }

    /// A track as an object of a firing (box normalised).
    pub fn object(&self, tr: &Track) -> FiredObject {
        let b = tr.bbox;
        FiredObject {
            track_id: tr.id,
            class: tr.class(),
            score: tr.best_score,
            bbox: [
                (b[0] as f64 / self.w) as f32,
                (b[1] as f64 / self.h) as f32,
                (b[2] as f64 / self.w) as f32,
                (b[3] as f64 / self.h) as f32,
            ],
        }
    }

    /// A firing for one track.
    pub fn fire(&self, tr: &Track) -> Firing {
        Firing::new(vec![self.object(tr)])
    }
}

/// Where a track is in this frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spot {
    /// Its anchor (ground point), normalised.
    pub point: [f64; 2],
    /// Whether that point is in the rule's zone or lane (always true for other geometry).
    pub inside: bool,
}

/// What a rule decided about one track in one frame.
pub(crate) enum Verdict {
    /// Nothing yet; judge it again next frame.
    Wait,
    /// Fire now; the track is not judged again.
    Fire(Firing),
    /// Never judge this track again, without firing.
    Never,
}

impl From<Option<Firing>> for Verdict {
    fn from(f: Option<Firing>) -> Verdict {
        f.map_or(Verdict::Wait, Verdict::Fire)
    }
}

/// When and where a rule's condition started to hold for a track.
#[derive(Debug, Clone, Copy)]
struct Start {
    t: f64,
    at: [f64; 2],
}

/// Per track: how long a rule's condition has held.
#[derive(Debug, Default)]
pub(crate) struct Held {
    since: HashMap<u64, Start>,
}

impl Held {
    /// Tracks how long `cond` has held for track `id` (restarting when it
    /// breaks or the object drifts more than `max_move` from where it
    /// started); returns the duration once it reaches `need` seconds.
    pub fn hold(
        &mut self,
        id: u64,
        cond: bool,
        t: f64,
        p: [f64; 2],
        need: f64,
        max_move: f64,
    ) -> Option<f64> {
        if !cond {
            self.since.remove(&id);
            return None;
        }
        let e = self.since.entry(id).or_insert(Start { t, at: p });
        if (p[0] - e.at[0]).hypot(p[1] - e.at[1]) > max_move {
            *e = Start { t, at: p };
        }
        let d = t - e.t;
        (d >= need).then_some(d)
    }
}

/// The state of a rule that fires at most once per tracked object.
#[derive(Debug, Default)]
pub(crate) struct PerTrack {
    /// Tracks this rule fired for, or will never judge again.
    fired: HashSet<u64>,
    held: Held,
}

impl PerTrack {
    /// Whether the rule is done with track `id`.
    pub fn is_done(&self, id: u64) -> bool {
        self.fired.contains(&id)
    }

    /// Forgets tracks that are gone, then asks `judge` about every track the
    /// rule applies to and is not done with, in the tracker's order.
    pub fn judge(
        &mut self,
        rule: &Rule,
        ctx: &FrameCtx,
        mut judge: impl FnMut(&Track, Spot, &mut Held) -> Verdict,
    ) -> Vec<Firing> {
        self.fired.retain(|id| ctx.is_live(*id));
        self.held.since.retain(|id, _| ctx.is_live(*id));
        let mut out = Vec::new();
        for tr in ctx.tracks {
            if self.fired.contains(&tr.id) || !rule.eligible(tr) {
                continue;
            }
            let point = ctx.norm(tr.anchor());
            let spot = Spot {
                point,
                inside: rule.geometry.contains(point),
            };
            match judge(tr, spot, &mut self.held) {
                Verdict::Wait => {}
                Verdict::Never => {
                    self.fired.insert(tr.id);
                }
                Verdict::Fire(f) => {
                    self.fired.insert(tr.id);
                    self.held.since.remove(&tr.id);
                    out.push(f);
                }
            }
        }
        out
    }
}

/// A step of a track's history: (time before, time after, point before,
/// point after), normalised.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub t0: f64,
    pub t1: f64,
    pub from: [f64; 2],
    pub to: [f64; 2],
}

/// The first step of a track's history that crosses the line segment in
/// `dir`. Any step counts, so a crossing made before the track was
/// confirmed is still seen.
pub(crate) fn first_crossing(
    tr: &Track,
    line: [[f64; 2]; 2],
    dir: Direction,
    ctx: &FrameCtx,
) -> Option<Step> {
    tr.history.windows(2).find_map(|w| {
        let (a, b) = (ctx.norm(w[0].1), ctx.norm(w[1].1));
        (segments_cross(a, b, line[0], line[1]) && movement_matches(dir, a, b)).then_some(Step {
            t0: w[0].0,
            t1: w[1].0,
            from: a,
            to: b,
        })
    })
}

/// Ground speed over the last second of the track's history.
pub(crate) fn speed_kmh(tr: &Track, hm: &Homography, w: f64, h: f64) -> Option<f64> {
    let (t1, p1) = *tr.history.last()?;
    let (t0, p0) = *tr.history.iter().rev().find(|(ht, _)| t1 - ht >= 0.8)?;
    let a = hm.apply([p0[0] as f64 / w, p0[1] as f64 / h])?;
    let b = hm.apply([p1[0] as f64 / w, p1[1] as f64 / h])?;
    Some((b[0] - a[0]).hypot(b[1] - a[1]) / (t1 - t0) * 3.6)
}

/// A person riding a motorbike: their feet are within the bike's width and
/// their box overlaps the bike's box vertically.
pub(crate) fn on_bike(person: &[f32; 4], bike: &[f32; 4]) -> bool {
    let cx = (person[0] + person[2]) / 2.0;
    cx >= bike[0] && cx <= bike[2] && person[3] >= bike[1] && person[1] <= bike[3]
}
