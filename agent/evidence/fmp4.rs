//! Clips as fragmented MP4 whose media segments are shared between
//! overlapping events of one camera: `clip-init.mp4` (the event's own
//! header: codec parameters and an edit list that starts it at the clip's
//! first frame) and `clip-NNN.m4s`, one per chunk of the camera's recording.
//!
//! A chunk's bytes depend only on its frames (the camera's own access units,
//! start codes rewritten as 4-byte lengths, timestamps on the session clock),
//! never on the event that asked for it, so two events whose clips overlap
//! produce byte-identical segments: the second one hard-links the first's
//! file (one stored copy), and each event's signed manifest still lists every
//! segment with its sha256. `cat clip-init.mp4 clip-*.m4s > clip.mp4` is a
//! playable file; `/evidence/<id>/clip.mp4` serves exactly that.
//!
//! Chunks end before every keyframe and every [`CHUNK_NS`] of session time,
//! so a camera with a long GOP (or none) still shares in short pieces.

use std::sync::Arc;

use super::ring::{RingFrame, Span};

/// Media timescale of every track (ticks per second).
pub const TIMESCALE: u32 = 90_000;
/// A chunk ends at least at every multiple of this on the session clock.
pub const CHUNK_NS: u64 = 2_000_000_000;

/// Where chunks start in `frames` (decode order; the first frame starts
/// one): at every keyframe, and at the first frame that presents after
/// every frame of the chunk so far and in a later [`CHUNK_NS`] period of the
/// session clock. Such a frame is never a B-frame that an earlier frame is
/// still waiting for, so each chunk decodes on its own after the one before.
pub fn chunk_starts<'a>(frames: impl IntoIterator<Item = &'a RingFrame>) -> Vec<bool> {
    let mut out = Vec::new();
    let mut max = 0u64;
    for f in frames {
        let start = out.is_empty()
            || f.keyframe
            || (f.pts_ns > max && f.pts_ns / CHUNK_NS != max / CHUNK_NS);
        if start {
            max = f.pts_ns;
        } else {
            max = max.max(f.pts_ns);
        }
        out.push(start);
    }
    out
}

/// Splits frames (decode order) into chunks: index ranges.
pub fn chunk_ranges(frames: &[Arc<RingFrame>]) -> Vec<std::ops::Range<usize>> {
    let starts = chunk_starts(frames.iter().map(|f| f.as_ref()));
    let mut out = Vec::new();
    let mut start = 0;
    for (i, s) in starts.iter().enumerate().skip(1) {
        if *s {
            out.push(start..i);
            start = i;
        }
    }
    if start < frames.len() {
        out.push(start..frames.len());
    }
    out
}

fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 8);
    v.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
    v.extend_from_slice(kind);
    v.extend_from_slice(body);
    v
}

fn full(kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(body.len() + 4);
    b.push(version);
    b.extend_from_slice(&flags.to_be_bytes()[1..]);
    b.extend_from_slice(body);
    bx(kind, &b)
}

fn ticks(ns: u64) -> u64 {
    (ns as u128 * TIMESCALE as u128 / 1_000_000_000) as u64
}

/// An Annex B access unit as MP4 sample data: each NAL unit with a 4-byte
/// big-endian length instead of its start code; the NAL bytes untouched.
pub fn annexb_to_lengths(au: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(au.len() + 16);
    for (s, e) in super::ring::nal_ranges(au) {
        out.extend_from_slice(&((e - s) as u32).to_be_bytes());
        out.extend_from_slice(&au[s..e]);
    }
    out
}

/// Typical frame interval (median of presentation deltas), ns.
pub fn frame_interval(pts: &[u64]) -> u64 {
    let mut sorted = pts.to_vec();
    sorted.sort_unstable();
    let mut d: Vec<u64> = sorted
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0)
        .collect();
    d.sort_unstable();
    d.get(d.len() / 2).copied().unwrap_or(40_000_000)
}

/// How far decode times run ahead of presentation: enough for B-frames
/// reordered by up to this much (5 frames at 25 fps), so composition offsets
/// stay positive.
const DECODE_LEAD_NS: u64 = 200_000_000;

/// One media segment (`moof` + `mdat`) of `frames`, decode order. Decode
/// times are the sorted presentation times less [`DECODE_LEAD_NS`] (so they
/// rise, across segments too); the last frame lasts the chunk's typical
/// interval. Depends on the frames only.
pub fn media_segment(frames: &[Arc<RingFrame>], track_id: u32) -> Vec<u8> {
    let pts: Vec<u64> = frames.iter().map(|f| f.pts_ns + DECODE_LEAD_NS).collect();
    let mut dts: Vec<u64> = frames.iter().map(|f| f.pts_ns).collect();
    dts.sort_unstable();
    let interval = frame_interval(&pts);
    let samples: Vec<Vec<u8>> = frames.iter().map(|f| annexb_to_lengths(&f.data)).collect();
    let seq = (dts.first().copied().unwrap_or(0) / CHUNK_NS) as u32 + 1;
    let mfhd = full(b"mfhd", 0, 0, &seq.to_be_bytes());
    let tfhd = full(b"tfhd", 0, 0x02_0000, &track_id.to_be_bytes());
    let base = ticks(dts.first().copied().unwrap_or(0));
    let tfdt = full(b"tfdt", 1, 0, &base.to_be_bytes());
    // trun: data offset, and per sample duration, size, flags, offset.
    let trun_len = 12 + 4 + 4 + 16 * frames.len();
    let moof_len = 8 + mfhd.len() + 8 + tfhd.len() + tfdt.len() + trun_len;
    let mut t = Vec::with_capacity(trun_len);
    t.extend_from_slice(&(frames.len() as u32).to_be_bytes());
    t.extend_from_slice(&((moof_len + 8) as i32).to_be_bytes());
    for (i, f) in frames.iter().enumerate() {
        let end = dts.get(i + 1).copied().unwrap_or(dts[i] + interval);
        let dur = ticks(end).saturating_sub(ticks(dts[i])) as u32;
        let flags: u32 = if f.keyframe { 0x0200_0000 } else { 0x0101_0000 };
        let cto = ticks(pts[i]) as i64 - ticks(dts[i]) as i64;
        t.extend_from_slice(&dur.to_be_bytes());
        t.extend_from_slice(&(samples[i].len() as u32).to_be_bytes());
        t.extend_from_slice(&flags.to_be_bytes());
        t.extend_from_slice(&(cto as i32).to_be_bytes());
    }
    let trun = full(
        b"trun",
        1,
        0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800,
        &t,
    );
    let traf = bx(b"traf", &[tfhd, tfdt, trun].concat());
    let moof = bx(b"moof", &[mfhd, traf].concat());
    debug_assert_eq!(moof.len(), moof_len);
    let mdat = bx(b"mdat", &samples.concat());
    [moof, mdat].concat()
}

/// Top-level boxes of `buf`: (type, start, end).
fn boxes(buf: &[u8]) -> Vec<([u8; 4], usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 8 <= buf.len() {
        let size = u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]) as usize;
        let kind = [buf[i + 4], buf[i + 5], buf[i + 6], buf[i + 7]];
        let end = if size == 0 { buf.len() } else { i + size };
        if size < 8 && size != 0 || end > buf.len() {
            break;
        }
        out.push((kind, i, end));
        i = end;
    }
    out
}

fn find(buf: &[u8], kind: &[u8; 4]) -> Option<(usize, usize)> {
    boxes(buf)
        .into_iter()
        .find(|(k, _, _)| k == kind)
        .map(|(_, s, e)| (s, e))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Turns the `ftyp` + `moov` a fragmenting muxer wrote into this clip's
/// header: media timescale [`TIMESCALE`], the movie's duration, and an edit
/// list that presents the clip from `start_pts_ns` (session clock) for
/// `duration_ns`. Returns the header and the track id.
pub fn finish_init(
    muxed: &[u8],
    start_pts_ns: u64,
    duration_ns: u64,
) -> Result<(Vec<u8>, u32), String> {
    let bad = |what: &str| format!("the muxer's MP4 header has no {what}");
    let (fs, fe) = find(muxed, b"ftyp").ok_or_else(|| bad("ftyp"))?;
    let (ms, me) = find(muxed, b"moov").ok_or_else(|| bad("moov"))?;
    let moov = &muxed[ms + 8..me];
    let mut out_moov = Vec::new();
    let mut movie_scale = 0u32;
    let mut track_id = 1u32;
    // mvhd first (its timescale sets the edit list's units).
    for (k, s, _) in boxes(moov) {
        if &k == b"mvhd" {
            let v = moov[s + 8];
            let scale_at = s + 12 + if v == 1 { 16 } else { 8 };
            movie_scale = be32(moov, scale_at).ok_or_else(|| bad("mvhd timescale"))?;
        }
    }
    if movie_scale == 0 {
        return Err(bad("movie timescale"));
    }
    let movie_dur = (duration_ns as u128 * movie_scale as u128 / 1_000_000_000) as u64;
    for (k, s, e) in boxes(moov) {
        let mut b = moov[s..e].to_vec();
        match &k {
            b"mvhd" => {
                if b[8] == 1 {
                    b[32..40].copy_from_slice(&movie_dur.to_be_bytes());
                } else {
                    b[24..28]
                        .copy_from_slice(&(movie_dur.min(u32::MAX as u64) as u32).to_be_bytes());
                }
            }
            b"trak" => {
                let (tb, id) = trak(&b[8..], start_pts_ns, movie_dur)?;
                track_id = id;
                b = bx(b"trak", &tb);
            }
            // The fragments' total duration: the muxer saw one frame.
            b"mvex" => {
                let mut body = Vec::new();
                for (k2, s2, e2) in boxes(&b[8..]) {
                    let part = &b[8 + s2..8 + e2];
                    if &k2 == b"mehd" {
                        body.extend(full(b"mehd", 1, 0, &movie_dur.to_be_bytes()));
                    } else {
                        body.extend_from_slice(part);
                    }
                }
                b = bx(b"mvex", &body);
            }
            _ => {}
        }
        out_moov.extend_from_slice(&b);
    }
    Ok((
        [muxed[fs..fe].to_vec(), bx(b"moov", &out_moov)].concat(),
        track_id,
    ))
}

/// A `trak`'s body with an edit list after `tkhd` and the media timescale
/// set; and its track id.
fn trak(body: &[u8], start_pts_ns: u64, movie_dur: u64) -> Result<(Vec<u8>, u32), String> {
    let mut out = Vec::new();
    let mut id = 1;
    for (k, s, e) in boxes(body) {
        match &k {
            b"tkhd" => {
                let v = body[s + 8];
                id = be32(body, s + 12 + if v == 1 { 16 } else { 8 }).unwrap_or(1);
                out.extend_from_slice(&body[s..e]);
                let mut el = Vec::new();
                el.extend_from_slice(&1u32.to_be_bytes());
                el.extend_from_slice(&movie_dur.to_be_bytes());
                el.extend_from_slice(&(ticks(start_pts_ns + DECODE_LEAD_NS) as i64).to_be_bytes());
                el.extend_from_slice(&[0, 1, 0, 0]);
                out.extend_from_slice(&bx(b"edts", &full(b"elst", 1, 0, &el)));
            }
            b"edts" => {}
            b"mdia" => {
                let m = &body[s + 8..e];
                let mut mb = Vec::new();
                for (k2, s2, e2) in boxes(m) {
                    let mut b2 = m[s2..e2].to_vec();
                    if &k2 == b"mdhd" {
                        let at = 12 + if b2[8] == 1 { 16 } else { 8 };
                        b2[at..at + 4].copy_from_slice(&TIMESCALE.to_be_bytes());
                    }
                    mb.extend_from_slice(&b2);
                }
                out.extend_from_slice(&bx(b"mdia", &mb));
            }
            _ => out.extend_from_slice(&body[s..e]),
        }
    }
    Ok((out, id))
}

/// What a chunked clip is made of.
pub struct Chunked {
    pub init: Vec<u8>,
    /// The media segments, in order.
    pub segments: Vec<Vec<u8>>,
    pub frames: usize,
    pub start_pts_ns: u64,
    pub duration_ns: u64,
}

/// The clip of `span` as an init segment and shared media segments; the
/// init's codec description comes from GStreamer's parser and muxer
/// (`h264parse`/`h265parse → mp4mux`) fed the span's first frame.
pub fn chunked(span: &Span, scratch: &std::path::Path) -> Result<Chunked, super::clip::ClipError> {
    use super::clip::ClipError;
    if span.frames.is_empty() {
        return Err(ClipError::Empty);
    }
    let pts: Vec<u64> = span.frames.iter().map(|f| f.pts_ns).collect();
    let start = pts.iter().min().copied().unwrap_or(0);
    let end = pts.iter().max().copied().unwrap_or(0) + frame_interval(&pts);
    let muxed = super::clip::fragmented_header(span, scratch)?;
    let (init, track) = finish_init(&muxed, start, end - start).map_err(|m| ClipError::Write {
        path: "clip-init.mp4".into(),
        message: m,
    })?;
    let segments = chunk_ranges(&span.frames)
        .into_iter()
        .map(|r| media_segment(&span.frames[r], track))
        .collect();
    Ok(Chunked {
        init,
        segments,
        frames: span.frames.len(),
        start_pts_ns: start,
        duration_ns: end - start,
    })
}

/// Where each media segment already stored lives (by sha256), so the next
/// event that needs it hard-links that file instead of writing a copy. In
/// memory: after a restart the first event writes its segments again.
#[derive(Default)]
pub struct SharedSegments {
    known: std::sync::Mutex<
        std::collections::HashMap<String, (std::path::PathBuf, std::time::Instant)>,
    >,
}

/// Entries older than this are forgotten (no clip reaches that far back).
const KEEP_KNOWN: std::time::Duration = std::time::Duration::from_secs(600);

impl SharedSegments {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, (std::path::PathBuf, std::time::Instant)>,
    > {
        match self.known.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Puts `bytes` (whose sha256 is `sha`) at `dest`: a hard link to the
    /// stored copy when one exists and still has these bytes' size, else a
    /// new file (then the copy others link). True when the bytes were
    /// written (not shared). Under the lock, so two packages sealed at once
    /// never both write the same segment.
    pub fn place(&self, sha: &str, bytes: &[u8], dest: &std::path::Path) -> std::io::Result<bool> {
        let now = std::time::Instant::now();
        let mut k = self.lock();
        if let Some((src, t)) = k.get_mut(sha) {
            let same = std::fs::metadata(&*src).is_ok_and(|m| m.len() == bytes.len() as u64);
            if same && std::fs::hard_link(&*src, dest).is_ok() {
                *t = now;
                return Ok(false);
            }
        }
        super::sign::write_atomic(dest, bytes)?;
        k.insert(sha.to_string(), (dest.to_path_buf(), now));
        Ok(true)
    }

    /// Renames the folder `from` to `to` (sealing it) and points the
    /// segments stored in it at their new place, under the lock so no other
    /// package looks for them in between. Forgets entries past [`KEEP_KNOWN`].
    pub fn rename_folder(
        &self,
        from: &std::path::Path,
        to: &std::path::Path,
    ) -> std::io::Result<()> {
        let now = std::time::Instant::now();
        let mut k = self.lock();
        std::fs::rename(from, to)?;
        k.retain(|_, (_, t)| now.duration_since(*t) < KEEP_KNOWN);
        for (p, _) in k.values_mut() {
            if let Ok(rest) = p.strip_prefix(from) {
                *p = to.join(rest);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn f(pts_ms: u64, key: bool, byte: u8) -> Arc<RingFrame> {
        Arc::new(RingFrame {
            data: vec![0, 0, 0, 1, 0x41, byte, byte, 0, 0, 1, 0x06, 5],
            pts_ns: pts_ms * 1_000_000,
            keyframe: key,
            wall: SystemTime::UNIX_EPOCH,
        })
    }

    #[test]
    fn chunks_end_at_keyframes_and_every_two_seconds() {
        // 25 fps, keyframe at 0 and 3 s: chunks 0–2 s, 2–3 s, 3–4 s, 4–5 s.
        let frames: Vec<_> = (0..125).map(|i| f(i * 40, i % 75 == 0, 1)).collect();
        let r = chunk_ranges(&frames);
        let starts: Vec<u64> = r
            .iter()
            .map(|r| frames[r.start].pts_ns / 1_000_000)
            .collect();
        assert_eq!(starts, vec![0, 2000, 3000, 4000]);
        assert_eq!(r.last().map(|r| r.end), Some(125));
    }

    #[test]
    fn a_chunk_never_starts_on_a_reordered_frame() {
        // I P B B P B B … in decode order (presentation 0 3 1 2 6 4 5 …),
        // 40 ms frames: the 2 s cut falls on a P-frame, never a B-frame.
        let order = [0u64, 3, 1, 2];
        let frames: Vec<_> = (0..100u64)
            .map(|i| f((i / 4 * 4 + order[(i % 4) as usize]) * 40, i == 0, 1))
            .collect();
        let r = chunk_ranges(&frames);
        assert_eq!(r.len(), 2);
        let cut = &frames[r[1].start];
        let before = frames[..r[1].start].iter().map(|f| f.pts_ns).max().unwrap();
        let after = frames[r[1].start..].iter().map(|f| f.pts_ns).min().unwrap();
        assert!(before < after, "{before} {after}");
        assert!(cut.pts_ns >= CHUNK_NS);
    }

    #[test]
    fn a_segment_depends_only_on_its_frames() {
        let frames: Vec<_> = (0..50)
            .map(|i| f(10_000 + i * 40, i == 0, i as u8 + 1))
            .collect();
        let a = media_segment(&frames[0..25], 1);
        let b = media_segment(&frames[0..25], 1);
        assert_eq!(a, b);
        assert_ne!(a, media_segment(&frames[25..50], 1));
        // Start codes become lengths; the NAL bytes are untouched.
        let mdat = &a[a.len() - 25 * 13..];
        assert_eq!(&mdat[..13], &[0, 0, 0, 3, 0x41, 1, 1, 0, 0, 0, 2, 0x06, 5]);
        assert_eq!(&a[4..8], b"moof");
    }
}
