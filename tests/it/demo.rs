//! `make demo` as a newcomer runs it, headless: `scripts/demo.sh` with this
//! build's agent, its own scratch and data folders. It must print a red
//! light, a wrong-way and a crowd event, each followed by its evidence folder
//! checked against the agent's key; the review page it names must list them
//! with their clips; stopping it must stop everything it started.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const WANTED: &[&str] = &["traffic.red_light", "traffic.wrong_way", "order.crowd"];

/// Stops the demo (SIGTERM: its trap stops what it started) if the test
/// fails before it does.
struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .status();
    }
}

#[test]
fn the_demo_shows_violations_with_verified_evidence() {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let started = Instant::now();
    let mut child = Command::new(root().join("scripts/demo.sh"))
        .env("BIN", BIN)
        .env("DEMO_DIR", scratch.path().join("demo"))
        .env("DEMO_DATA", &data)
        .env("DEMO_MODELS", model_dir())
        .env("ORT_DYLIB_PATH", ort_lib())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(scratch.path().join("stderr.log")).unwrap())
        .spawn()
        .expect("run scripts/demo.sh");
    let _guard = StopOnDrop(child.id());
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    // Event id → type, from the ALERT lines; type → seconds to its first
    // verified evidence.
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut verified: BTreeMap<String, f64> = BTreeMap::new();
    let mut last_evidence: Option<String> = None;
    let mut review_url = None;
    let deadline = started + Duration::from_secs(180);
    while verified.len() < WANTED.len() && Instant::now() < deadline {
        let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) else {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("the demo exited ({st}):\n{}", lines.join("\n"));
            }
            continue;
        };
        let id = l
            .rsplit_once('[')
            .and_then(|(_, r)| r.strip_suffix(']'))
            .map(str::to_string);
        if let Some(u) = l.split_whitespace().find(|w| w.ends_with("/review")) {
            review_url = Some(u.to_string());
        }
        if l.starts_with("ALERT") {
            let kind = WANTED.iter().find(|k| l.contains(*k));
            if let (Some(id), Some(kind)) = (&id, kind) {
                // Printed in both languages, with the place.
                assert!(l.contains(" / ") && l.contains(" @ "), "{l}");
                types.insert(id.clone(), kind.to_string());
            }
        } else if l.starts_with("EVIDENCE") {
            last_evidence = id;
        } else if l.trim_start().starts_with("VERIFIED") {
            let kind = last_evidence.as_ref().and_then(|id| types.get(id));
            if let Some(kind) = kind {
                verified
                    .entry(kind.clone())
                    .or_insert(started.elapsed().as_secs_f64());
            }
        } else if l.contains("VERIFY FAILED") {
            panic!("evidence did not verify: {l}\n{}", lines.join("\n"));
        }
        lines.push(l);
    }
    println!("first verified event of each kind, seconds from `scripts/demo.sh`: {verified:?}");
    for k in WANTED {
        assert!(
            verified.contains_key(*k),
            "no verified {k} in {:.0} s:\n{}",
            started.elapsed().as_secs_f64(),
            lines.join("\n")
        );
    }

    // The review page it printed lists them, with their clips.
    let url = review_url.expect("the demo printed the review page's URL");
    let api = url.replace("/review", "/api/events");
    let (st, _, body) = http_get(
        &api,
        &[("Authorization", "Bearer demo-review-token-not-secret")],
    );
    assert_eq!(st, 200, "{api}");
    let list: Value = serde_json::from_slice(&body).unwrap();
    let events = list["events"].as_array().unwrap();
    for k in WANTED {
        let e = events
            .iter()
            .find(|e| e["type"] == *k && !e["files"]["clip"].is_null())
            .unwrap_or_else(|| panic!("the review page lists no {k} with a clip"));
        assert!(e["place"]["name"].is_string(), "{e}");
    }

    // Stopping it (SIGTERM; Ctrl-C at a terminal is SIGINT, which a shell
    // started in the background ignores, so a test cannot send it) ends
    // everything it started: exit 0, nothing left running or listening.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let stop = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            stop.elapsed() < Duration::from_secs(20),
            "the demo did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the demo exited {status}");
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/review")
        .parse()
        .unwrap();
    assert!(
        !wait_port(port, Duration::from_secs(2)),
        "the agent still serves {url} after the demo stopped"
    );
    let left = Command::new("pgrep")
        .args(["-af", &scratch.path().display().to_string()])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "still running after the demo stopped:\n{}",
        String::from_utf8_lossy(&left.stdout)
    );
}
