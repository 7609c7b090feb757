//! Live means live: a camera is not reported as up while its pictures do not
//! advance. Here a foreign RTSP server (written in the test, on loopback)
//! that answers DESCRIBE/SETUP/PLAY and then sends RTCP sender reports but
//! never a video packet: the agent must time it out and say why, though
//! RTCP keeps arriving.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=rtcp-only\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
a=fmtp:96 packetization-mode=1;profile-level-id=42e01f;sprop-parameter-sets=Z0LgH9oBQBbsBEAAAAMAQAAADKPGDKg=,aM4yyA==\r\n\
a=control:track1\r\n";

/// Reads one RTSP request (headers only; none of ours has a body).
fn request(rd: &mut BufReader<TcpStream>) -> Option<(String, String)> {
    let mut first = String::new();
    if rd.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut cseq = String::from("0");
    loop {
        let mut l = String::new();
        rd.read_line(&mut l).ok()?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("CSeq:") {
            cseq = v.trim().to_string();
        }
    }
    Some((first.split_whitespace().next()?.to_string(), cseq))
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
    let mut f = vec![b'$', 1];
    f.extend_from_slice(&(p.len() as u16).to_be_bytes());
    f.extend_from_slice(&p);
    f
}

/// Serves RTCP-only sessions; counts the reports it sent.
fn rtcp_only_server(sent: Arc<AtomicUsize>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let sent = sent.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut rd = BufReader::new(conn);
                while let Some((method, cseq)) = request(&mut rd) {
                    let reply = match method.as_str() {
                        "OPTIONS" => format!(
                            "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n"
                        ),
                        "DESCRIBE" => format!(
                            "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\nContent-Base: rtsp://127.0.0.1:{port}/cam/\r\nContent-Length: {}\r\n\r\n{SDP}",
                            SDP.len()
                        ),
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
                    if method == "PLAY" {
                        // RTCP every 500 ms, never a video packet.
                        let mut w2 = w.try_clone().unwrap();
                        let sent = sent.clone();
                        std::thread::spawn(move || {
                            for n in 0.. {
                                if w2.write_all(&rtcp_sr(n)).is_err() {
                                    return;
                                }
                                sent.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(500));
                            }
                        });
                    }
                }
                let _ = rd.read(&mut [0u8; 1]);
            });
        }
    });
    port
}

#[test]
fn rtcp_without_video_is_not_live() {
    let sent = Arc::new(AtomicUsize::new(0));
    let port = rtcp_only_server(sent.clone());
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "ioc/v1/+/status");
    let data = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        &(config_head("ward-live", &broker, data.path())
            + &format!(
                r#"
[[models]]
name = "yolox_nano"

[evidence]
enabled = false

[[cameras]]
id = "frozen"
url = "rtsp://127.0.0.1:{port}/cam/"
inactivity_timeout_secs = 3
"#
            )),
    );
    let t0 = Instant::now();
    let timed_out = sub.wait_for(Duration::from_secs(30), |m| {
        serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| {
            v["cameras"]["frozen"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("inactivity"))
        })
    });
    let after = t0.elapsed().as_secs_f64();
    assert!(
        timed_out.is_some(),
        "a camera sending only RTCP ({} reports) was never timed out; log:\n{}",
        sent.load(Ordering::Relaxed),
        agent.log_text()
    );
    let v: Value = serde_json::from_slice(&timed_out.unwrap().payload).unwrap();
    assert_ne!(v["cameras"]["frozen"]["state"], "streaming", "{v}");
    println!(
        "RTCP-only camera: reported '{}' after {after:.1} s (inactivity_timeout 3 s), {} RTCP reports sent",
        v["cameras"]["frozen"]["last_error"],
        sent.load(Ordering::Relaxed)
    );
}
