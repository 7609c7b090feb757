//! `ioc-agent probe` against the simulator: the right codec, resolution and
//! GOP for H.264 and H.265, a snapshot, and a distinct plain message for an
//! unreachable port, a wrong path and a Motion-JPEG camera.

use crate::common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn probe(url: &str, dir: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["probe", url, "--seconds", "3", "--timeout", "5"])
        .arg("--snapshot")
        .arg(dir.join("snap.jpg"))
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn probe_reports_streams_and_names_each_failure() {
    let dir = tempfile::tempdir().unwrap();
    let h264 = dir.path().join("h264.mp4");
    let h265 = dir.path().join("h265.mp4");
    transcode(
        &h264,
        &[
            "x264enc",
            "speed-preset=ultrafast",
            "key-int-max=12",
            "bitrate=800",
        ],
        "h264parse",
    );
    transcode(
        &h265,
        &[
            "x265enc",
            "speed-preset=ultrafast",
            "key-int-max=24",
            "bitrate=800",
            "option-string=open-gop=0",
        ],
        "h265parse",
    );
    let sim = Sim::start_with(&[("avc", &h264), ("hevc", &h265)], &[("mj", "mjpeg")]);
    for (name, codec, gop) in [("avc", "h264", 12), ("hevc", "h265", 24)] {
        let (code, out, err) = probe(&sim.url(name), dir.path(), &["--json"]);
        assert_eq!(code, 0, "{err}");
        let r: Value = serde_json::from_str(&out).unwrap();
        println!("{name}: {r}");
        assert_eq!(r["codec"], codec);
        assert_eq!(
            (r["width"].as_u64(), r["height"].as_u64()),
            (Some(640), Some(360))
        );
        assert_eq!(r["gop_frames"].as_u64(), Some(gop), "GOP of {name}");
        assert!((r["fps"].as_f64().unwrap() - 23.98).abs() < 0.1);
        assert!(r["bitrate_kbps"].as_f64().unwrap() > 100.0);
        assert_eq!(
            r["decoder"], "libavcodec",
            "the software decoder on a box without hardware ones"
        );
        let snap = image::open(dir.path().join("snap.jpg")).expect("snapshot JPEG");
        assert_eq!((snap.width(), snap.height()), (640, 360));
        std::fs::remove_file(dir.path().join("snap.jpg")).unwrap();
    }
    // The human table.
    let (_, table, _) = probe(&sim.url("avc"), dir.path(), &[]);
    assert!(table.contains("GOP         12 frames (0.50 s)"), "{table}");
    // Failures, each with its own message.
    let closed = free_port();
    let (code, _, err) = probe(&format!("rtsp://127.0.0.1:{closed}/x"), dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the camera"), "{err}");
    let (code, _, err) = probe(&sim.url("no-such-path"), dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no stream at this path (404"), "{err}");
    let (code, _, err) = probe(&sim.url("mj"), dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Motion-JPEG") && err.contains("H.264 or H.265"),
        "{err}"
    );
    assert!(!err.contains("cannot reach"), "{err}");
}
