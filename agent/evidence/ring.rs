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
    /// A keyframe or a recovery point (intra refresh): where a clip can start.
    pub keyframe: bool,
    /// Wall-clock time the frame arrived.
    pub wall: SystemTime,
}

/// One camera session's frames: one clock, one codec.
struct Segment {
    session: u64,
    codec: Codec,
    frames: VecDeque<Arc<RingFrame>>,
    bytes: u64,
    /// The latest parameter sets (SPS/PPS, and VPS for H.265) seen, Annex B:
    /// the camera (or retina) sends them with some keyframes only, and a clip
    /// must start with them.
    params: Vec<u8>,
}

/// A byte-bounded ring of the recent video, by camera session. A reconnect
/// starts a new segment and keeps the old one (evicted first), so an event
/// raised just before a drop still gets its pre-roll. Whole GOPs are evicted
/// while they fit; a single GOP larger than the budget (a camera that sends
/// no second keyframe, intra refresh) has its oldest frames cut instead, so
/// the budget is a hard cap.
pub struct GopRing {
    segs: VecDeque<Segment>,
    bytes: u64,
    budget: u64,
    /// GOPs evicted to stay within the budget.
    pub evicted_gops: u64,
    /// Frames cut from inside a GOP larger than the budget.
    pub cut_frames: u64,
    /// Frames come from a separate record stream (the camera's main stream
    /// while detection runs on `detect_url`): events are placed on this
    /// stream's clock by wall-clock arrival time.
    pub wall_clock: bool,
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
pub(super) fn nal_ranges(au: &[u8]) -> Vec<(usize, usize)> {
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
    /// False when no keyframe was close enough before the event (see
    /// [`SegmentView::span`]): a player shows pictures from the first
    /// keyframe or recovery point in the clip.
    pub starts_on_keyframe: bool,
    /// Parameter sets to put before the first frame when it lacks them.
    pub params: Vec<u8>,
    /// The span ends where a chunk of the recording ends (the ring holds the
    /// frame that starts the next one), so its last segment is the same for
    /// every event that shares it.
    pub complete: bool,
}

impl GopRing {
    pub fn new(codec: Codec, budget: u64) -> GopRing {
        GopRing {
            segs: VecDeque::from([Segment::new(0, codec)]),
            bytes: 0,
            budget,
            evicted_gops: 0,
            cut_frames: 0,
            wall_clock: false,
        }
    }

    fn current(&mut self) -> &mut Segment {
        if self.segs.is_empty() {
            self.segs.push_back(Segment::new(0, Codec::H264));
        }
        let n = self.segs.len() - 1;
        &mut self.segs[n]
    }

    /// Starts a new stream (after a reconnect): a new segment on its own
    /// clock; the old one is kept within the budget for events that are
    /// still waiting for their clip.
    pub fn restart(&mut self, codec: Codec) {
        let session = self.session() + 1;
        if self.segs.back().is_some_and(|s| s.frames.is_empty()) {
            self.segs.pop_back();
        }
        self.segs.push_back(Segment::new(session, codec));
    }

    /// The current session number: bumped when the stream restarts, so a
    /// clip never mixes two sessions' clocks.
    pub fn session(&self) -> u64 {
        self.segs.back().map(|s| s.session).unwrap_or(0)
    }

    /// The frames of session `session`, while the ring still holds them.
    pub fn segment(&self, session: u64) -> Option<SegmentView<'_>> {
        let current = self.session();
        self.segs
            .iter()
            .find(|s| s.session == session)
            .map(|seg| SegmentView {
                seg,
                ended: session != current,
            })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    pub fn budget(&self) -> u64 {
        self.budget
    }
    /// A new cap, applied from the next frame on.
    pub fn set_budget(&mut self, budget: u64) {
        self.budget = budget;
    }
    pub fn len(&self) -> usize {
        self.segs.iter().map(|s| s.frames.len()).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The codec of the current session.
    pub fn codec(&self) -> Codec {
        self.segs.back().map(|s| s.codec).unwrap_or(Codec::H264)
    }

    /// Adds a frame to the current session; frames before its first keyframe
    /// are ignored. Then evicts within the budget: the oldest session first,
    /// whole GOPs, never the GOP being filled unless it alone is over the
    /// budget (then its oldest frames).
    pub fn push(&mut self, f: Arc<RingFrame>) {
        let seg = self.current();
        if seg.frames.is_empty() && !f.keyframe {
            return;
        }
        if f.keyframe {
            let p = parameter_sets(seg.codec, &f.data);
            if !p.is_empty() {
                seg.params = p;
            }
        }
        let n = f.data.len() as u64;
        seg.bytes += n;
        seg.frames.push_back(f);
        self.bytes += n;
        while self.bytes > self.budget {
            let last = self.segs.len() == 1;
            let Some(seg) = self.segs.front_mut() else {
                break;
            };
            // The second keyframe is where the oldest GOP ends.
            let (count, whole) = match seg.frames.iter().skip(1).position(|f| f.keyframe) {
                Some(end) => (end + 1, true),
                None if !last => (seg.frames.len(), true),
                // One GOP, the one being filled, over the budget.
                None if seg.frames.len() > 1 => (1, false),
                None => break,
            };
            let mut freed = 0;
            for _ in 0..count {
                if let Some(old) = seg.frames.pop_front() {
                    freed += old.data.len() as u64;
                }
            }
            seg.bytes -= freed;
            self.bytes -= freed;
            if whole {
                self.evicted_gops += 1;
            } else {
                self.cut_frames += 1;
            }
            if seg.frames.is_empty() && !last {
                self.segs.pop_front();
            }
        }
    }
}

impl Segment {
    fn new(session: u64, codec: Codec) -> Segment {
        Segment {
            session,
            codec,
            frames: VecDeque::new(),
            bytes: 0,
            params: Vec::new(),
        }
    }
}

/// One session's frames in the ring.
pub struct SegmentView<'a> {
    seg: &'a Segment,
    /// The session is over (the camera reconnected): no frame will be added.
    pub ended: bool,
}

impl SegmentView<'_> {
    /// The presentation time on this session's clock of the moment `wall`,
    /// from the frame that arrived closest to it.
    pub fn pts_at_wall(&self, wall: SystemTime) -> Option<u64> {
        let off = |f: &RingFrame| match wall.duration_since(f.wall) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        let f = self.seg.frames.iter().min_by_key(|f| off(f).abs())?;
        Some((f.pts_ns as i128 + off(f)).max(0) as u64)
    }
    /// Presentation time of the oldest frame.
    pub fn first_pts(&self) -> Option<u64> {
        self.seg.frames.front().map(|f| f.pts_ns)
    }
    /// Presentation times of the keyframes held.
    pub fn keyframe_pts(&self) -> Vec<u64> {
        self.seg
            .frames
            .iter()
            .filter(|f| f.keyframe)
            .map(|f| f.pts_ns)
            .collect()
    }
    /// Presentation time of the newest frame.
    pub fn latest_pts(&self) -> Option<u64> {
        self.seg.frames.back().map(|f| f.pts_ns)
    }

    /// Whether a clip may start at frame `i`: an H.265 CRA followed by
    /// RASL pictures (open GOP) may not — a player drops them, so the clip
    /// would not hold every frame of the source.
    fn clean_start(&self, i: usize) -> bool {
        if self.seg.codec == Codec::H264 {
            return true;
        }
        let types = |d: &[u8]| -> Vec<u8> {
            nal_ranges(d)
                .into_iter()
                .map(|(s, _)| (d[s] >> 1) & 0x3f)
                .filter(|t| *t < 32)
                .collect()
        };
        let here = types(&self.seg.frames[i].data);
        if here.iter().all(|t| (16..=20).contains(t)) {
            return true;
        }
        match self.seg.frames.get(i + 1) {
            Some(next) => !types(&next.data).iter().any(|t| *t == 8 || *t == 9),
            None => true,
        }
    }

    /// The clip for an event: frames from a start (below) up to the last
    /// frame (in decode order) whose presentation time is at or before
    /// `to_ns`. The start, with `from_ns` the wanted pre-roll start and
    /// `earliest_ns` the oldest a clip may reach back (its length cap):
    /// 1. the last keyframe in `earliest_ns..=from_ns`;
    /// 2. else the first keyframe after `from_ns` (up to `to_ns`), the clip
    ///    then short of its pre-roll;
    /// 3. else (a GOP longer than the cap, or no keyframe at all) the first
    ///    frame at or after `max(from_ns, earliest_ns)`, or the oldest held;
    ///    the clip does not start on a keyframe.
    pub fn span(&self, from_ns: u64, to_ns: u64, earliest_ns: u64) -> Option<Span> {
        let frames = &self.seg.frames;
        let starts = super::fmp4::chunk_starts(frames.iter().map(|f| f.as_ref()));
        let oldest = frames.front()?.pts_ns;
        let key_at = |i: usize| frames[i].keyframe && self.clean_start(i);
        let (start, on_key, pre_truncated) = if let Some(i) = (0..frames.len())
            .rev()
            .find(|&i| key_at(i) && frames[i].pts_ns <= from_ns && frames[i].pts_ns >= earliest_ns)
        {
            (i, true, false)
        } else if let Some(i) = (0..frames.len())
            .find(|&i| key_at(i) && frames[i].pts_ns > from_ns && frames[i].pts_ns <= to_ns)
        {
            (i, true, true)
        } else {
            let want = from_ns.max(earliest_ns);
            let mut i = (0..frames.len())
                .find(|&i| frames[i].pts_ns >= want)
                .unwrap_or(0);
            // Start where a chunk of the recording starts (at most one chunk
            // later), so the clip shares its segments with its neighbours.
            if i > 0
                && let Some(j) = (i..frames.len())
                    .take_while(|&j| frames[j].pts_ns <= to_ns)
                    .find(|&j| starts[j])
            {
                i = j;
            }
            (i, false, oldest > from_ns)
        };
        // In decode order, the clip ends at the last frame that presents by `to_ns`
        // (B-frames may present before an earlier-decoded P-frame).
        let end = frames
            .iter()
            .enumerate()
            .skip(start)
            .filter(|(_, f)| f.pts_ns <= to_ns)
            .map(|(i, _)| i)
            .next_back()?;
        // ... and runs on to the end of its chunk.
        let mut end = end;
        while end + 1 < frames.len() && !starts[end + 1] {
            end += 1;
        }
        let complete = end + 1 < frames.len();
        let out: Vec<_> = frames.range(start..=end).cloned().collect();
        (!out.is_empty()).then_some(Span {
            frames: out,
            codec: self.seg.codec,
            pre_truncated,
            starts_on_keyframe: on_key,
            params: self.seg.params.clone(),
            complete,
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
        let first = &r.segs[0].frames[0];
        assert!(first.keyframe);
        assert_eq!(first.pts_ns % (25 * 40_000_000), 0);
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
        let s = r.segment(0).unwrap().span(1, 1, 0).unwrap();
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
        let seg = r.segment(0).unwrap();
        assert_eq!(seg.span(15, 30, 0).unwrap().frames[0].pts_ns, 0);
        assert_eq!(seg.span(25, 30, 0).unwrap().frames[0].pts_ns, 20);
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
            r.segment(0)
                .unwrap()
                .pts_at_wall(t0 + std::time::Duration::from_millis(ms))
                .unwrap()
        };
        assert_eq!(at(400), 7_400_000_000);
        assert_eq!(at(410), 7_410_000_000);
        assert_eq!(at(5000), 7_000_000_000 + 5_000_000_000); // past the newest frame
    }

    #[test]
    fn a_gop_larger_than_the_budget_is_cut_not_kept_whole() {
        // A camera that sends one keyframe and never another (intra refresh).
        let mut r = GopRing::new(Codec::H264, 1_000);
        for i in 0..3000 {
            r.push(frame(i, i == 0, 200));
            assert!(
                r.bytes() <= 1_000,
                "over the cap at frame {i}: {}",
                r.bytes()
            );
        }
        assert_eq!(r.len(), 5);
        assert_eq!(r.cut_frames, 2995);
        // Its clip: no keyframe in reach, so it starts at the pre-roll.
        let seg = r.segment(0).unwrap();
        let s = seg.span(2996 * 40_000_000, 2999 * 40_000_000, 0).unwrap();
        assert!(!s.starts_on_keyframe);
        assert_eq!(s.frames.len(), 4);
        // Within the budget, a GOP being filled is kept whole.
        let mut r = GopRing::new(Codec::H264, 100_000);
        for i in 0..30 {
            r.push(frame(i, i == 0, 200));
        }
        assert_eq!(r.len(), 30);
        assert_eq!(r.cut_frames, 0);
    }

    #[test]
    fn a_clip_reaches_back_no_further_than_its_cap() {
        // A 24 s GOP at 25 fps: the keyframe before the pre-roll (24 s) is
        // older than the cap allows (30 s).
        let mut r = GopRing::new(Codec::H264, u64::MAX);
        for i in 0..1400 {
            r.push(frame(i, i % 600 == 0, 10));
        }
        let seg = r.segment(0).unwrap();
        let ms = 1_000_000;
        let event = 1000 * 40 * ms; // 40 s; keyframes at 0, 24 s, 48 s
        let (pre, post, reach) = (5000 * ms, 5000 * ms, 10_000 * ms);
        let s = seg.span(event - pre, event + post, event - reach).unwrap();
        assert!(!s.starts_on_keyframe);
        // At the pre-roll (35 s), moved on to where the recording's chunk
        // starts (36 s), so its segments are shared with the neighbours'.
        assert_eq!(s.frames[0].pts_ns, 36_000 * ms);
        // 48 s keyframe after the event's end: not used; a keyframe after
        // the pre-roll but before the end is.
        let s = seg
            .span(event - pre, event + 9000 * ms, event - reach)
            .unwrap();
        assert!(s.starts_on_keyframe && s.pre_truncated);
        assert_eq!(s.frames[0].pts_ns, 48_000 * ms);
        // With a reach that covers it, the 24 s keyframe.
        let s = seg.span(event - pre, event + post, 0).unwrap();
        assert!(s.starts_on_keyframe && !s.pre_truncated);
        assert_eq!(s.frames[0].pts_ns, 24_000 * ms);
    }

    #[test]
    fn a_reconnect_keeps_the_old_session_for_waiting_events() {
        let mut r = GopRing::new(Codec::H264, 100 * 200);
        for i in 0..60 {
            r.push(frame(i, i % 25 == 0, 100));
        }
        let before = r.session();
        r.restart(Codec::H265);
        assert_eq!(r.session(), before + 1);
        let old = r.segment(before).expect("old session kept");
        assert!(old.ended);
        let s = old.span(40 * 40_000_000, 59 * 40_000_000, 0).unwrap();
        assert_eq!(s.codec, Codec::H264);
        assert_eq!(s.frames[0].pts_ns, 25 * 40_000_000);
        assert_eq!(s.frames.last().unwrap().pts_ns, 59 * 40_000_000);
        // New frames (a new clock) go to the new session; the old one is
        // evicted first when the budget is reached, GOP by GOP.
        r.push(frame(0, false, 100)); // before its first keyframe: ignored
        assert!(r.segment(before + 1).unwrap().latest_pts().is_none());
        for i in 0..150 {
            r.push(frame(i, i % 25 == 0, 100));
            assert!(r.bytes() <= 100 * 200);
        }
        assert_eq!(
            r.segment(before).unwrap().first_pts(),
            Some(25 * 40_000_000)
        );
        for i in 150..200 {
            r.push(frame(i, i % 25 == 0, 100));
        }
        assert!(r.segment(before).is_none(), "old session evicted");
        assert!(!r.segment(before + 1).unwrap().ended);
    }

    #[test]
    fn span_starts_at_the_keyframe_at_or_before_the_pre_roll() {
        let mut r = GopRing::new(Codec::H264, u64::MAX);
        for i in 0..100 {
            r.push(frame(i, i % 25 == 0, 10));
        }
        let seg = r.segment(0).unwrap();
        let s = seg.span(30 * 40_000_000, 60 * 40_000_000, 0).unwrap();
        assert!(!s.pre_truncated);
        assert_eq!(s.frames[0].pts_ns, 25 * 40_000_000);
        // On to the end of the chunk holding frame 60 (chunks start at the
        // keyframes 25, 75 and at 2 s, frame 50): frame 74, complete.
        assert_eq!(s.frames.last().unwrap().pts_ns, 74 * 40_000_000);
        assert_eq!(s.frames.len(), 50);
        assert!(s.complete);
        let s = seg.span(25 * 40_000_000, 25 * 40_000_000, 0).unwrap();
        assert_eq!(s.frames.len(), 25);
        // The last chunk is not complete until the next one starts.
        let s = seg.span(80 * 40_000_000, 99 * 40_000_000, 0).unwrap();
        assert!(!s.complete);
        r.restart(Codec::H265);
        assert!(r.segment(1).unwrap().span(0, u64::MAX, 0).is_none());
    }
}
