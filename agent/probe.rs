//! `ioc-agent probe URL`: connects like the agent would and reports what the
//! camera sends (codec, profile, resolution, frame rate, GOP, bitrate,
//! B-frames, quirks) and which decoder this box would use; writes a snapshot.
//! Every way it can fail a user can cause gets its own plain message.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::decode::{self, Codec, DecodePipeline, FrameCounters};
use crate::source::{RtspSource, SourceError, redact};

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
    decode::init().map_err(|e| ProbeError::Other {
        url: shown.clone(),
        detail: e.to_string(),
    })?;
    let mut src = RtspSource::open(url, timeout, timeout)
        .await
        .map_err(|e| classify(url, e))?;
    let mut quirks = Vec::new();
    let decoder = decode::choose_decoder(src.codec, None, &[]).ok();
    let start = Instant::now();
    let (mut frames, mut keyframes, mut bytes) = (0u64, 0u64, 0u64);
    let mut last_key: Option<u64> = None;
    let mut gop: Option<u64> = None;
    let mut pts: Vec<u64> = Vec::new();
    let mut b_frames = false;
    let mut max_pts = 0u64;
    let mut snap_pipe: Option<DecodePipeline> = None;
    let snap: Arc<std::sync::Mutex<Option<crate::decode::Frame>>> = Default::default();
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
        frames += 1;
        bytes += f.data.len() as u64;
        if f.pts_ns < max_pts {
            b_frames = true;
        }
        max_pts = max_pts.max(f.pts_ns);
        pts.push(f.pts_ns);
        if f.keyframe {
            keyframes += 1;
            if let Some(k) = last_key {
                gop = Some(frames - k);
            }
            last_key = Some(frames);
        }
        // Decode from the first keyframe until one picture comes out.
        if snapshot.is_some()
            && let Some(dec) = &decoder
            && snap.lock().map(|s| s.is_none()).unwrap_or(false)
            && (snap_pipe.is_some() || f.keyframe)
        {
            if snap_pipe.is_none() {
                let slot = snap.clone();
                snap_pipe = DecodePipeline::start(
                    src.codec,
                    dec,
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
            if let Some(p) = &snap_pipe {
                let _ = p.push(&f.data, f.pts_ns, std::time::SystemTime::now());
            }
        }
    }
    drop(snap_pipe);
    let secs = start.elapsed().as_secs_f64();
    if frames == 0 {
        return Err(ProbeError::NoFrames { url: shown, secs });
    }
    if keyframes == 0 {
        return Err(ProbeError::NoKeyframe {
            url: shown,
            frames,
            secs,
        });
    }
    pts.sort_unstable();
    let mut d: Vec<u64> = pts
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0)
        .collect();
    d.sort_unstable();
    let interval = d.get(d.len() / 2).copied();
    let fps = interval.map(|i| 1e9 / i as f64);
    if let (Some(lo), Some(hi)) = (d.first(), d.last())
        && interval.is_some_and(|m| (*hi as f64) > 1.5 * m as f64 || (*lo as f64) < 0.5 * m as f64)
    {
        quirks.push("irregular frame timing (timestamps jitter by more than 50%)".into());
    }
    let declared_fps = src.declared_fps.map(|f| (f * 100.0).round() / 100.0);
    if declared_fps.is_none() {
        quirks.push("the stream's parameters declare no frame rate (measured instead)".into());
    }
    if gop.is_none() {
        quirks.push(format!(
            "only one keyframe in {secs:.0} s: GOP longer than the probe; clips and reconnects wait for keyframes"
        ));
    }
    if let (Some(g), Some(f)) = (gop, fps)
        && g as f64 / f > 4.0
    {
        quirks.push(format!(
            "long GOP ({:.1} s): evidence clips may start up to that long before the pre-roll; 1–2 s is better",
            g as f64 / f
        ));
    }
    if b_frames {
        quirks.push("B-frames (frames arrive out of presentation order)".into());
    }
    if src.codec == Codec::H265 && decoder.as_deref() == Some("avdec_h265") {
        quirks.push("H.265 decoded in software on this box: more CPU per camera than H.264".into());
    }
    let mut snapshot_path = None;
    if let Some(p) = snapshot {
        let frame = snap.lock().ok().and_then(|mut s| s.take());
        match frame {
            Some(fr) => match crate::evidence::thumbnail(&fr, fr.width.max(fr.height), None, &[]) {
                Ok(j) => {
                    if std::fs::write(p, &j.bytes).is_ok() {
                        snapshot_path = Some(p.display().to_string());
                    }
                }
                Err(e) => quirks.push(format!("snapshot not written: {e}")),
            },
            None => quirks.push("no picture decoded for the snapshot".into()),
        }
    }
    Ok(ProbeReport {
        url: src.url.clone(),
        codec: src.codec.as_str().into(),
        profile: src.rfc6381.as_deref().and_then(profile_name),
        rfc6381: src.rfc6381.clone(),
        width: src.resolution.map(|r| r.0),
        height: src.resolution.map(|r| r.1),
        fps: fps.map(|f| (f * 100.0).round() / 100.0),
        declared_fps,
        gop_frames: gop,
        gop_secs: gop
            .zip(interval)
            .map(|(g, i)| (g as f64 * i as f64 / 1e7).round() / 100.0),
        bitrate_kbps: (bytes as f64 * 8.0 / secs.max(0.001) / 1000.0).round(),
        b_frames,
        frames,
        keyframes,
        seconds: (secs * 10.0).round() / 10.0,
        decoder,
        quirks,
        snapshot: snapshot_path,
    })
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
