//! Evidence over the real path: simulator (RTSP) → agent → evidence folder,
//! MQTT update and HTTP server. Clips are checked against the source file
//! frame by frame: keyframe start, length, timing and byte-identical slices.

use crate::common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOKEN: &str = "test-token-0123456789abcdef";

fn config(broker: &Broker, data: &Path, url: &str, http_port: u16, pre: f64, post: f64) -> String {
    config_head("ward-evidence", broker, data)
        + &format!(
            r#"
[[models]]
name = "yolox_nano"

[evidence]
pre_secs = {pre}
post_secs = {post}

[http]
listen = "127.0.0.1:{http_port}"
token = "{TOKEN}"

[[cameras]]
id = "traffic"
url = "{url}"
detect_fps = 5.0
backoff_min_secs = 0.2
backoff_max_secs = 1.0
[[cameras.lines]]
name = "mid"
points = [[0.5, 0.3], [0.5, 1.0]]
[[cameras.rules]]
name = "crossing"
kind = "line_cross"
line = "mid"
classes = ["car", "truck", "bus"]
"#
        )
}

/// Waits for an evidence update whose clip reaches back the whole pre-roll.
fn wait_full_clip(sub: &Subscriber, agent: &Agent, timeout: Duration) -> Value {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(u) = sub
            .updates()
            .into_iter()
            .find(|u| u["kind"] == "evidence" && u["evidence"]["clip"]["pre_truncated"] == false)
        {
            return u;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "no evidence update with a full clip in {timeout:?}; updates: {:?}\nlog:\n{}",
        sub.updates(),
        agent.log_text()
    );
}

fn median_interval(aus: &[Au]) -> u64 {
    let mut pts: Vec<u64> = aus.iter().map(|a| a.pts_ns).collect();
    pts.sort_unstable();
    let mut d: Vec<u64> = pts.windows(2).map(|w| w[1] - w[0]).collect();
    d.sort_unstable();
    d[d.len() / 2]
}

/// Checks a clip against its source; returns (frames, duration s, gop s).
fn check_clip(clip: &Path, source: &Path, h265: bool, pre: f64, post: f64) -> (usize, f64, f64) {
    let src = access_units(source);
    let got = access_units(clip);
    assert!(!got.is_empty(), "clip has no frames");
    assert!(got[0].keyframe, "clip does not start with a keyframe");
    let interval = median_interval(&src);
    let keys: Vec<usize> = (0..src.len()).filter(|&i| src[i].keyframe).collect();
    let longest = keys.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    let gop = longest as f64 * interval as f64 / 1e9;
    // Where the clip starts in the source (the simulator loops the file).
    let first = coded_slices(&got[0].data, h265);
    let start = src
        .iter()
        .position(|a| coded_slices(&a.data, h265) == first)
        .expect("the clip's first frame is not in the source: re-encoded?");
    for (i, au) in got.iter().enumerate() {
        let s = &src[(start + i) % src.len()];
        assert_eq!(
            coded_slices(&au.data, h265),
            coded_slices(&s.data, h265),
            "frame {i} of the clip differs from source frame {}",
            (start + i) % src.len()
        );
    }
    // Timing: the clip's frames are spaced like the source's and its length is
    // frames × interval.
    let min = got.iter().map(|a| a.pts_ns).min().unwrap();
    let max = got.iter().map(|a| a.pts_ns).max().unwrap();
    let last_dur = got.iter().max_by_key(|a| a.pts_ns).unwrap().duration_ns;
    let duration = (max - min + last_dur) as f64 / 1e9;
    let expected = got.len() as f64 * interval as f64 / 1e9;
    assert!(
        (duration - expected).abs() < 0.002 * got.len() as f64,
        "clip lasts {duration:.3} s but {} frames of the source last {expected:.3} s",
        got.len()
    );
    // RTP video runs on a 90 kHz clock (RFC 6184/7798): a 24000/1001 fps
    // source's 41.708 ms arrives as 3753 or 3754 ticks; the clip keeps them.
    let spacing = median_interval(&got).abs_diff(interval);
    assert!(
        spacing <= 11_112,
        "frame spacing differs from the source by {spacing} ns (more than one 90 kHz tick)"
    );
    // Pre-roll + post-roll, extended back to a keyframe by less than one GOP
    // and on to the end of the recording's chunk (the next keyframe, or 2 s).
    let want = pre + post;
    let f = interval as f64 / 1e9;
    let chunk = gop.min(2.0);
    assert!(
        duration >= want - 2.0 * f && duration <= want + gop + chunk + 2.0 * f,
        "clip lasts {duration:.3} s; want {want} s + at most one GOP ({gop:.3} s) + one chunk"
    );
    (got.len(), duration, gop)
}

/// `ioc-agent verify` pinned to the public key of the agent that made the
/// folder (its key is `<data_dir>/agent.key`, above the evidence folder).
fn verify(dir: &Path) -> (bool, String) {
    let key = dir
        .ancestors()
        .map(|d| d.join("agent.key"))
        .find(|p| p.exists())
        .expect("agent.key above the evidence folder");
    let public = ioc_agent::evidence::sign::public_key_of(&key).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("verify")
        .arg(dir)
        .arg("--key")
        .arg(hex::encode(public.as_bytes()))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// Flips one byte of `file`, checks `verify` names it, and restores it.
fn tamper_is_named(dir: &Path, file: &str) {
    let p = dir.join(file);
    let orig = std::fs::read(&p).unwrap();
    let mut b = orig.clone();
    let i = b.len() / 2;
    b[i] ^= 0x01;
    std::fs::write(&p, &b).unwrap();
    let (ok, out) = verify(dir);
    assert!(!ok, "verify passed with a changed {file}");
    assert!(out.contains(file), "verify did not name {file}: {out}");
    std::fs::write(&p, &orig).unwrap();
    assert!(verify(dir).0, "verify fails after restoring {file}");
}

/// A raw HTTP request (no client-side path normalisation); returns status and body.
fn raw_get(port: u16, path: &str, auth: bool) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = if auth {
        format!("Authorization: Bearer {TOKEN}\r\n")
    } else {
        String::new()
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// What a clip test leaves running for further checks.
struct Running {
    data: tempfile::TempDir,
    port: u16,
    update: Value,
    _agent: Agent,
    _sim: Sim,
    _broker: Broker,
    _src: tempfile::TempDir,
}

fn run_clip_test(name: &str, encoder: &[&str], parser: &str, h265: bool) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join(format!("{name}.mp4"));
    transcode(&source, encoder, parser);
    let broker = Broker::start();
    let sim = Sim::start(&[("traffic", &source)]);
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let (pre, post) = (2.0, 2.0);
    let agent = Agent::start(&config(
        &broker,
        data.path(),
        &sim.url("traffic"),
        port,
        pre,
        post,
    ));
    let update = wait_full_clip(&sub, &agent, Duration::from_secs(120));
    let id = update["event_id"].as_str().unwrap().to_string();
    let folder = data.path().join("evidence").join(&id);
    let (frames, duration, gop) = check_clip(&clip_of(&folder), &source, h265, pre, post);
    println!(
        "{name}: clip of {frames} frames, {duration:.3} s (pre {pre} + post {post}, GOP {gop:.3} s), slices byte-identical to the source"
    );
    assert_eq!(
        update["evidence"]["clip"]["frames"].as_u64(),
        Some(frames as u64)
    );
    // The update names every file with its sha256, matching the disk.
    for f in update["evidence"]["files"].as_array().unwrap() {
        let bytes = std::fs::read(folder.join(f["name"].as_str().unwrap())).unwrap();
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            f["sha256"].as_str().unwrap()
        );
    }
    let names: Vec<&str> = update["evidence"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    for want in [
        "clip-init.mp4",
        "clip-00001.m4s",
        "overview.jpg",
        "closeup.jpg",
        "event.json",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    // The alert announced the package.
    let alert = sub
        .alerts()
        .into_iter()
        .find(|a| a["id"] == id.as_str())
        .expect("alert of the event");
    assert_eq!(alert["evidence_pending"], true);
    let (ok, out) = verify(&folder);
    assert!(ok, "verify failed on an untouched folder: {out}");
    // The retained status names the key that signed it, so the IOC can pin
    // it; the manifest carries that key's id.
    let status = sub
        .wait_for(Duration::from_secs(10), |m| m.topic.ends_with("/status"))
        .expect("status message");
    let status: Value = serde_json::from_slice(&status.payload).unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        status["signing_key"]["key_id"], manifest["key_id"],
        "{status}"
    );
    assert_eq!(status["signing_key"]["public_key"], manifest["public_key"]);
    assert_eq!(manifest["key_id"].as_str().map(str::len), Some(16));
    // Plates and faces: the agent's user only.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&folder), 0o700, "evidence folder mode");
    assert_eq!(mode(folder.parent().unwrap()), 0o700, "evidence root mode");
    for e in std::fs::read_dir(&folder).unwrap().flatten() {
        assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
    }
    tamper_is_named(&folder, "clip-init.mp4");
    tamper_is_named(&folder, "clip-00001.m4s");
    tamper_is_named(&folder, "overview.jpg");
    sub.shutdown();
    Running {
        data,
        port,
        update,
        _agent: agent,
        _sim: sim,
        _broker: broker,
        _src: dir,
    }
}

#[test]
fn h264_event_clip_is_the_source_bitstream() {
    let r = run_clip_test(
        "traffic_h264_gop12",
        &[
            "x264enc",
            "speed-preset=ultrafast",
            "key-int-max=12",
            "bframes=2",
            "bitrate=1500",
        ],
        "h264parse",
        false,
    );
    let (data, port) = (r.data.path().to_path_buf(), r.port);
    let id = r.update["event_id"].as_str().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    // Token required.
    let (st, _, _) = http_get(&format!("{base}/evidence/{id}/clip.mp4"), &[]);
    assert_eq!(st, 401, "no token");
    let (st, _, _) = http_get(
        &format!("{base}/evidence/{id}/clip.mp4"),
        &[("Authorization", "Bearer wrong-token-000000")],
    );
    assert_eq!(st, 401, "wrong token");
    let (st, _, _) = http_get(&format!("{base}/api/events"), &[]);
    assert_eq!(st, 401, "list without token");
    // Whole file and a range.
    let auth = format!("Bearer {TOKEN}");
    let clip = clip_bytes(&data.join("evidence").join(id));
    let (st, hs, body) = http_get(
        &format!("{base}/evidence/{id}/clip.mp4"),
        &[("Authorization", &auth)],
    );
    assert_eq!((st, body.len()), (200, clip.len()));
    assert!(
        hs.iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v == "video/mp4")
    );
    let (st, _, body) = http_get(
        &format!("{base}/evidence/{id}/clip.mp4"),
        &[("Authorization", &auth), ("Range", "bytes=100-199")],
    );
    assert_eq!(
        (st, body.as_slice()),
        (206, &clip[100..200]),
        "range request"
    );
    // Path traversal, plain and encoded: never a file outside the folder.
    for p in [
        format!("/evidence/{id}/../../agent.key"),
        format!("/evidence/{id}/..%2F..%2Fagent.key"),
        format!("/evidence/{id}/%2e%2e%2f%2e%2e%2fagent.db"),
        "/evidence/..%2F..%2F/agent.key".to_string(),
        "/evidence/%2e%2e/agent.key".to_string(),
        format!("/evidence/{id}/..%252Fagent.key"),
        format!("/evidence/{id}%2F..%2F..%2Fagent.key/x"),
        "/evidence/../agent.key".to_string(),
    ] {
        let (st, text) = raw_get(port, &p, true);
        assert!(st == 404 || st == 400, "{p} answered {st}");
        let key = std::fs::read_to_string(data.join("agent.key")).unwrap();
        assert!(!text.contains(key.trim()), "{p} leaked the key");
    }
    // The review API lists the event and records a decision.
    let (st, _, body) = http_get(&format!("{base}/api/events"), &[("Authorization", &auth)]);
    assert_eq!(st, 200);
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        list["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == id)
    );
}

#[test]
fn h265_event_clip_is_the_source_bitstream() {
    let _r = run_clip_test(
        "traffic_h265_gop12",
        // Closed GOPs (IDR), as IP cameras send.
        &[
            "x265enc",
            "speed-preset=ultrafast",
            "key-int-max=12",
            "bitrate=1000",
            "option-string=open-gop=0",
        ],
        "h265parse",
        true,
    );
}

/// Every entry of the evidence folder: (sealed folders, half-built `.tmp-*`).
fn scan(evidence: &Path) -> (Vec<std::path::PathBuf>, usize) {
    let mut sealed = Vec::new();
    let mut partial = 0;
    for e in std::fs::read_dir(evidence).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(".tmp-") {
            partial += 1;
        } else {
            assert!(
                e.path().is_dir(),
                "stray file {name} in the evidence folder"
            );
            sealed.push(e.path());
        }
    }
    (sealed, partial)
}

/// SIGKILL at varied moments while packages are being built: every folder
/// under a final name is complete and verifies; half-built ones only ever
/// exist as `.tmp-*` and are removed at the next start.
#[test]
fn sigkill_while_writing_leaves_no_partial_file_under_a_final_name() {
    let broker = Broker::start();
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let data = tempfile::tempdir().unwrap();
    let cfg = config(
        &broker,
        data.path(),
        &sim.url("traffic"),
        free_port(),
        1.0,
        1.0,
    );
    let evidence = data.path().join("evidence");
    let mut partial_seen = 0;
    let mut checked = 0;
    for round in 0..5u64 {
        let mut agent = Agent::start(&cfg);
        let before = scan(&evidence).0.len();
        let start = Instant::now();
        while scan(&evidence).0.len() <= before {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "round {round}: nothing sealed; log:\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if round < 3 {
            // Kill the moment a package is being written (its .tmp folder exists).
            let start = Instant::now();
            while scan(&evidence).1 == 0 && start.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(1));
            }
        } else {
            // Or at some other point of the cycle.
            std::thread::sleep(Duration::from_millis(137 * round + 40));
        }
        agent.proc.child.kill().unwrap();
        agent.proc.child.wait().unwrap();
        let (sealed, partial) = scan(&evidence);
        partial_seen += partial;
        for dir in &sealed {
            let names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect();
            assert!(
                !names.iter().any(|n| n.ends_with(".part")),
                "{}: partial file under a final name: {names:?}",
                dir.display()
            );
            let (ok, out) = verify(dir);
            assert!(ok, "{} does not verify after SIGKILL: {out}", dir.display());
        }
        checked = sealed.len();
    }
    // The next start removes what the kills left half-built.
    let agent = Agent::start(&cfg);
    let start = Instant::now();
    while scan(&evidence).1 > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "half-built folders not cleaned"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "5 SIGKILLs: {checked} sealed folders all verify, none partial; {partial_seen} half-built .tmp folder(s) seen and cleaned at restart"
    );
    drop(agent);
}

/// Detection on the sub-stream (`detect_url`), clips from the main stream:
/// the clip is the main stream's bitstream, placed by wall-clock time.
#[test]
fn clips_come_from_the_main_stream_when_detecting_on_the_sub_stream() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("main.mp4");
    let sub_file = dir.path().join("sub.mp4");
    let h264 = [
        "x264enc",
        "speed-preset=ultrafast",
        "key-int-max=12",
        "bframes=2",
        "bitrate=1500",
    ];
    transcode(&main, &h264, "h264parse");
    let mut scaled = vec!["videoscale", "!", "video/x-raw,width=320,height=180", "!"];
    scaled.extend([
        "x264enc",
        "speed-preset=ultrafast",
        "key-int-max=25",
        "bitrate=300",
    ]);
    transcode(&sub_file, &scaled, "h264parse");
    let broker = Broker::start();
    let sim = Sim::start(&[("main", &main), ("sub", &sub_file)]);
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    let (pre, post) = (2.0, 2.0);
    let cfg = config(
        &broker,
        data.path(),
        &sim.url("main"),
        free_port(),
        pre,
        post,
    )
    .replace(
        &format!("url = \"{}\"", sim.url("main")),
        &format!(
            "url = \"{}\"\ndetect_url = \"{}\"",
            sim.url("main"),
            sim.url("sub")
        ),
    );
    let agent = Agent::start(&cfg);
    let update = wait_full_clip(&sub, &agent, Duration::from_secs(120));
    assert!(agent.log_text().contains("record stream opened"));
    let id = update["event_id"].as_str().unwrap();
    let alert = sub.alerts().into_iter().find(|a| a["id"] == id).unwrap();
    assert_eq!(
        alert["frame"]["width"], 320,
        "detection ran on the sub-stream"
    );
    let (frames, duration, gop) = check_clip(
        &clip_of(&data.path().join("evidence").join(id)),
        &main,
        false,
        pre,
        post,
    );
    println!(
        "detect on 320x180, clip from the 640x360 main stream: {frames} frames, {duration:.3} s (GOP {gop:.2} s), byte-identical"
    );
    let status = sub.latest_status().expect("a status");
    assert_eq!(
        status["cameras"]["traffic"]["record"]["state"], "streaming",
        "{status}"
    );
    sub.shutdown();
}

/// Detection streams on the sub-stream while the main stream (the clips'
/// source) cannot be read: the camera's status says so, with the reason,
/// instead of showing a camera whose events silently get no clip.
#[test]
fn a_dead_main_stream_shows_in_the_status_while_detection_streams() {
    let broker = Broker::start();
    let sim = Sim::start(&[("sub", &traffic_clip())]);
    let sub = Subscriber::start(&broker, "ioc/v1/+/status");
    let data = tempfile::tempdir().unwrap();
    let dead = format!("rtsp://127.0.0.1:{}/main", free_port());
    let cfg = config(&broker, data.path(), &dead, free_port(), 1.0, 1.0).replace(
        &format!("url = \"{dead}\""),
        &format!("url = \"{dead}\"\ndetect_url = \"{}\"", sim.url("sub")),
    );
    let agent = Agent::start(&cfg);
    let t0 = Instant::now();
    let cam = loop {
        let c = sub.latest_status().map(|s| s["cameras"]["traffic"].clone());
        if let Some(c) =
            c.filter(|c| c["state"] == "streaming" && c["record"]["state"] == "retrying")
        {
            break c;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no status with detection streaming and the record stream retrying: {:?}\n{}",
            sub.latest_status(),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let err = cam["record"]["last_error"].as_str().unwrap_or_default();
    assert!(err.starts_with("record stream:"), "{cam}");
    assert!(
        cam["record"]["reconnects"].as_u64().unwrap_or(0) >= 1,
        "{cam}"
    );
    println!(
        "main stream dead, detection streaming: record {} after {:.1} s: {err}",
        cam["record"]["state"],
        t0.elapsed().as_secs_f64()
    );
    sub.shutdown();
}
