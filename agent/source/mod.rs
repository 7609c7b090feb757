//! Camera sources: RTSP via retina (TCP interleaved, `FrameFormat::SIMPLE`),
//! with every await bounded by a timeout. Credentials are taken out of the URL
//! before anything else sees it, so they never reach a log line or an alert.

use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions,
    Transport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat};
use url::Url;

pub use crate::base::backoff::Backoff;
use crate::decode::Codec;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{url}: {what} timed out after {secs:.0} s — is the camera reachable from this box?")]
    Timeout {
        url: String,
        what: &'static str,
        secs: f64,
    },
    /// The RTSP exchange failed; `status` is the camera's response code
    /// (401, 404, …) when it answered with one.
    #[error("{url}: {message}")]
    Rtsp {
        url: String,
        message: String,
        status: Option<u16>,
    },
    #[error(
        "{url}: the camera offers no H.264/H.265 video stream (found: {found}) — set the camera's encoder to H.264 or H.265"
    )]
    NoVideo { url: String, found: String },
    #[error("{url}: no frame for {secs:.0} s (inactivity timeout)")]
    Inactive { url: String, secs: f64 },
    #[error("{url}: the stream ended")]
    Ended { url: String },
}

/// The camera's refusals an installer fixes on this side, in one line that
/// says how (retina's own text is the camera's whole response, over
/// several lines). None for other errors.
fn refusal_message(status: Option<u16>, had_creds: bool) -> Option<String> {
    Some(match status? {
        401 if had_creds => "the camera refused the user name or password (RTSP 401 Unauthorized) — give the camera's own: `username` with `password_file` (or `password_env`) in this camera's config".into(),
        401 => "the camera asks for a login (RTSP 401 Unauthorized) — set `username` and `password_file` (or `password_env`) for this camera".into(),
        403 => "the camera's user may not read this stream (RTSP 403 Forbidden) — give that user the right to view it on the camera, or use another user".into(),
        404 => "the camera has no stream at this path (RTSP 404 Not Found) — check the URL's path with `ioc-agent probe` and the camera's manual".into(),
        _ => return None,
    })
}

/// Checks an RTSP URL; the error says what is wrong and how to write it.
pub fn parse_rtsp_url(s: &str) -> Result<(Url, Option<Credentials>), String> {
    let mut url = Url::parse(s).map_err(|e| {
        format!("invalid camera URL ({e}); write it as rtsp://[user:password@]host[:port]/path")
    })?;
    match url.scheme() {
        "rtsp" => {}
        "rtsps" => {
            return Err(
                "rtsps:// (RTSP over TLS) is not supported yet; use rtsp:// on the camera network"
                    .into(),
            );
        }
        other => {
            return Err(format!(
                "camera URL must start with rtsp://, got '{other}://'"
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("camera URL has no host; write it as rtsp://host[:port]/path".into());
    }
    let creds = if url.username().is_empty() {
        None
    } else {
        let decode = |s: &str| percent_decode(s);
        Some(Credentials {
            username: decode(url.username()),
            password: decode(url.password().unwrap_or("")),
        })
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url, creds))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(s.replace('+', "%2B").as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

/// The URL with any `user:password@` removed, for logs and alerts.
pub fn redact(s: &str) -> String {
    match Url::parse(s) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => match (s.find("://"), s.rfind('@')) {
            (Some(i), Some(j)) if j > i => format!("{}{}", &s[..i + 3], &s[j + 1..]),
            _ => s.to_string(),
        },
    }
}

/// Where and how a camera is read, as plain values (the config layer builds
/// it from `[[cameras]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSettings {
    /// Main stream (recorded for clips when `detect_url` is set).
    pub url: String,
    /// Lower-resolution stream analysed instead of `url`.
    pub detect_url: Option<String>,
    pub connect_timeout: Duration,
    pub inactivity_timeout: Duration,
    /// Longest wait for the first keyframe or recovery point of a session.
    pub keyframe_timeout: Duration,
    /// How RTP is carried.
    pub transport: RtspTransport,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl SourceSettings {
    /// The stream the camera analyses.
    pub fn analysed_url(&self) -> &str {
        self.detect_url.as_deref().unwrap_or(&self.url)
    }

    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_min, self.backoff_max)
    }
}

/// How RTP is carried from the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// Interleaved in the RTSP TCP connection; when the camera answers
    /// SETUP with 461 Unsupported Transport (VLC's server does), UDP.
    #[default]
    Auto,
    /// Interleaved in the RTSP TCP connection only.
    Tcp,
    /// RTP over UDP (loss on the camera network shows as corrupted frames).
    Udp,
}

impl RtspTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            RtspTransport::Auto => "auto",
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        }
    }
}

/// What a session knows about the stream it opened.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub codec: Codec,
    /// The URL without credentials.
    pub url: String,
    pub resolution: Option<(u32, u32)>,
    /// The transport in use: `tcp` or `udp`.
    pub transport: &'static str,
}

/// A camera's stream of access units, as a camera session reads it.
pub trait Stream: Send {
    fn info(&self) -> StreamInfo;
    /// The next access unit (Annex B), or why there is none.
    fn next_frame(&mut self) -> futures::future::BoxFuture<'_, Result<EncodedFrame, SourceError>>;
}

/// Opens camera streams. The agent opens RTSP ([`RtspOpener`]); a test
/// injects its own to drive a camera task without a network.
pub trait Opener: Send + Sync {
    fn open<'a>(
        &'a self,
        url: &'a str,
        connect_timeout: Duration,
        inactivity_timeout: Duration,
        transport: RtspTransport,
    ) -> futures::future::BoxFuture<'a, Result<Box<dyn Stream>, SourceError>>;
}

/// RTSP with retina.
#[derive(Debug, Default, Clone, Copy)]
pub struct RtspOpener;

impl Opener for RtspOpener {
    fn open<'a>(
        &'a self,
        url: &'a str,
        connect_timeout: Duration,
        inactivity_timeout: Duration,
        transport: RtspTransport,
    ) -> futures::future::BoxFuture<'a, Result<Box<dyn Stream>, SourceError>> {
        Box::pin(async move {
            let s =
                RtspSource::open_with(url, connect_timeout, inactivity_timeout, transport).await?;
            Ok(Box::new(s) as Box<dyn Stream>)
        })
    }
}

impl Stream for RtspSource {
    fn info(&self) -> StreamInfo {
        StreamInfo {
            codec: self.codec,
            url: self.url.clone(),
            resolution: self.resolution,
            transport: self.transport,
        }
    }
    fn next_frame(&mut self) -> futures::future::BoxFuture<'_, Result<EncodedFrame, SourceError>> {
        Box::pin(RtspSource::next_frame(self))
    }
}

/// One encoded video frame from the camera.
pub struct EncodedFrame {
    pub data: Vec<u8>,
    /// Presentation time since the session's first frame, nanoseconds.
    pub pts_ns: u64,
    pub keyframe: bool,
}

/// Whether an Annex B access unit starts a GOP: H.264 IDR slices, or H.265
/// IRAP pictures (IDR, CRA, BLA). retina's own flag misses some H.265 IDRs.
/// The parameter sets of the stream's `extra_data` as Annex B NAL units:
/// as given when already Annex B (retina's framing here), else from an
/// `avcC` / `hvcC` record; empty when the record is malformed.
pub fn config_record_to_annex_b(codec: Codec, rec: &[u8]) -> Vec<u8> {
    if rec.starts_with(&[0, 0, 0, 1]) || rec.starts_with(&[0, 0, 1]) {
        return rec.to_vec();
    }
    let mut out = Vec::new();
    let mut nal = |r: &mut &[u8]| -> Option<()> {
        let n = u16::from_be_bytes([*r.first()?, *r.get(1)?]) as usize;
        let body = r.get(2..2 + n)?;
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(body);
        *r = &r[2 + n..];
        Some(())
    };
    let ok = (|| -> Option<()> {
        match codec {
            Codec::H264 => {
                let mut r = rec.get(5..)?;
                let sps = (*r.first()? & 0x1f) as usize;
                r = &r[1..];
                for _ in 0..sps {
                    nal(&mut r)?;
                }
                let pps = *r.first()? as usize;
                r = &r[1..];
                for _ in 0..pps {
                    nal(&mut r)?;
                }
            }
            Codec::H265 => {
                let mut r = rec.get(22..)?;
                let arrays = *r.first()? as usize;
                r = &r[1..];
                for _ in 0..arrays {
                    let count = u16::from_be_bytes([*r.get(1)?, *r.get(2)?]) as usize;
                    r = r.get(3..)?;
                    for _ in 0..count {
                        nal(&mut r)?;
                    }
                }
            }
        }
        Some(())
    })();
    if ok.is_none() {
        out.clear();
    }
    out
}

/// Whether an Annex B access unit carries a recovery point SEI (H.264
/// payload type 6 in an SEI NAL, H.265 in a prefix SEI): where a decoder can
/// start on a camera that uses intra refresh instead of IDR frames.
pub fn has_recovery_point(codec: Codec, au: &[u8]) -> bool {
    let mut i = 0;
    while i + 4 < au.len() {
        if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
            let (sei, body) = match codec {
                Codec::H264 => (au[i + 3] & 0x1f == 6, i + 4),
                Codec::H265 => ((au[i + 3] >> 1) & 0x3f == 39, i + 5),
            };
            if sei && sei_has_payload(&au[body.min(au.len())..], 6) {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

/// Whether an SEI NAL's messages (from after the NAL header) include
/// payload type `want`. Stops at the NAL's end (the next start code).
fn sei_has_payload(b: &[u8], want: u32) -> bool {
    let mut i = 0;
    let read = |i: &mut usize| -> Option<u32> {
        let mut v = 0u32;
        loop {
            let x = *b.get(*i)?;
            *i += 1;
            v = v.checked_add(x as u32)?;
            if x != 0xFF {
                return Some(v);
            }
        }
    };
    for _ in 0..16 {
        // rbsp_trailing_bits, or the next start code: no more messages.
        if b.get(i).is_none_or(|&x| x == 0x80 || x == 0) {
            return false;
        }
        let (Some(t), Some(size)) = (read(&mut i), read(&mut i)) else {
            return false;
        };
        if t == want {
            return true;
        }
        i = i.saturating_add(size as usize);
    }
    false
}

pub fn is_random_access(codec: Codec, au: &[u8]) -> bool {
    let mut vcl = 0;
    let mut rap = 0;
    let mut i = 0;
    while i + 3 < au.len() {
        if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
            let h = au[i + 3];
            match codec {
                Codec::H264 => {
                    let t = h & 0x1f;
                    if (1..=5).contains(&t) {
                        vcl += 1;
                        rap += (t == 5) as u32;
                    }
                }
                Codec::H265 => {
                    let t = (h >> 1) & 0x3f;
                    if t < 32 {
                        vcl += 1;
                        rap += (16..=23).contains(&t) as u32;
                    }
                }
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    vcl > 0 && rap == vcl
}

/// A playing RTSP session delivering video frames.
pub struct RtspSource {
    demuxed: Pin<Box<Demuxed>>,
    /// The video stream's index in the session.
    idx: usize,
    pub codec: Codec,
    pub url: String,
    pub resolution: Option<(u32, u32)>,
    /// RFC 6381 codec string from the parameters, e.g. `avc1.64001F`.
    pub rfc6381: Option<String>,
    /// Frame rate the stream's parameters declare, frames per second.
    pub declared_fps: Option<f64>,
    /// `tcp` or `udp`.
    pub transport: &'static str,
    inactivity: Duration,
}

impl RtspSource {
    /// DESCRIBE, SETUP (TCP, or UDP after a 461), PLAY, each bounded by `timeout`.
    pub async fn open(
        raw_url: &str,
        timeout: Duration,
        inactivity: Duration,
    ) -> Result<RtspSource, SourceError> {
        Self::open_with(raw_url, timeout, inactivity, RtspTransport::Auto).await
    }

    /// As [`RtspSource::open`], with the transport chosen.
    pub async fn open_with(
        raw_url: &str,
        timeout: Duration,
        inactivity: Duration,
        transport: RtspTransport,
    ) -> Result<RtspSource, SourceError> {
        match Self::open_once(
            raw_url,
            timeout,
            inactivity,
            transport == RtspTransport::Udp,
        )
        .await
        {
            Err(SourceError::Rtsp {
                status: Some(461),
                url,
                ..
            }) if transport == RtspTransport::Auto => {
                tracing::warn!(url = %url, "the camera refused RTP over TCP (461 Unsupported Transport); using UDP — set transport = \"udp\" for this camera to skip the TCP attempt");
                Self::open_once(raw_url, timeout, inactivity, true).await
            }
            r => r,
        }
    }

    async fn open_once(
        raw_url: &str,
        timeout: Duration,
        inactivity: Duration,
        udp: bool,
    ) -> Result<RtspSource, SourceError> {
        let shown = redact(raw_url);
        let (url, creds) = parse_rtsp_url(raw_url).map_err(|message| SourceError::Rtsp {
            url: shown.clone(),
            message,
            status: None,
        })?;
        let secs = timeout.as_secs_f64();
        let had_creds = creds.is_some();
        let rtsp = |e: retina::Error| SourceError::Rtsp {
            url: shown.clone(),
            status: e.status_code(),
            message: refusal_message(e.status_code(), had_creds).unwrap_or_else(|| e.to_string()),
        };
        let opts = SessionOptions::default()
            .creds(creds)
            .user_agent(format!("ioc-agent/{}", env!("CARGO_PKG_VERSION")));
        let mut session = tokio::time::timeout(timeout, Session::describe(url, opts))
            .await
            .map_err(|_| SourceError::Timeout {
                url: shown.clone(),
                what: "DESCRIBE",
                secs,
            })?
            .map_err(rtsp)?;
        let found: Vec<String> = session
            .streams()
            .iter()
            .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
            .collect();
        let (idx, codec) = session
            .streams()
            .iter()
            .enumerate()
            .find_map(|(i, s)| {
                (s.media() == "video")
                    .then(|| Codec::from_encoding(s.encoding_name()).map(|c| (i, c)))
                    .flatten()
            })
            .ok_or_else(|| SourceError::NoVideo {
                url: shown.clone(),
                found: if found.is_empty() {
                    "nothing".into()
                } else {
                    found.join(", ")
                },
            })?;
        let video = |f: &dyn Fn(&retina::codec::VideoParameters) -> Option<_>| {
            session.streams()[idx].parameters().and_then(|p| match p {
                retina::codec::ParametersRef::Video(v) => f(v),
                _ => None,
            })
        };
        let resolution = video(&|v| Some(v.pixel_dimensions()));
        let rfc6381: Option<String> = session.streams()[idx].parameters().and_then(|p| match p {
            retina::codec::ParametersRef::Video(v) => Some(v.rfc6381_codec().to_string()),
            _ => None,
        });
        let declared_fps = session.streams()[idx].parameters().and_then(|p| match p {
            // retina gives the frame duration as (numerator, denominator) seconds.
            retina::codec::ParametersRef::Video(v) => v
                .frame_rate()
                .filter(|(n, _)| *n > 0)
                .map(|(n, d)| d as f64 / n as f64),
            _ => None,
        });
        tokio::time::timeout(
            timeout,
            session.setup(
                idx,
                SetupOptions::default()
                    .transport(if udp {
                        Transport::Udp(UdpTransportOptions::default())
                    } else {
                        Transport::Tcp(TcpTransportOptions::default())
                    })
                    .frame_format(FrameFormat::SIMPLE),
            ),
        )
        .await
        .map_err(|_| SourceError::Timeout {
            url: shown.clone(),
            what: "SETUP",
            secs,
        })?
        .map_err(rtsp)?;
        let playing = tokio::time::timeout(timeout, session.play(PlayOptions::default()))
            .await
            .map_err(|_| SourceError::Timeout {
                url: shown.clone(),
                what: "PLAY",
                secs,
            })?
            .map_err(rtsp)?;
        let demuxed = playing.demuxed().map_err(rtsp)?;
        Ok(RtspSource {
            demuxed: Box::pin(demuxed),
            idx,
            codec,
            url: shown,
            resolution,
            rfc6381,
            declared_fps,
            transport: if udp { "udp" } else { "tcp" },
            inactivity,
        })
    }

    /// The stream's current parameter sets, Annex B.
    fn parameter_sets(&self) -> Vec<u8> {
        match self
            .demuxed
            .streams()
            .get(self.idx)
            .and_then(|s| s.parameters())
        {
            Some(retina::codec::ParametersRef::Video(v)) => {
                config_record_to_annex_b(self.codec, v.extra_data())
            }
            _ => Vec::new(),
        }
    }

    /// The next video frame, or an error after the inactivity timeout. The
    /// deadline is for a video frame: RTCP or other items do not extend it
    /// (a camera whose video stopped while its RTCP goes on is not live).
    pub async fn next_frame(&mut self) -> Result<EncodedFrame, SourceError> {
        let deadline = tokio::time::Instant::now() + self.inactivity;
        loop {
            let item = tokio::time::timeout_at(deadline, self.demuxed.next())
                .await
                .map_err(|_| SourceError::Inactive {
                    url: self.url.clone(),
                    secs: self.inactivity.as_secs_f64(),
                })?;
            match item {
                None => {
                    return Err(SourceError::Ended {
                        url: self.url.clone(),
                    });
                }
                Some(Err(e)) => {
                    return Err(SourceError::Rtsp {
                        url: self.url.clone(),
                        status: e.status_code(),
                        message: e.to_string(),
                    });
                }
                Some(Ok(CodecItem::VideoFrame(f))) => {
                    let secs = f.timestamp().elapsed_secs().max(0.0);
                    let keyframe =
                        f.is_random_access_point() || is_random_access(self.codec, f.data());
                    let mut data = f.into_data();
                    // retina puts the parameter sets before keyframes only; a
                    // recovery point (intra refresh) needs them as well, to
                    // start a decoder or a clip there.
                    if !keyframe && has_recovery_point(self.codec, &data) {
                        let mut ps = self.parameter_sets();
                        if !ps.is_empty() {
                            ps.append(&mut data);
                            data = ps;
                        }
                    }
                    return Ok(EncodedFrame {
                        pts_ns: (secs * 1e9) as u64,
                        keyframe,
                        data,
                    });
                }
                Some(Ok(_)) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_split_from_the_url() {
        let (u, c) = parse_rtsp_url("rtsp://admin:p%40ss@10.0.0.5:554/Streaming/101").unwrap();
        assert_eq!(u.as_str(), "rtsp://10.0.0.5:554/Streaming/101");
        let c = c.unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("admin", "p@ss")
        );
        assert_eq!(redact("rtsp://admin:secret@cam/1"), "rtsp://cam/1");
        assert!(!redact("rtsp://admin:secret@[bad/1").contains("secret"));
    }

    #[test]
    fn bad_urls_say_how_to_fix() {
        assert!(
            parse_rtsp_url("http://cam/1")
                .unwrap_err()
                .contains("rtsp://")
        );
        assert!(parse_rtsp_url("cam/1").unwrap_err().contains("rtsp://"));
    }

    #[test]
    fn random_access_units_are_found_in_annex_b() {
        // H.264: SPS, PPS, IDR slice / a P slice.
        let idr = [0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65, 3];
        assert!(is_random_access(Codec::H264, &idr));
        assert!(!is_random_access(Codec::H264, &[0, 0, 1, 0x41, 9]));
        // H.265: IDR_W_RADL (19) / CRA (21) / TRAIL_R (1).
        assert!(is_random_access(Codec::H265, &[0, 0, 1, 19 << 1, 1, 7]));
        assert!(is_random_access(Codec::H265, &[0, 0, 1, 21 << 1, 1, 7]));
        assert!(!is_random_access(Codec::H265, &[0, 0, 1, 1 << 1, 1, 7]));
        assert!(!is_random_access(Codec::H265, &[0, 0, 1, 32 << 1, 1])); // VPS only
    }

    #[test]
    fn config_records_give_annex_b_parameter_sets() {
        // avcC: version, profile, compat, level, length size, 1 SPS, 1 PPS.
        let avcc = [
            1, 0x42, 0xe0, 0x1f, 0xff, 0xe1, 0, 3, 0x67, 1, 2, 1, 0, 2, 0x68, 9,
        ];
        assert_eq!(
            config_record_to_annex_b(Codec::H264, &avcc),
            vec![0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 9]
        );
        // Already Annex B: as is.
        let annex_b = [0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2];
        assert_eq!(
            config_record_to_annex_b(Codec::H264, &annex_b),
            annex_b.to_vec()
        );
        // Truncated: nothing rather than a half set.
        assert!(config_record_to_annex_b(Codec::H264, &avcc[..10]).is_empty());
        let mut hvcc = vec![0u8; 22];
        hvcc.extend_from_slice(&[1, 0x20, 0, 1, 0, 2, 0x40, 1]);
        assert_eq!(
            config_record_to_annex_b(Codec::H265, &hvcc),
            vec![0, 0, 0, 1, 0x40, 1]
        );
        assert!(config_record_to_annex_b(Codec::H265, &[1, 2]).is_empty());
    }

    #[test]
    fn recovery_points_are_found_in_sei() {
        // H.264: user data (5) then recovery point (6) in one SEI NAL, a P slice.
        let au = [
            0, 0, 0, 1, 0x06, 5, 2, 0xAA, 0xBB, 6, 1, 0x84, 0x80, 0, 0, 1, 0x41, 9,
        ];
        assert!(has_recovery_point(Codec::H264, &au));
        assert!(!has_recovery_point(
            Codec::H264,
            &[0, 0, 1, 0x06, 5, 1, 0xAA, 0x80]
        ));
        assert!(!has_recovery_point(Codec::H264, &[0, 0, 1, 0x41, 6, 1]));
        // H.265 prefix SEI (39), two header bytes.
        assert!(has_recovery_point(
            Codec::H265,
            &[0, 0, 1, 39 << 1, 1, 6, 1, 0x84, 0x80]
        ));
        // Truncated or hostile sizes never panic.
        assert!(!has_recovery_point(
            Codec::H264,
            &[0, 0, 1, 0x06, 0xFF, 0xFF]
        ));
        assert!(!has_recovery_point(
            Codec::H264,
            &[0, 0, 1, 0x06, 5, 0xFF, 0xFF, 0xFF]
        ));
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let d: Vec<f64> = (0..6).map(|_| b.next_delay().as_secs_f64()).collect();
        assert!((0.75..1.25).contains(&d[0]));
        assert!((1.5..2.5).contains(&d[1]));
        assert!((6.0..10.0).contains(&d[5]));
        b.reset();
        assert!(b.next_delay().as_secs_f64() < 1.25);
    }
}
