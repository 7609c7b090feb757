//! A camera that misbehaves on purpose: an RTSP server written here (TCP
//! interleaved, H.264, one track) that streams given access units as RTP in
//! real time, with the faults a real camera shows: joined mid-stream with no
//! IDR to come (intra refresh), RTP timestamps that never advance, SEI
//! stripped, or only RTCP and no video at all; one that refuses RTP over
//! TCP; and one that asks for RTSP Digest authentication.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the camera sends.
#[derive(Clone, Default)]
pub struct FakeCamera {
    /// Access units (Annex B), in decode order.
    pub aus: Vec<Vec<u8>>,
    /// Index of the first access unit sent (a join mid-stream).
    pub start: usize,
    /// Where the stream goes on after the last access unit (skip the
    /// leading IDR to keep a camera that never sends a second one).
    pub loop_from: usize,
    /// Every frame with the same RTP timestamp.
    pub freeze_timestamps: bool,
    /// Leave out SEI NAL units (no recovery points).
    pub strip_sei: bool,
    /// Send RTCP sender reports only, never a video packet.
    pub rtcp_only: bool,
    /// Answer a SETUP for RTP over TCP with 461 Unsupported Transport, as
    /// VLC's server does; RTP over UDP works.
    pub refuse_tcp: bool,
    /// Cut each session's connection after this long (a camera that drops
    /// off the network now and then); the next session goes on where the
    /// stream was.
    pub drop_after: Option<Duration>,
    /// Require RTSP Digest authentication (RFC 2617: MD5, `qop=auth`, realm
    /// [`DIGEST_REALM`]) on every request but OPTIONS, with this user and
    /// password. The test may change them while the camera serves (a
    /// password changed on the camera): each request is checked against the
    /// values of the moment.
    pub digest: Option<Arc<Mutex<(String, String)>>>,
    pub fps: u32,
}

/// The realm a Digest camera names in its challenge.
pub const DIGEST_REALM: &str = "IP Camera(fake)";

/// Counters of a running fake camera.
#[derive(Default)]
pub struct FakeCameraStats {
    pub sessions: AtomicUsize,
    pub frames: AtomicUsize,
    pub rtcp: AtomicUsize,
    /// Where the stream is (access unit index), across sessions.
    pub position: AtomicUsize,
    /// SETUPs refused with 461, and sessions played over UDP.
    pub refused_tcp: AtomicUsize,
    pub udp_sessions: AtomicUsize,
    /// Requests refused with 401 (no or wrong credentials).
    pub unauthorized: AtomicUsize,
    /// Requests whose Digest credentials were right.
    pub authorized: AtomicUsize,
}

/// Where a session's RTP goes.
enum Out {
    Tcp(TcpStream),
    Udp {
        rtp: std::net::UdpSocket,
        rtcp: std::net::UdpSocket,
        client_port: u16,
    },
}

impl Out {
    fn rtp(&mut self, p: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Tcp(w) => w.write_all(&interleaved(0, p)),
            Out::Udp {
                rtp, client_port, ..
            } => rtp.send_to(p, ("127.0.0.1", *client_port)).map(|_| ()),
        }
    }
    fn rtcp(&mut self, p: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Tcp(w) => w.write_all(&interleaved(1, p)),
            Out::Udp {
                rtcp, client_port, ..
            } => rtcp.send_to(p, ("127.0.0.1", *client_port + 1)).map(|_| ()),
        }
    }
    fn cut(&self) {
        if let Out::Tcp(w) = self {
            let _ = w.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// One RTSP request: its line and headers (none of ours has a body).
pub struct Request {
    pub method: String,
    pub uri: String,
    pub cseq: String,
    pub transport: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one RTSP request.
pub fn rtsp_request(rd: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut first = String::new();
    if rd.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut words = first.split_whitespace();
    let method = words.next()?.to_string();
    let uri = words.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        rd.read_line(&mut l).ok()?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let cseq = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("CSeq"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "0".into());
    let transport = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Transport"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    Some(Request {
        method,
        uri,
        cseq,
        transport,
        headers,
    })
}

fn md5_hex(parts: &[&str]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(parts.join(":").as_bytes()))
}

/// The parameters of a Digest `Authorization` header (`k="v", k=v, ...`).
fn digest_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            value = r[..end].to_string();
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        out.push((key, value));
    }
    out
}

/// Whether `auth` (an `Authorization` header) answers `nonce` for `method`
/// with `user` and `password` (RFC 2617 §3.2.2, MD5, with or without qop).
pub fn digest_ok(auth: &str, method: &str, nonce: &str, user: &str, password: &str) -> bool {
    let Some(rest) = auth.strip_prefix("Digest ") else {
        return false;
    };
    let p = digest_params(rest);
    let get = |k: &str| {
        p.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let (Some(u), Some(realm), Some(n), Some(uri), Some(resp)) = (
        get("username"),
        get("realm"),
        get("nonce"),
        get("uri"),
        get("response"),
    ) else {
        return false;
    };
    if u != user || realm != DIGEST_REALM || n != nonce {
        return false;
    }
    let ha1 = md5_hex(&[user, DIGEST_REALM, password]);
    let ha2 = md5_hex(&[method, uri]);
    let want = match (get("qop"), get("nc"), get("cnonce")) {
        (Some(qop), Some(nc), Some(cnonce)) => md5_hex(&[&ha1, nonce, nc, cnonce, qop, &ha2]),
        _ => md5_hex(&[&ha1, nonce, &ha2]),
    };
    resp.eq_ignore_ascii_case(&want)
}

/// NAL units of an Annex B buffer, without start codes.
pub fn nal_units(au: &[u8]) -> Vec<&[u8]> {
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
            out.push(&au[s..e]);
        }
    }
    out
}

fn base64(b: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                s.push(T[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// A sender report (RFC 3550 §6.4.1) on interleaved channel 1.
fn rtcp_sr(n: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&(0xE000_0000u32 + n).to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&(n * 90_000).to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p
}

/// Two UDP sockets on consecutive ports, the first even (RTP, RTCP).
fn udp_pair() -> (std::net::UdpSocket, std::net::UdpSocket) {
    loop {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if !p.is_multiple_of(2) || p == u16::MAX {
            continue;
        }
        if let Ok(b) = std::net::UdpSocket::bind(("127.0.0.1", p + 1)) {
            return (a, b);
        }
    }
}

fn interleaved(channel: u8, p: &[u8]) -> Vec<u8> {
    let mut f = vec![b'$', channel];
    f.extend_from_slice(&(p.len() as u16).to_be_bytes());
    f.extend_from_slice(p);
    f
}

/// RTP packets (RFC 6184: single NAL unit or FU-A) of one access unit.
fn packetize(nals: &[&[u8]], seq: &mut u16, ts: u32) -> Vec<Vec<u8>> {
    const MTU: usize = 1200;
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    for nal in nals {
        if nal.len() <= MTU {
            payloads.push(nal.to_vec());
            continue;
        }
        let (h, body) = (nal[0], &nal[1..]);
        let chunks: Vec<&[u8]> = body.chunks(MTU).collect();
        for (i, c) in chunks.iter().enumerate() {
            let mut p = vec![(h & 0xE0) | 28, h & 0x1F];
            if i == 0 {
                p[1] |= 0x80;
            }
            if i + 1 == chunks.len() {
                p[1] |= 0x40;
            }
            p.extend_from_slice(c);
            payloads.push(p);
        }
    }
    let n = payloads.len();
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, pl)| {
            let mut p = vec![0x80, 96 | if i + 1 == n { 0x80 } else { 0 }];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&ts.to_be_bytes());
            p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            p.extend_from_slice(&pl);
            *seq = seq.wrapping_add(1);
            p
        })
        .collect()
}

impl FakeCamera {
    /// The SDP, with the parameter sets of the first access unit that has them.
    fn sdp(&self) -> String {
        let mut sps = None;
        let mut pps = None;
        for au in &self.aus {
            for n in nal_units(au) {
                match n[0] & 0x1f {
                    7 if sps.is_none() => sps = Some(n.to_vec()),
                    8 if pps.is_none() => pps = Some(n.to_vec()),
                    _ => {}
                }
            }
        }
        let sprop = match (sps, pps) {
            (Some(s), Some(p)) => format!(
                ";profile-level-id={:02x}{:02x}{:02x};sprop-parameter-sets={},{}",
                s[1],
                s[2],
                s[3],
                base64(&s),
                base64(&p)
            ),
            _ => ";profile-level-id=42e01f;sprop-parameter-sets=Z0LgH9oBQBbsBEAAAAMAQAAADKPGDKg=,aM4yyA==".into(),
        };
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=fake\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
a=fmtp:96 packetization-mode=1{sprop}\r\na=control:track1\r\n"
        )
    }

    /// Serves this camera on a free loopback port until the test ends;
    /// returns the port and the counters.
    pub fn serve(self) -> (u16, Arc<FakeCameraStats>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stats = Arc::new(FakeCameraStats::default());
        let me = Arc::new(self);
        let st = stats.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let (me, st) = (me.clone(), st.clone());
                std::thread::spawn(move || me.session(conn, port, &st));
            }
        });
        (port, stats)
    }

    fn session(self: &Arc<Self>, conn: TcpStream, port: u16, st: &Arc<FakeCameraStats>) {
        let Ok(mut w) = conn.try_clone() else { return };
        let mut rd = BufReader::new(conn);
        let sdp = self.sdp();
        let mut udp: Option<(std::net::UdpSocket, std::net::UdpSocket, u16)> = None;
        // Plays over UDP stop when the RTSP connection closes.
        let alive = Arc::new(AtomicBool::new(true));
        // A fresh nonce per connection.
        let nonce = format!("{:032x}", rand::random::<u128>());
        while let Some(req) = rtsp_request(&mut rd) {
            let cseq = &req.cseq;
            if let Some(creds) = &self.digest
                && req.method != "OPTIONS"
            {
                let (user, pass) = creds.lock().unwrap().clone();
                let ok = req
                    .header("Authorization")
                    .is_some_and(|a| digest_ok(a, &req.method, &nonce, &user, &pass));
                if ok {
                    st.authorized.fetch_add(1, Ordering::Relaxed);
                } else {
                    st.unauthorized.fetch_add(1, Ordering::Relaxed);
                    let reply = format!(
                        "RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Digest realm=\"{DIGEST_REALM}\", nonce=\"{nonce}\", qop=\"auth\", algorithm=MD5\r\n\r\n"
                    );
                    if w.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                    continue;
                }
            }
            let reply = match req.method.as_str() {
                "OPTIONS" => format!(
                    "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n"
                ),
                "DESCRIBE" => format!(
                    "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\nContent-Base: rtsp://127.0.0.1:{port}/cam/\r\nContent-Length: {}\r\n\r\n{sdp}",
                    sdp.len()
                ),
                "SETUP" if req.transport.contains("TCP") && self.refuse_tcp => {
                    st.refused_tcp.fetch_add(1, Ordering::Relaxed);
                    format!("RTSP/1.0 461 Unsupported Transport\r\nCSeq: {cseq}\r\n\r\n")
                }
                "SETUP" if !req.transport.contains("TCP") => {
                    let client_port = req
                        .transport
                        .split(';')
                        .find_map(|p| p.strip_prefix("client_port="))
                        .and_then(|p| p.split('-').next()?.parse::<u16>().ok())
                        .unwrap_or(0);
                    let (rtp, rtcp) = udp_pair();
                    let (a, b) = (
                        rtp.local_addr().unwrap().port(),
                        rtcp.local_addr().unwrap().port(),
                    );
                    udp = Some((rtp, rtcp, client_port));
                    format!(
                        "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 42;timeout=60\r\nTransport: RTP/AVP;unicast;client_port={client_port}-{};server_port={a}-{b}\r\n\r\n",
                        client_port + 1
                    )
                }
                "SETUP" => format!(
                    "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 42;timeout=60\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
                ),
                "PLAY" => format!(
                    "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 42\r\nRTP-Info: url=rtsp://127.0.0.1:{port}/cam/track1;seq=1;rtptime=0\r\n\r\n"
                ),
                _ => format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 42\r\n\r\n"),
            };
            if w.write_all(reply.as_bytes()).is_err() {
                return;
            }
            if req.method == "PLAY" {
                st.sessions.fetch_add(1, Ordering::Relaxed);
                let out = match udp.take() {
                    Some((rtp, rtcp, client_port)) => {
                        st.udp_sessions.fetch_add(1, Ordering::Relaxed);
                        Out::Udp {
                            rtp,
                            rtcp,
                            client_port,
                        }
                    }
                    None => match w.try_clone() {
                        Ok(w2) => Out::Tcp(w2),
                        Err(_) => return,
                    },
                };
                let (me, st, alive) = (self.clone(), st.clone(), alive.clone());
                std::thread::spawn(move || me.play(out, &st, &alive));
            }
        }
        alive.store(false, Ordering::Relaxed);
    }

    fn play(&self, mut w: Out, st: &FakeCameraStats, alive: &AtomicBool) {
        let fps = self.fps.max(1);
        let interval = Duration::from_secs(1) / fps;
        let t0 = Instant::now();
        let mut seq = 1u16;
        let resume = st.position.load(Ordering::Relaxed);
        let mut i = if resume > 0 { resume } else { self.start };
        let mut rtcp_due = Instant::now();
        for n in 0u64.. {
            if !alive.load(Ordering::Relaxed) {
                return;
            }
            if self.drop_after.is_some_and(|d| t0.elapsed() >= d) {
                st.position.store(i, Ordering::Relaxed);
                w.cut();
                return;
            }
            if rtcp_due <= Instant::now() {
                if w.rtcp(&rtcp_sr(n as u32)).is_err() {
                    return;
                }
                st.rtcp.fetch_add(1, Ordering::Relaxed);
                rtcp_due += Duration::from_millis(500);
            }
            if !self.rtcp_only && !self.aus.is_empty() {
                if i >= self.aus.len() {
                    i = self.loop_from.min(self.aus.len() - 1);
                }
                let nals: Vec<&[u8]> = nal_units(&self.aus[i])
                    .into_iter()
                    .filter(|n| !(self.strip_sei && n[0] & 0x1f == 6) && n[0] & 0x1f != 9)
                    .collect();
                let ts = if self.freeze_timestamps {
                    1000
                } else {
                    1000u32.wrapping_add((n * 90_000 / fps as u64) as u32)
                };
                for p in packetize(&nals, &mut seq, ts) {
                    if w.rtp(&p).is_err() {
                        return;
                    }
                }
                st.frames.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            let next = t0 + interval * (n as u32 + 1);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }
}
