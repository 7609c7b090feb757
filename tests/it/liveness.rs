//! Live means live: a camera is `streaming` only while its decoded pictures
//! advance. Each test points the agent at a camera that misbehaves the way
//! real ones do (`common::rtsp::FakeCamera`, an RTSP server on loopback
//! streaming our footage as RTP): only RTCP and no video; intra refresh
//! joined mid-stream (no IDR ever comes); no keyframe or recovery point at
//! all; RTP timestamps that never advance. Each prints how long the agent
//! took to notice.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::rtsp::FakeCamera;
use common::*;
use serde_json::Value;

/// The traffic footage encoded with `encoder` (x264enc and its settings),
/// as access units.
fn encoded(dir: &std::path::Path, name: &str, encoder: &[&str]) -> Vec<Vec<u8>> {
    let mp4 = dir.join(name);
    transcode(&mp4, encoder, "h264parse");
    access_units(&mp4).into_iter().map(|a| a.data).collect()
}

/// The traffic footage re-encoded with periodic intra refresh: one IDR
/// first, then recovery-point SEIs every 25 frames and no further IDR.
fn intra_refresh_aus(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let aus = encoded(
        dir,
        "intra-refresh.mp4",
        &[
            "x264enc",
            "speed-preset=ultrafast",
            "intra-refresh=true",
            "key-int-max=25",
            "bitrate=1500",
        ],
    );
    let idr = aus
        .iter()
        .filter(|a| common::rtsp::nal_units(a).iter().any(|n| n[0] & 0x1f == 5))
        .count();
    assert_eq!(
        idr, 1,
        "the intra-refresh encode has {idr} IDR frames, want 1"
    );
    aus
}

/// The camera's entry in the newest status that `pred` accepts.
fn wait_camera(
    sub: &Subscriber,
    id: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Option<Value> {
    sub.wait_for(timeout, |m| {
        serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| pred(&v["cameras"][id]))
    })
    .and_then(|m| serde_json::from_slice::<Value>(&m.payload).ok())
    .map(|v| v["cameras"][id].clone())
}

fn agent_for(broker: &Broker, data: &std::path::Path, port: u16, extra: &str) -> Agent {
    Agent::start(
        &(config_head("ward-live", broker, data)
            + &format!(
                r#"
[[models]]
name = "yolox_nano"

[evidence]
enabled = false

[[cameras]]
id = "cam"
url = "rtsp://127.0.0.1:{port}/cam/"
backoff_min_secs = 0.5
backoff_max_secs = 2.0
{extra}
"#
            )),
    )
}

#[test]
fn rtcp_without_video_is_not_live() {
    let (port, stats) = FakeCamera {
        rtcp_only: true,
        fps: 25,
        ..FakeCamera::default()
    }
    .serve();
    let sent = &stats.rtcp;
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

#[test]
fn intra_refresh_camera_joined_mid_stream_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let aus = intra_refresh_aus(dir.path());
    // Joined after the only IDR: recovery points are all there is.
    let (port, stats) = FakeCamera {
        aus,
        start: 30,
        loop_from: 1,
        fps: 24,
        ..FakeCamera::default()
    }
    .serve();
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "ioc/v1/+/status");
    let data = tempfile::tempdir().unwrap();
    let agent = agent_for(&broker, data.path(), port, "");
    let t0 = Instant::now();
    let cam = wait_camera(&sub, "cam", Duration::from_secs(40), |c| {
        c["state"] == "streaming" && c["frames_decoded"].as_u64().unwrap_or(0) > 0
    });
    let cam = cam.unwrap_or_else(|| {
        panic!(
            "an intra-refresh camera joined mid-stream ({} frames sent) was never decoded; log:\n{}",
            stats.frames.load(Ordering::Relaxed),
            agent.log_text()
        )
    });
    println!(
        "intra refresh, no IDR: streaming with {} decoded frames {:.1} s after start ({} skipped before a recovery point)",
        cam["frames_decoded"],
        t0.elapsed().as_secs_f64(),
        cam["frames_skipped"]["no_keyframe"]
    );
}

#[test]
fn a_camera_with_no_keyframe_or_recovery_point_is_not_live() {
    let dir = tempfile::tempdir().unwrap();
    let aus = intra_refresh_aus(dir.path());
    let (port, stats) = FakeCamera {
        aus,
        start: 30,
        loop_from: 1,
        strip_sei: true,
        fps: 24,
        ..FakeCamera::default()
    }
    .serve();
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "ioc/v1/+/status");
    let data = tempfile::tempdir().unwrap();
    let agent = agent_for(&broker, data.path(), port, "keyframe_timeout_secs = 3");
    let t0 = Instant::now();
    let cam = wait_camera(&sub, "cam", Duration::from_secs(40), |c| {
        c["stalls"]["no_keyframe"].as_u64().unwrap_or(0) >= 1
    });
    let after = t0.elapsed().as_secs_f64();
    let cam = cam.unwrap_or_else(|| {
        panic!(
            "a camera with no keyframe ({} frames sent) was never reported; log:\n{}",
            stats.frames.load(Ordering::Relaxed),
            agent.log_text()
        )
    });
    assert_ne!(cam["state"], "streaming", "{cam}");
    let err = cam["last_error"].as_str().unwrap_or("");
    assert!(err.contains("no keyframe or recovery point"), "{cam}");
    assert_eq!(cam["frames_decoded"], 0, "{cam}");
    assert!(
        agent.log_text().contains("no keyframe or recovery point"),
        "the reason is logged"
    );
    println!(
        "no keyframe, no recovery point: reported {after:.1} s after start (keyframe_timeout_secs 3), state {}, sessions opened {}: {err}",
        cam["state"],
        stats.sessions.load(Ordering::Relaxed)
    );
}

#[test]
fn frozen_rtp_timestamps_are_not_live() {
    let dir = tempfile::tempdir().unwrap();
    let aus = encoded(
        dir.path(),
        "gop.mp4",
        &[
            "x264enc",
            "speed-preset=ultrafast",
            "key-int-max=25",
            "bitrate=1500",
        ],
    );
    let (port, stats) = FakeCamera {
        aus,
        freeze_timestamps: true,
        fps: 24,
        ..FakeCamera::default()
    }
    .serve();
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "ioc/v1/+/status");
    let data = tempfile::tempdir().unwrap();
    let agent = agent_for(&broker, data.path(), port, "");
    let t0 = Instant::now();
    let cam = wait_camera(&sub, "cam", Duration::from_secs(40), |c| {
        c["stalls"]["frozen_timestamps"].as_u64().unwrap_or(0) >= 1
    });
    let after = t0.elapsed().as_secs_f64();
    let cam = cam.unwrap_or_else(|| {
        panic!(
            "a camera whose RTP timestamps never advance ({} frames sent) was never reported; log:\n{}",
            stats.frames.load(Ordering::Relaxed),
            agent.log_text()
        )
    });
    assert!(
        cam["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("RTP timestamps advanced 0 ms")),
        "{cam}"
    );
    println!(
        "frozen RTP timestamps: reported {after:.1} s after start (window 5 s): {}",
        cam["last_error"]
    );
}

fn evidence_agent(broker: &Broker, data: &std::path::Path, port: u16, evidence: &str) -> Agent {
    Agent::start(
        &(config_head("ward-ring", broker, data)
            + &format!(
                r#"
[[models]]
name = "yolox_nano"

[evidence]
pre_secs = 3.0
post_secs = 2.0
{evidence}

[[cameras]]
id = "cam"
url = "rtsp://127.0.0.1:{port}/cam/"
detect_fps = 5.0
backoff_min_secs = 0.2
backoff_max_secs = 0.5
[[cameras.lines]]
name = "mid"
points = [[0.5, 0.3], [0.5, 1.0]]
[[cameras.rules]]
name = "crossing"
kind = "line_cross"
line = "mid"
classes = ["car", "truck", "bus"]
"#
            )),
    )
}

/// Resident memory of a process, bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// A camera that drops off the network every 6 s: events raised just
/// before a drop keep their clip (the ring keeps the old session).
#[test]
fn events_before_a_reconnect_keep_their_clips() {
    let dir = tempfile::tempdir().unwrap();
    let aus = encoded(
        dir.path(),
        "gop.mp4",
        &[
            "x264enc",
            "speed-preset=ultrafast",
            "key-int-max=24",
            "bitrate=1500",
        ],
    );
    let (port, stats) = FakeCamera {
        aus,
        loop_from: 0,
        drop_after: Some(Duration::from_secs(6)),
        fps: 24,
        ..FakeCamera::default()
    }
    .serve();
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    let agent = evidence_agent(&broker, data.path(), port, "");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(150) {
        let sealed = sub
            .updates()
            .iter()
            .filter(|u| u["kind"] == "evidence")
            .count();
        if sealed >= 12 && stats.sessions.load(Ordering::Relaxed) >= 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(8)); // the last packages seal
    let updates = sub.updates();
    let sealed: Vec<&Value> = updates.iter().filter(|u| u["kind"] == "evidence").collect();
    let with_clip = sealed
        .iter()
        .filter(|u| !u["evidence"]["clip"].is_null())
        .count();
    let sessions = stats.sessions.load(Ordering::Relaxed);
    println!(
        "camera dropped every 6 s: {sessions} sessions, {} alerts, {} packages sealed, {with_clip} with a clip",
        sub.alerts().len(),
        sealed.len()
    );
    assert!(
        sessions >= 3,
        "the camera was not reconnected: {sessions} sessions"
    );
    assert!(
        sealed.len() >= 5,
        "too few events to judge: {}\n{}",
        sealed.len(),
        agent.log_text()
    );
    assert_eq!(
        with_clip,
        sealed.len(),
        "events lost their clip across a reconnect: {:?}",
        sealed
            .iter()
            .filter(|u| u["evidence"]["clip"].is_null())
            .map(|u| &u["event_id"])
            .collect::<Vec<_>>()
    );
}

/// A camera that sends one IDR and never another (and no recovery point),
/// with evidence on: the ring stays within its cap, clips within
/// `max_clip_secs`, memory flat.
#[test]
fn a_camera_without_a_second_keyframe_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let aus = intra_refresh_aus(dir.path());
    let (port, _stats) = FakeCamera {
        aus,
        start: 0,
        loop_from: 1,
        strip_sei: true,
        fps: 24,
        ..FakeCamera::default()
    }
    .serve();
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    let max_clip = 8.0;
    let agent = evidence_agent(
        &broker,
        data.path(),
        port,
        &format!("ring_bytes = 1048576\nmax_clip_secs = {max_clip}"),
    );
    let pid = agent.proc.child.id();
    let t0 = Instant::now();
    let mut rss_at_20 = 0;
    let mut peak = 0;
    let mut last_ring = Value::Null;
    while t0.elapsed() < Duration::from_secs(75) {
        std::thread::sleep(Duration::from_secs(1));
        let r = rss(pid);
        peak = peak.max(r);
        if rss_at_20 == 0 && t0.elapsed() >= Duration::from_secs(20) {
            rss_at_20 = r;
        }
        if let Some(v) = sub.latest_status() {
            last_ring = v["cameras"]["cam"]["ring"].clone();
        }
    }
    let rss_end = rss(pid);
    let evidence = dir_bytes(&data.path().join("evidence"));
    let updates = sub.updates();
    let clips: Vec<&Value> = updates
        .iter()
        .filter(|u| u["kind"] == "evidence" && !u["evidence"]["clip"].is_null())
        .map(|u| &u["evidence"]["clip"])
        .collect();
    let longest = clips
        .iter()
        .map(|c| c["duration_secs"].as_f64().unwrap_or(0.0))
        .fold(0.0, f64::max);
    let most_frames = clips
        .iter()
        .map(|c| c["frames"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    println!(
        "no second keyframe, 75 s: ring {last_ring}; {} clips, longest {longest:.1} s / {most_frames} frames (cap {max_clip} s); evidence {:.1} MB; RSS {:.0} MB at 20 s, {:.0} MB at 75 s, peak {:.0} MB",
        clips.len(),
        evidence as f64 / 1e6,
        rss_at_20 as f64 / 1e6,
        rss_end as f64 / 1e6,
        peak as f64 / 1e6
    );
    assert!(
        last_ring["bytes"].as_u64().unwrap_or(u64::MAX)
            <= last_ring["budget_bytes"].as_u64().unwrap_or(0),
        "the ring is over its cap: {last_ring}"
    );
    assert!(
        last_ring["cut_frames"].as_u64().unwrap_or(0) > 0,
        "{last_ring}"
    );
    assert!(
        last_ring["note"]
            .as_str()
            .is_some_and(|n| n.contains("keyframe")),
        "{last_ring}"
    );
    assert!(!clips.is_empty(), "no clip at all:\n{}", agent.log_text());
    assert!(
        longest <= max_clip + 0.5,
        "a clip is {longest:.1} s, longer than max_clip_secs {max_clip}"
    );
    assert!(
        clips.iter().any(|c| c["starts_on_keyframe"] == false),
        "a clip without a keyframe in reach must say so: {clips:?}"
    );
}

/// A camera that answers SETUP over TCP with 461 (VLC's server does): the
/// agent falls back to UDP and says so; `transport = "tcp"` does not.
#[test]
fn a_camera_that_refuses_tcp_is_read_over_udp() {
    let dir = tempfile::tempdir().unwrap();
    let aus = encoded(
        dir.path(),
        "gop.mp4",
        &[
            "x264enc",
            "speed-preset=ultrafast",
            "key-int-max=24",
            "bitrate=1500",
        ],
    );
    let (port, stats) = FakeCamera {
        aus,
        refuse_tcp: true,
        fps: 24,
        ..FakeCamera::default()
    }
    .serve();
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "ioc/v1/+/status");
    let data = tempfile::tempdir().unwrap();
    let agent = agent_for(&broker, data.path(), port, "");
    let t0 = Instant::now();
    let cam = wait_camera(&sub, "cam", Duration::from_secs(40), |c| {
        c["state"] == "streaming" && c["frames_decoded"].as_u64().unwrap_or(0) > 0
    })
    .unwrap_or_else(|| {
        panic!(
            "a camera refusing TCP ({} SETUPs refused) was never read; log:\n{}",
            stats.refused_tcp.load(Ordering::Relaxed),
            agent.log_text()
        )
    });
    assert_eq!(cam["transport"], "udp", "{cam}");
    assert!(agent.log_text().contains("461"), "the fallback is logged");
    println!(
        "461 for TCP: streaming over UDP {:.1} s after start ({} SETUP refused, {} UDP sessions), {} frames decoded",
        t0.elapsed().as_secs_f64(),
        stats.refused_tcp.load(Ordering::Relaxed),
        stats.udp_sessions.load(Ordering::Relaxed),
        cam["frames_decoded"]
    );
    drop(agent);
    // Forced to TCP: refused, and the status says why.
    let data = tempfile::tempdir().unwrap();
    let agent = agent_for(&broker, data.path(), port, "transport = \"tcp\"");
    let cam = wait_camera(&sub, "cam", Duration::from_secs(30), |c| {
        c["last_error"].as_str().is_some_and(|e| e.contains("461"))
    })
    .unwrap_or_else(|| {
        panic!(
            "transport = tcp: no 461 in the status; log:\n{}",
            agent.log_text()
        )
    });
    assert_ne!(cam["state"], "streaming", "{cam}");
}

/// A bitstream with damaged pictures (every 10th access unit's slice
/// headers overwritten): the damage is counted, the camera keeps streaming.
#[test]
fn a_corrupted_bitstream_is_counted_and_the_camera_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut aus = encoded(
        dir.path(),
        "gop.mp4",
        &[
            "x264enc",
            "speed-preset=ultrafast",
            "key-int-max=24",
            "bitrate=1500",
        ],
    );
    let mut damaged = 0;
    for (i, au) in aus.iter_mut().enumerate() {
        if i % 10 != 5 {
            continue;
        }
        // Every slice NAL: its header bytes after the NAL header become 0xFF.
        let mut k = 0;
        while k + 8 < au.len() {
            if au[k] == 0
                && au[k + 1] == 0
                && au[k + 2] == 1
                && (1..=5).contains(&(au[k + 3] & 0x1f))
            {
                for b in &mut au[k + 4..k + 8] {
                    *b = 0xFF;
                }
                damaged += 1;
                k += 8;
            } else {
                k += 1;
            }
        }
    }
    assert!(damaged > 10);
    let (port, stats) = FakeCamera {
        aus,
        fps: 24,
        ..FakeCamera::default()
    }
    .serve();
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "ioc/v1/+/status");
    let data = tempfile::tempdir().unwrap();
    let agent = agent_for(&broker, data.path(), port, "");
    let cam = wait_camera(&sub, "cam", Duration::from_secs(40), |c| {
        c["frames_corrupt"].as_u64().unwrap_or(0) >= 5
            && c["state"] == "streaming"
            && c["frames_decoded"].as_u64().unwrap_or(0) > 100
    })
    .unwrap_or_else(|| {
        panic!(
            "damaged pictures ({} frames sent) not counted, or the camera stopped; status {:?}; log:\n{}",
            stats.frames.load(Ordering::Relaxed),
            sub.latest_status().map(|v| v["cameras"]["cam"].clone()),
            agent.log_text()
        )
    });
    println!(
        "corrupted bitstream (1 in 10 access units damaged): {} counted corrupt, {} decoded, {} received, still streaming",
        cam["frames_corrupt"], cam["frames_decoded"], cam["frames_received"]
    );
}

/// Bytes of the clip files (`clip*`) under `dir`, each stored file (inode)
/// counted once however many folders link it; and how many links share.
fn clip_bytes_on_disk(dir: &std::path::Path) -> (u64, u64, usize) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashMap::new();
    let mut linked = 0;
    let mut files = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
            if !f.file_name().to_string_lossy().starts_with("clip") {
                continue;
            }
            let Ok(m) = f.metadata() else { continue };
            files += 1;
            linked += m.len();
            seen.insert((m.dev(), m.ino()), m.len());
        }
    }
    (seen.values().sum(), linked, files)
}

/// A camera with one keyframe every 20 s (the footage's length), evidence
/// on with the defaults: clips stay within `max_clip_secs` (30) however far
/// back the keyframe is, and overlapping clips share their segments: the
/// clip bytes stored stay within the video the camera sent (one copy), where
/// each event storing its own clip wrote 131 MB for 11 MB of video. RSS and
/// evidence bytes are printed.
#[test]
fn a_camera_with_a_20_s_gop_keeps_clips_within_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let aus = encoded(
        dir.path(),
        "long-gop.mp4",
        &[
            "x264enc",
            "speed-preset=ultrafast",
            "key-int-max=1000",
            "bitrate=1500",
        ],
    );
    let mean_au = aus.iter().map(|a| a.len()).sum::<usize>() as f64 / aus.len() as f64;
    let (port, stats) = FakeCamera {
        aus,
        fps: 24,
        ..FakeCamera::default()
    }
    .serve();
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    let agent = evidence_agent(&broker, data.path(), port, "");
    let pid = agent.proc.child.id();
    let t0 = Instant::now();
    let (mut rss_at_20, mut peak) = (0, 0);
    while t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(1));
        let r = rss(pid);
        peak = peak.max(r);
        if rss_at_20 == 0 && t0.elapsed() >= Duration::from_secs(20) {
            rss_at_20 = r;
        }
    }
    let sent = stats.frames.load(Ordering::Relaxed) as f64 * mean_au;
    std::thread::sleep(Duration::from_secs(4));
    let evidence = dir_bytes(&data.path().join("evidence"));
    let (stored, linked, clip_files) = clip_bytes_on_disk(&data.path().join("evidence"));
    let updates = sub.updates();
    let clips: Vec<&Value> = updates
        .iter()
        .filter(|u| u["kind"] == "evidence" && !u["evidence"]["clip"].is_null())
        .map(|u| &u["evidence"]["clip"])
        .collect();
    let longest = clips
        .iter()
        .map(|c| c["duration_secs"].as_f64().unwrap_or(0.0))
        .fold(0.0, f64::max);
    let off_key = clips
        .iter()
        .filter(|c| c["starts_on_keyframe"] == false)
        .count();
    println!(
        "20 s GOP, 60 s, defaults: {} clips, longest {longest:.1} s (cap 30 s), {off_key} not starting on a keyframe; evidence {:.1} MB; RSS {:.0} MB at 20 s, peak {:.0} MB",
        clips.len(),
        evidence as f64 / 1e6,
        rss_at_20 as f64 / 1e6,
        peak as f64 / 1e6
    );
    let shared: u64 = clips
        .iter()
        .map(|c| c["shared_segments"].as_u64().unwrap_or(0))
        .sum();
    println!(
        "clips: {:.1} MB stored for {:.1} MB of video sent; {:.1} MB as the folders list them ({clip_files} files, {shared} segments shared)",
        stored as f64 / 1e6,
        sent / 1e6,
        linked as f64 / 1e6
    );
    assert!(!clips.is_empty(), "no clip:\n{}", agent.log_text());
    assert!(
        longest <= 30.5,
        "a clip is {longest:.1} s, over max_clip_secs 30"
    );
    assert!(
        (stored as f64) <= 1.25 * sent,
        "{:.1} MB of clips stored for {:.1} MB of video: overlapping events keep their own copies",
        stored as f64 / 1e6,
        sent / 1e6
    );
}
