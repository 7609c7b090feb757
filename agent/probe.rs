//! `ioc-agent probe URL`: connects like the agent would and reports what the
//! camera sends (codec, profile, resolution, frame rate, GOP, bitrate,
//! B-frames, quirks) and which decoder this box would use; writes a snapshot.
//! Every way it can fail a user can cause gets its own plain message.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::decode::{self, Codec, DecodePipeline, Frame, FrameCounters};
use crate::source::{EncodedFrame, RtspSource, SourceError, redact};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "{url}: cannot reach the camera ({detail}) — check the address and port (RTSP is usually 554) and that this box can reach the camera's network"
    )]
    Unreachable { url: String, detail: String },
    #[error(
        "{url}: the camera refused the login (401 Unauthorized) — check the user name and password in the URL (rtsp://user:password@host/path)"
    )]
    Login { url: String },
    #[error(
        "{url}: the camera has no stream at this path (404 Not Found) — check the path, e.g. Hikvision /Streaming/Channels/101, Dahua /cam/realmonitor?channel=1&subtype=0"
    )]
    WrongPath { url: String },
    #[error(
        "{url}: the camera sends {found}, which the agent does not decode — set the camera's video encoding to H.264 or H.265"
    )]
    Unsupported { url: String, found: String },
    #[error(
        "{url}: {frames} frames in {secs:.0} s but no keyframe — set the camera's I-frame interval (GOP) to at most twice its frame rate"
    )]
    NoKeyframe { url: String, frames: u64, secs: f64 },
    #[error(
        "{url}: no video arrived in {secs:.0} s — the camera accepted the session but sends nothing; check that the stream is enabled"
    )]
    NoFrames { url: String, secs: f64 },
    #[error("{url}: {detail}")]
    Other { url: String, detail: String },
}

/// What the probe found.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub url: String,
    pub codec: String,
    pub rfc6381: Option<String>,
    pub profile: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<f64>,
    pub declared_fps: Option<f64>,
    /// Frames between keyframes (the last complete GOP seen).
    pub gop_frames: Option<u64>,
    pub gop_secs: Option<f64>,
    pub bitrate_kbps: f64,
    pub b_frames: bool,
    pub frames: u64,
    pub keyframes: u64,
    pub seconds: f64,
    pub decoder: Option<String>,
    pub quirks: Vec<String>,
    pub snapshot: Option<String>,
}

/// The plain message for a failed connection (used by `doctor` too).
pub fn classify_error(url: &str, e: SourceError) -> String {
    classify(url, e).to_string()
}

fn classify(url: &str, e: SourceError) -> ProbeError {
    let shown = redact(url);
    match e {
        SourceError::NoVideo { found, .. } => ProbeError::Unsupported {
            url: shown,
            found: if found.to_ascii_lowercase().contains("jpeg") {
                format!("Motion-JPEG ({found})")
            } else {
                found
            },
        },
        SourceError::Timeout { what, secs, .. } => ProbeError::Unreachable {
            url: shown,
            detail: format!("{what} timed out after {secs:.0} s"),
        },
        other => {
            // The status code the camera answered with, kept by the source
            // error (reading digits out of the text once took a port
            // containing 401 for a refused login).
            let status = match &other {
                SourceError::Rtsp { status, .. } => *status,
                _ => None,
            };
            let text = other.to_string();
            let low = text.to_ascii_lowercase();
            if status == Some(401) || low.contains("unauthorized") {
                ProbeError::Login { url: shown }
            } else if status == Some(404) || low.contains("not found") {
                ProbeError::WrongPath { url: shown }
            } else if low.contains("refused")
                || low.contains("unreachable")
                || low.contains("resolve")
                || low.contains("no route")
                || low.contains("dns")
            {
                ProbeError::Unreachable {
                    url: shown,
                    detail: text
                        .split_once(": ")
                        .map(|x| x.1.to_string())
                        .unwrap_or(text),
                }
            } else {
                ProbeError::Other {
                    url: shown,
                    detail: text
                        .split_once(": ")
                        .map(|x| x.1.to_string())
                        .unwrap_or(text),
                }
            }
        }
    }
}

/// H.264 profile from an RFC 6381 string (`avc1.PPCCLL`), H.265 from `hvc1.P…`.
pub fn profile_name(rfc6381: &str) -> Option<String> {
    let (kind, rest) = rfc6381.split_once('.')?;
    match kind {
        "avc1" | "avc3" => {
            let idc = u8::from_str_radix(rest.get(0..2)?, 16).ok()?;
            let level = u8::from_str_radix(rest.get(4..6)?, 16).ok()?;
            let name = match idc {
                66 => "Baseline",
                77 => "Main",
                88 => "Extended",
                100 => "High",
                110 => "High 10",
                122 => "High 4:2:2",
                244 => "High 4:4:4",
                _ => "other",
            };
            Some(format!("{name} (level {}.{})", level / 10, level % 10))
        }
        "hvc1" | "hev1" => {
            let p = rest
                .split('.')
                .next()?
                .trim_start_matches(|c: char| c.is_ascii_alphabetic());
            Some(
                match p {
                    "1" => "Main",
                    "2" => "Main 10",
                    "3" => "Main Still Picture",
                    _ => "other",
                }
                .to_string(),
            )
        }
        _ => None,
    }
}

/// Connects, reads for `seconds`, decodes one keyframe into `snapshot`.
pub async fn probe(
    url: &str,
    seconds: f64,
    timeout: Duration,
    snapshot: Option<&Path>,
) -> Result<ProbeReport, ProbeError> {
    let shown = redact(url);
    let mut src = connect(url, timeout).await?;
    let decoder = decode::choose_decoder(src.codec, None, &[]).ok();
    let mut snap = Snapshot::default();
    let start = Instant::now();
    let mut seen = measure(
        &mut src,
        url,
        start,
        seconds,
        snapshot.and(decoder.as_deref()),
        &mut snap,
    )
    .await?;
    snap.stop();
    let secs = start.elapsed().as_secs_f64();
    if seen.frames == 0 {
        return Err(ProbeError::NoFrames { url: shown, secs });
    }
    if seen.keyframes == 0 {
        return Err(ProbeError::NoKeyframe {
            url: shown,
            frames: seen.frames,
            secs,
        });
    }
    let timing = Timing::of(&mut seen.pts);
    let declared_fps = src.declared_fps.map(|f| (f * 100.0).round() / 100.0);
    let mut quirks = stream_quirks(&src, decoder.as_deref(), &seen, &timing, declared_fps, secs);
    let snapshot_path = snapshot.and_then(|p| snap.write(p, &mut quirks));
    Ok(ProbeReport {
        url: src.url.clone(),
        codec: src.codec.as_str().into(),
        profile: src.rfc6381.as_deref().and_then(profile_name),
        rfc6381: src.rfc6381.clone(),
        width: src.resolution.map(|r| r.0),
        height: src.resolution.map(|r| r.1),
        fps: timing.fps.map(|f| (f * 100.0).round() / 100.0),
        declared_fps,
        gop_frames: seen.gop,
        gop_secs: seen
            .gop
            .zip(timing.interval)
            .map(|(g, i)| (g as f64 * i as f64 / 1e7).round() / 100.0),
        bitrate_kbps: (seen.bytes as f64 * 8.0 / secs.max(0.001) / 1000.0).round(),
        b_frames: seen.b_frames,
        frames: seen.frames,
        keyframes: seen.keyframes,
        seconds: (secs * 10.0).round() / 10.0,
        decoder,
        quirks,
        snapshot: snapshot_path,
    })
}

/// Readies the decoders and opens the RTSP session like the agent does.
async fn connect(url: &str, timeout: Duration) -> Result<RtspSource, ProbeError> {
    decode::init().map_err(|e| ProbeError::Other {
        url: redact(url),
        detail: e.to_string(),
    })?;
    RtspSource::open(url, timeout, timeout)
        .await
        .map_err(|e| classify(url, e))
}

/// What the probe counted of the encoded stream.
#[derive(Default)]
struct Seen {
    frames: u64,
    keyframes: u64,
    bytes: u64,
    /// Frame number of the last keyframe.
    last_key: Option<u64>,
    /// Frames between the last two keyframes.
    gop: Option<u64>,
    pts: Vec<u64>,
    b_frames: bool,
    max_pts: u64,
}

impl Seen {
    fn count(&mut self, f: &EncodedFrame) {
        self.frames += 1;
        self.bytes += f.data.len() as u64;
        if f.pts_ns < self.max_pts {
            self.b_frames = true;
        }
        self.max_pts = self.max_pts.max(f.pts_ns);
        self.pts.push(f.pts_ns);
        if f.keyframe {
            self.keyframes += 1;
            if let Some(k) = self.last_key {
                self.gop = Some(self.frames - k);
            }
            self.last_key = Some(self.frames);
        }
    }
}

/// Reads frames until `seconds` (at least 1 s) after `start`, or until the
/// camera goes quiet, counting them and, with a `snapshot_decoder`, feeding
/// `snap`.
async fn measure(
    src: &mut RtspSource,
    url: &str,
    start: Instant,
    seconds: f64,
    snapshot_decoder: Option<&str>,
    snap: &mut Snapshot,
) -> Result<Seen, ProbeError> {
    let mut seen = Seen::default();
    let deadline = Duration::from_secs_f64(seconds.max(1.0));
    while start.elapsed() < deadline {
        let left = deadline
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(50));
        let f = match tokio::time::timeout(left, src.next_frame()).await {
            Err(_) => break,
            Ok(Err(SourceError::Inactive { .. })) => break,
            Ok(Err(e)) => return Err(classify(url, e)),
            Ok(Ok(f)) => f,
        };
        seen.count(&f);
        if let Some(dec) = snapshot_decoder {
            snap.feed(src.codec, dec, &f);
        }
    }
    Ok(seen)
}

/// Decodes from the first keyframe until one picture comes out.
#[derive(Default)]
struct Snapshot {
    pipe: Option<DecodePipeline>,
    picture: Arc<Mutex<Option<Frame>>>,
}

impl Snapshot {
    fn feed(&mut self, codec: Codec, decoder: &str, f: &EncodedFrame) {
        if !(self.picture.lock().map(|s| s.is_none()).unwrap_or(false)
            && (self.pipe.is_some() || f.keyframe))
        {
            return;
        }
        if self.pipe.is_none() {
            let slot = self.picture.clone();
            self.pipe = DecodePipeline::start(
                codec,
                decoder,
                1000.0,
                0,
                Arc::new(FrameCounters::default()),
                move |fr| {
                    if let Ok(mut s) = slot.lock()
                        && s.is_none()
                    {
                        *s = Some(fr);
                    }
                },
            )
            .ok();
        }
        if let Some(p) = &self.pipe {
            let _ = p.push(&f.data, f.pts_ns, std::time::SystemTime::now());
        }
    }

    /// Stops the decoder.
    fn stop(&mut self) {
        self.pipe = None;
    }

    /// Writes the picture as a JPEG to `path`; its path when written, and a
    /// quirk when there is nothing to write or it could not be encoded.
    fn write(&self, path: &Path, quirks: &mut Vec<String>) -> Option<String> {
        let frame = self.picture.lock().ok().and_then(|mut s| s.take());
        let Some(fr) = frame else {
            quirks.push("no picture decoded for the snapshot".into());
            return None;
        };
        match crate::evidence::thumbnail(&fr, fr.width.max(fr.height), None, &[]) {
            Ok(j) => std::fs::write(path, &j.bytes)
                .is_ok()
                .then(|| path.display().to_string()),
            Err(e) => {
                quirks.push(format!("snapshot not written: {e}"));
                None
            }
        }
    }
}

/// Frame timing measured from the presentation times.
struct Timing {
    /// Median interval between frames, nanoseconds.
    interval: Option<u64>,
    fps: Option<f64>,
    /// Some interval over 1.5× or under 0.5× the median.
    irregular: bool,
}

impl Timing {
    fn of(pts: &mut [u64]) -> Timing {
        pts.sort_unstable();
        let mut d: Vec<u64> = pts
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|d| *d > 0)
            .collect();
        d.sort_unstable();
        let interval = d.get(d.len() / 2).copied();
        let irregular = matches!(
            (d.first(), d.last(), interval),
            (Some(lo), Some(hi), Some(m)) if (*hi as f64) > 1.5 * m as f64 || (*lo as f64) < 0.5 * m as f64
        );
        Timing {
            interval,
            fps: interval.map(|i| 1e9 / i as f64),
            irregular,
        }
    }
}

/// The stream's quirks worth a note, in the report's order.
fn stream_quirks(
    src: &RtspSource,
    decoder: Option<&str>,
    seen: &Seen,
    timing: &Timing,
    declared_fps: Option<f64>,
    secs: f64,
) -> Vec<String> {
    let mut quirks = Vec::new();
    if timing.irregular {
        quirks.push("irregular frame timing (timestamps jitter by more than 50%)".into());
    }
    if declared_fps.is_none() {
        quirks.push("the stream's parameters declare no frame rate (measured instead)".into());
    }
    if seen.gop.is_none() {
        quirks.push(format!(
            "only one keyframe in {secs:.0} s: GOP longer than the probe; clips and reconnects wait for keyframes"
        ));
    }
    if let (Some(g), Some(f)) = (seen.gop, timing.fps)
        && g as f64 / f > 4.0
    {
        quirks.push(format!(
            "long GOP ({:.1} s): evidence clips may start up to that long before the pre-roll; 1–2 s is better",
            g as f64 / f
        ));
    }
    if seen.b_frames {
        quirks.push("B-frames (frames arrive out of presentation order)".into());
    }
    if src.codec == Codec::H265 && decoder == Some("avdec_h265") {
        quirks.push("H.265 decoded in software on this box: more CPU per camera than H.264".into());
    }
    quirks
}

impl std::fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
        writeln!(f, "camera      {}", self.url)?;
        writeln!(
            f,
            "codec       {} {} {}",
            self.codec,
            opt(self.profile.clone()),
            self.rfc6381
                .as_deref()
                .map(|s| format!("({s})"))
                .unwrap_or_default()
        )?;
        writeln!(
            f,
            "resolution  {}",
            match (self.width, self.height) {
                (Some(w), Some(h)) => format!("{w}x{h}"),
                _ => "unknown".into(),
            }
        )?;
        writeln!(
            f,
            "frame rate  {} fps measured{}",
            opt(self.fps.map(|x| format!("{x:.2}"))),
            self.declared_fps
                .map(|d| format!(", {d:.2} declared"))
                .unwrap_or_default()
        )?;
        writeln!(
            f,
            "GOP         {}",
            match (self.gop_frames, self.gop_secs) {
                (Some(g), Some(s)) => format!("{g} frames ({s:.2} s)"),
                _ => format!(
                    "longer than the probe ({} keyframe(s) seen)",
                    self.keyframes
                ),
            }
        )?;
        writeln!(f, "bitrate     {:.0} kbit/s", self.bitrate_kbps)?;
        writeln!(
            f,
            "B-frames    {}",
            if self.b_frames { "yes" } else { "no" }
        )?;
        writeln!(
            f,
            "read        {} frames in {:.1} s",
            self.frames, self.seconds
        )?;
        writeln!(f, "decoder     {}", opt(self.decoder.clone()))?;
        if let Some(s) = &self.snapshot {
            writeln!(f, "snapshot    {s}")?;
        }
        for q in &self.quirks {
            writeln!(f, "note        {q}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_comes_from_the_response_not_the_port() {
        // A port containing 401 once made a wrong path read as a refused login.
        let rtsp = |status, message: &str| SourceError::Rtsp {
            url: "rtsp://127.0.0.1:37401/x".into(),
            message: message.into(),
            status,
        };
        let url = "rtsp://127.0.0.1:37401/x";
        assert!(matches!(
            classify(url, rtsp(Some(404), "404 response to DESCRIBE CSeq=1")),
            ProbeError::WrongPath { .. }
        ));
        assert!(matches!(
            classify(url, rtsp(Some(401), "401 response to DESCRIBE CSeq=2")),
            ProbeError::Login { .. }
        ));
        assert!(matches!(
            classify(url, rtsp(None, "connection refused")),
            ProbeError::Unreachable { .. }
        ));
    }

    #[test]
    fn profiles_are_named() {
        assert_eq!(
            profile_name("avc1.64001F").as_deref(),
            Some("High (level 3.1)")
        );
        assert_eq!(
            profile_name("avc1.4D401E").as_deref(),
            Some("Main (level 3.0)")
        );
        assert_eq!(profile_name("hvc1.1.6.L93.B0").as_deref(), Some("Main"));
        assert_eq!(profile_name("mp4a.40.2"), None);
    }
}
