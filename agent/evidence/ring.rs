//! The pre-event ring: encoded frames of the record stream, kept as whole
//! GOPs within a byte budget, so a clip can start on a keyframe before the
//! event without ever decoding or re-encoding.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use crate::decode::Codec;

/// One encoded access unit (Annex B), as received.
#[derive(Debug)]
pub struct RingFrame {
    pub data: Vec<u8>,
    /// Presentation time on the session clock (from RTP time), nanoseconds.
    pub pts_ns: u64,
    pub keyframe: bool,
    /// Wall-clock time the frame arrived.
    pub wall: SystemTime,
}

/// A byte-bounded ring of whole GOPs. The first frame is always a keyframe.
pub struct GopRing {
    frames: VecDeque<Arc<RingFrame>>,
    bytes: u64,
    budget: u64,
    pub codec: Codec,
    /// Session number: bumped when the stream restarts, so a clip never mixes
    /// two sessions' clocks.
    pub session: u64,
    /// GOPs evicted to stay within the budget.
    pub evicted_gops: u64,
    /// Frames come from a separate record stream (the camera's main stream
    /// while detection runs on `detect_url`): events are placed on this
    /// stream's clock by wall-clock arrival time.
    pub wall_clock: bool,
    /// The latest parameter sets (SPS/PPS, and VPS for H.265) seen, Annex B:
    /// the camera (or retina) sends them with some keyframes only, and a clip
    /// must start with them.
    params: Vec<u8>,
}

/// The parameter-set NAL units of an Annex B access unit, each with a start code.
pub fn parameter_sets(codec: Codec, au: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (s, e) in nal_ranges(au) {
        let is_param = match codec {
            Codec::H264 => matches!(au[s] & 0x1f, 7 | 8),
            Codec::H265 => matches!((au[s] >> 1) & 0x3f, 32..=34),
        };
        if is_param {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(&au[s..e]);
        }
    }
    out
}

/// (start, end) of each NAL unit's bytes after its start code.
fn nal_ranges(au: &[u8]) -> Vec<(usize, usize)> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= au.len() {
        if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let mut e = starts.get(k + 1).map(|n| n - 3).unwrap_or(au.len());
        while e > s && au[e - 1] == 0 {
            e -= 1;
        }
        if s < e {
            out.push((s, e));
        }
    }
    out
}

/// What a clip request got from the ring.
pub struct Span {
    pub frames: Vec<Arc<RingFrame>>,
    pub codec: Codec,
    /// True when the ring did not reach back to the requested start.
    pub pre_truncated: bool,
    /// Parameter sets to put before the first frame when it lacks them.
    pub params: Vec<u8>,
}

impl GopRing {
    pub fn new(codec: Codec, budget: u64) -> GopRing {
        GopRing {
            frames: VecDeque::new(),
            bytes: 0,
            budget,
            codec,
            session: 0,
            evicted_gops: 0,
            wall_clock: false,
            params: Vec::new(),
        }
    }

    /// Starts a new stream (after a reconnect): the old frames are dropped.
    pub fn restart(&mut self, codec: Codec) {
        self.frames.clear();
        self.bytes = 0;
        self.params.clear();
        self.codec = codec;
        self.session += 1;
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    pub fn len(&self) -> usize {
        self.frames.len()
    }
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
    /// The presentation time on this ring's clock of the moment `wall`, from
    /// the frame that arrived closest to it.
    pub fn pts_at_wall(&self, wall: SystemTime) -> Option<u64> {
        let off = |f: &RingFrame| match wall.duration_since(f.wall) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        let f = self.frames.iter().min_by_key(|f| off(f).abs())?;
        Some((f.pts_ns as i128 + off(f)).max(0) as u64)
    }

    /// Presentation time of the oldest frame.
    pub fn first_pts(&self) -> Option<u64> {
        self.frames.front().map(|f| f.pts_ns)
    }
    /// Presentation times of the keyframes held.
    pub fn keyframe_pts(&self) -> Vec<u64> {
        self.frames
            .iter()
            .filter(|f| f.keyframe)
            .map(|f| f.pts_ns)
            .collect()
    }
    /// Presentation time of the newest frame.
    pub fn latest_pts(&self) -> Option<u64> {
        self.frames.back().map(|f| f.pts_ns)
    }

    /// Adds a frame; frames before the first keyframe are ignored. Evicts the
    /// oldest whole GOPs while over budget, but never the GOP being filled.
    pub fn push(&mut self, f: Arc<RingFrame>) {
        if self.frames.is_empty() && !f.keyframe {
            return;
        }
        if f.keyframe {
            let p = parameter_sets(self.codec, &f.data);
            if !p.is_empty() {
                self.params = p;
            }
        }
        self.bytes += f.data.len() as u64;
        self.frames.push_back(f);
        while self.bytes > self.budget {
            // The second keyframe is where the oldest GOP ends.
            let Some(end) = self.frames.iter().skip(1).position(|f| f.keyframe) else {
                break;
            };
            for _ in 0..=end {
                if let Some(old) = self.frames.pop_front() {
                    self.bytes -= old.data.len() as u64;
                }
            }
            self.evicted_gops += 1;
        }
    }

    /// Whether a clip may start at frame `i`: an H.265 CRA followed by
    /// RASL pictures (open GOP) may not — a player drops them, so the clip
    /// would not hold every frame of the source.
    fn clean_start(&self, i: usize) -> bool {
        if self.codec == Codec::H264 {
            return true;
        }
        let types = |d: &[u8]| -> Vec<u8> {
            nal_ranges(d)
                .into_iter()
                .map(|(s, _)| (d[s] >> 1) & 0x3f)
                .filter(|t| *t < 32)
                .collect()
        };
        let here = types(&self.frames[i].data);
        if here.iter().all(|t| (16..=20).contains(t)) {
            return true;
        }
        match self.frames.get(i + 1) {
            Some(next) => !types(&next.data).iter().any(|t| *t == 8 || *t == 9),
            None => true,
        }
    }

    /// Frames from the last keyframe at or before `from_ns` up to the last
    /// frame (in decode order) whose presentation time is at or before
    /// `to_ns`. When no keyframe is that old, starts at the oldest keyframe.
    pub fn span(&self, from_ns: u64, to_ns: u64) -> Option<Span> {
        let start = self
            .frames
            .iter()
            .enumerate()
            .filter(|(i, f)| f.keyframe && f.pts_ns <= from_ns && self.clean_start(*i))
            .map(|(i, _)| i)
            .next_back();
        let pre_truncated = start.is_none();
        let start = start
            .or_else(|| {
                (0..self.frames.len()).find(|&i| self.frames[i].keyframe && self.clean_start(i))
            })
            .unwrap_or(0);
        // In decode order, the clip ends at the last frame that presents by `to_ns`
        // (B-frames may present before an earlier-decoded P-frame).
        let end = self
            .frames
            .iter()
            .enumerate()
            .skip(start)
            .filter(|(_, f)| f.pts_ns <= to_ns)
            .map(|(i, _)| i)
            .next_back()?;
        let frames: Vec<_> = self.frames.range(start..=end).cloned().collect();
        (!frames.is_empty()).then_some(Span {
            frames,
            codec: self.codec,
            pre_truncated,
            params: self.params.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u64, key: bool, size: usize) -> Arc<RingFrame> {
        Arc::new(RingFrame {
            data: vec![0; size],
            pts_ns: i * 40_000_000,
            keyframe: key,
            wall: SystemTime::UNIX_EPOCH,
        })
    }

    #[test]
    fn evicts_whole_gops_and_starts_on_a_keyframe() {
        let mut r = GopRing::new(Codec::H264, 10_000);
        r.push(frame(0, false, 100)); // before any keyframe: ignored
        assert!(r.is_empty());
        for i in 0..100 {
            r.push(frame(i, i % 25 == 0, 200));
        }
        assert!(r.bytes() <= 10_000);
        assert!(r.frames[0].keyframe);
        assert_eq!(r.frames[0].pts_ns % (25 * 40_000_000), 0);
        // 50 frames fit; two whole GOPs went, never part of one.
        assert_eq!(r.evicted_gops, 2);
        assert_eq!(r.len(), 50);
    }

    #[test]
    fn parameter_sets_are_kept_for_clips() {
        let mut r = GopRing::new(Codec::H265, u64::MAX);
        // VPS, SPS, PPS, IDR; then an IDR alone.
        let first = vec![
            0, 0, 0, 1, 64, 1, 9, 0, 0, 1, 66, 1, 8, 0, 0, 1, 68, 1, 7, 0, 0, 1, 38, 1, 5,
        ];
        r.push(Arc::new(RingFrame {
            data: first,
            pts_ns: 0,
            keyframe: true,
            wall: SystemTime::UNIX_EPOCH,
        }));
        r.push(Arc::new(RingFrame {
            data: vec![0, 0, 1, 38, 1, 6],
            pts_ns: 1,
            keyframe: true,
            wall: SystemTime::UNIX_EPOCH,
        }));
        let s = r.span(1, 1).unwrap();
        assert_eq!(
            s.params,
            vec![
                0, 0, 0, 1, 64, 1, 9, 0, 0, 0, 1, 66, 1, 8, 0, 0, 0, 1, 68, 1, 7
            ]
        );
        assert!(parameter_sets(Codec::H265, &s.frames[0].data).is_empty());
    }

    #[test]
    fn an_open_gop_cra_is_not_a_clip_start() {
        let f = |t: u8, pts: u64, key: bool| {
            Arc::new(RingFrame {
                data: vec![0, 0, 1, t << 1, 1, 5],
                pts_ns: pts,
                keyframe: key,
                wall: SystemTime::UNIX_EPOCH,
            })
        };
        let mut r = GopRing::new(Codec::H265, u64::MAX);
        r.push(f(19, 0, true)); // IDR
        r.push(f(1, 1, false));
        r.push(f(21, 10, true)); // CRA with a RASL picture after it
        r.push(f(9, 8, false));
        r.push(f(21, 20, true)); // CRA without leading pictures
        r.push(f(1, 21, false));
        assert_eq!(r.span(15, 30).unwrap().frames[0].pts_ns, 0);
        assert_eq!(r.span(25, 30).unwrap().frames[0].pts_ns, 20);
    }

    #[test]
    fn wall_time_maps_onto_the_record_clock() {
        let mut r = GopRing::new(Codec::H264, u64::MAX);
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        for i in 0..50u64 {
            r.push(Arc::new(RingFrame {
                data: vec![0; 10],
                pts_ns: 7_000_000_000 + i * 40_000_000,
                keyframe: i % 25 == 0,
                wall: t0 + std::time::Duration::from_millis(i * 40),
            }));
        }
        let at = |ms: u64| {
            r.pts_at_wall(t0 + std::time::Duration::from_millis(ms))
                .unwrap()
        };
        assert_eq!(at(400), 7_400_000_000);
        assert_eq!(at(410), 7_410_000_000);
        assert_eq!(at(5000), 7_000_000_000 + 5_000_000_000); // past the newest frame
    }

    #[test]
    fn the_current_gop_is_never_evicted() {
        let mut r = GopRing::new(Codec::H264, 1_000);
        for i in 0..30 {
            r.push(frame(i, i == 0, 200));
        }
        assert_eq!(r.len(), 30);
    }

    #[test]
    fn span_starts_at_the_keyframe_at_or_before_the_pre_roll() {
        let mut r = GopRing::new(Codec::H264, u64::MAX);
        for i in 0..100 {
            r.push(frame(i, i % 25 == 0, 10));
        }
        let s = r.span(30 * 40_000_000, 60 * 40_000_000).unwrap();
        assert!(!s.pre_truncated);
        assert_eq!(s.frames[0].pts_ns, 25 * 40_000_000);
        assert_eq!(s.frames.last().unwrap().pts_ns, 60 * 40_000_000);
        assert_eq!(s.frames.len(), 36);
        let s = r.span(25 * 40_000_000, 25 * 40_000_000).unwrap();
        assert_eq!(s.frames.len(), 1);
        r.restart(Codec::H265);
        assert!(r.span(0, u64::MAX).is_none());
    }
}
