//! What a user sees when the input is wrong: config problems located as
//! file:line:column, missing or corrupt models and a missing ONNX Runtime
//! named with their path — never a panic.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn no_panic(o: &Output) {
    let e = stderr(o);
    assert!(
        !e.contains("panicked") && !e.contains("RUST_BACKTRACE"),
        "panic:\n{e}"
    );
}

const GOOD: &str = r#"agent_id = "w1"
manifest_dir = "MANIFESTS"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[[models]]
name = "yolox_nano"

[[cameras]]
id = "c1"
url = "rtsp://10.0.0.2/stream"

[[cameras.zones]]
name = "z"
polygon = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]

[[cameras.rules]]
kind = "zone_enter"
zone = "z"
classes = ["car"]
"#;

fn write_cfg(dir: &Path, text: &str) -> String {
    let p = dir.join("agent.toml");
    std::fs::write(
        &p,
        text.replace("MANIFESTS", &root().join("models").display().to_string()),
    )
    .unwrap();
    p.display().to_string()
}

fn check(text: &str) -> (Output, String) {
    let d = tempfile::tempdir().unwrap();
    let p = write_cfg(d.path(), text);
    (run(&["check-config", &p]), p)
}

#[test]
fn good_config_passes() {
    let (o, _) = check(GOOD);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn unknown_key_is_located() {
    let (o, p) = check(&GOOD.replace("id = \"c1\"", "id = \"c1\"\ndetect_fsp = 5"));
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    // [[cameras]] is on line 10; id on 11; the typo on 12.
    assert!(
        e.contains(&format!("{p}:12:1: unknown field `detect_fsp`")),
        "{e}"
    );
    no_panic(&o);
}

#[test]
fn bad_polygons_are_located() {
    let (o, p) = check(&GOOD.replace(
        "[[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]",
        "[[0.1, 0.1], [0.9, 0.1]]",
    ));
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "{p}:16:11: zone 'z': a polygon needs at least 3 points, got 2"
        )),
        "{e}"
    );

    let (o, p) = check(&GOOD.replace("[0.9, 0.9]]", "[1.5, 0.9]]"));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("{p}:16:11:")) && e.contains("outside the frame") && e.contains("0..1"),
        "{e}"
    );

    // A huge polygon (a setup save once grew the config to 1.7 MB this way).
    let many: Vec<String> = (0..100_000)
        .map(|i| format!("[{:.5}, 0.5]", i as f64 / 100_000.0))
        .collect();
    let (o, p) = check(&GOOD.replace(
        "[[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]",
        &format!("[{}]", many.join(", ")),
    ));
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("{p}:16:11:")) && e.contains("100000 points; at most 64"),
        "{e}"
    );
}

#[test]
fn semantic_errors_name_the_fix() {
    let (o, p) = check(
        &GOOD
            .replace("zone = \"z\"", "zone = \"zz\"")
            .replace("[\"car\"]", "[\"cars\"]"),
    );
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "{p}:20:8: zone 'zz' is not defined for camera 'c1'"
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "{p}:21:11: class 'cars' is not a label of model 'yolox_nano'"
        )),
        "{e}"
    );
    let (o, _) = check(&GOOD.replace("rtsp://10.0.0.2/stream", "http://10.0.0.2/stream"));
    assert!(
        stderr(&o).contains("must start with rtsp://"),
        "{}",
        stderr(&o)
    );
    let (o, _) = check(&GOOD.replace("kind = \"zone_enter\"", "kind = \"zone_entry\""));
    assert!(
        stderr(&o).contains(":19:8:") && stderr(&o).contains("unknown variant"),
        "{}",
        stderr(&o)
    );
}

/// Geometry mistakes of the rule engine, each located in the file.
#[test]
fn lanes_calibration_and_schedules_are_checked() {
    let cam = |extra: &str| GOOD.to_string() + extra;
    // A rule naming a zone that does not exist.
    let (o, p) = check(&cam(
        "\n[[cameras.rules]]\nkind = \"loitering\"\nzone = \"nowhere\"\n",
    ));
    assert!(
        stderr(&o).contains(&format!("{p}:25:8: zone 'nowhere' is not defined")),
        "{}",
        stderr(&o)
    );
    // A lane without a direction.
    let (o, p) = check(&cam(
        "\n[[cameras.lanes]]\nname = \"l1\"\npolygon = [[0, 0.5], [1, 0.5], [1, 1]]\n",
    ));
    assert!(
        stderr(&o).contains(&format!("{p}:24:8: lane 'l1' has no direction")),
        "{}",
        stderr(&o)
    );
    // A calibration with three points.
    let (o, p) = check(&cam(
        "\n[cameras.calibration]\nimage = [[0, 0.5], [1, 0.5], [1, 1]]\nworld = [[0, 0], [10, 0], [10, 5]]\n",
    ));
    assert!(
        stderr(&o).contains(&format!(
            "{p}:24:9: calibration needs at least 4 image points"
        )),
        "{}",
        stderr(&o)
    );
    // A schedule with a bad time zone, and a bad time.
    let (o, p) = check(&cam(
        "\n[[cameras.rules]]\nkind = \"intrusion\"\nzone = \"z\"\nschedule = { start = \"25:00\", end = \"05:00\", tz = \"Asia/Hanoi_City\" }\n",
    ));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("{p}:26:22: '25:00' is not a time of day")),
        "{e}"
    );
    assert!(
        e.contains(&format!("{p}:26:51: 'Asia/Hanoi_City' is not a time zone")),
        "{e}"
    );
    // A cascade rule without a model, and one with a label its model lacks.
    let (o, _) = check(&cam("\n[[cameras.rules]]\nkind = \"no_helmet\"\n"));
    assert!(
        stderr(&o).contains("rule 'no_helmet' needs `model"),
        "{}",
        stderr(&o)
    );
    let (o, p) = check(&cam(
        "\n[[cameras.rules]]\nkind = \"fire_smoke\"\nmodel = \"yolox_nano\"\nlabels = [\"fire\"]\n",
    ));
    assert!(
        stderr(&o).contains(&format!(
            "{p}:26:10: label 'fire' is not a label of model 'yolox_nano'"
        )),
        "{}",
        stderr(&o)
    );
    // Speeding without calibration or limit.
    let (o, _) = check(&cam("\n[[cameras.rules]]\nkind = \"speeding\"\n"));
    let e = stderr(&o);
    assert!(
        e.contains("speed_limit_kmh") && e.contains("[cameras.calibration]"),
        "{e}"
    );
    no_panic(&o);
}

#[test]
fn every_shipped_config_is_valid() {
    let mut n = 0;
    for e in std::fs::read_dir(root().join("configs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let o = run(&["check-config", p.to_str().unwrap()]);
            assert!(o.status.success(), "{}: {}", p.display(), stderr(&o));
            n += 1;
        }
    }
    assert!(n >= 1);
}

/// A config that starts the real runtime with a given model dir and runtime path.
fn run_cfg(model_dir: &Path, ort: &Path) -> Output {
    let d = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\nmodel_dir = \"{}\"\nonnxruntime = \"{}\"\n",
        GOOD.split("\n[mqtt]").next().unwrap(),
        model_dir.display(),
        ort.display()
    ) + "\n[mqtt]"
        + GOOD.split("\n[mqtt]").nth(1).unwrap();
    let p = write_cfg(d.path(), &text);
    let mut child = Command::new(BIN)
        .args(["run", "--config", &p])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A startup error ends the process at once; don't wait forever if it doesn't.
    for _ in 0..200 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

#[test]
fn missing_model_file_names_the_path() {
    let empty = tempfile::tempdir().unwrap();
    let o = run_cfg(empty.path(), &ort_lib());
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    let want = empty.path().join("yolox_nano.onnx");
    assert!(
        e.contains(&format!("model file {} is missing", want.display()))
            && e.contains("models pull"),
        "{e}"
    );
    no_panic(&o);
}

#[test]
fn corrupt_model_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(model_dir().join("yolox_nano.onnx")).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(dir.path().join("yolox_nano.onnx"), &bytes).unwrap();
    let o = run_cfg(dir.path(), &ort_lib());
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains(&dir.path().join("yolox_nano.onnx").display().to_string())
            && e.contains("sha256"),
        "{e}"
    );
    no_panic(&o);
}

#[test]
fn missing_onnxruntime_names_the_path_and_version() {
    let o = run_cfg(
        &model_dir(),
        Path::new("/nonexistent/libonnxruntime.so.1.31.1"),
    );
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("/nonexistent/libonnxruntime.so.1.31.1") && e.contains("ONNX Runtime 1.31.1"),
        "{e}"
    );
    no_panic(&o);
}

#[test]
fn models_pull_verifies_the_mirror() {
    let mirror = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(model_dir().join("nanodet_m_320.onnx")).unwrap();
    bytes.truncate(bytes.len() / 2);
    let bad = mirror.path().join("nanodet_m_320.onnx");
    std::fs::write(&bad, &bytes).unwrap();
    let manifests = root().join("models");
    let o = run(&[
        "models",
        "pull",
        "--manifests",
        manifests.to_str().unwrap(),
        "--dest",
        dest.path().to_str().unwrap(),
        "--mirror",
        mirror.path().to_str().unwrap(),
        "nanodet_m",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&bad.display().to_string()) && e.contains("sha256"),
        "{e}"
    );
    // Nothing is left under the final name.
    assert!(!dest.path().join("nanodet_m_320.onnx").exists());

    // A good mirror: copied, verified, then idempotent.
    let good = shared().join("models");
    let args = [
        "models",
        "pull",
        "--manifests",
        manifests.to_str().unwrap(),
        "--dest",
        dest.path().to_str().unwrap(),
        "--mirror",
        good.to_str().unwrap(),
    ];
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("copied from"));
    let o = run(&args);
    assert!(String::from_utf8_lossy(&o.stdout).contains("already in"));
}

#[test]
fn simulate_rejects_bad_streams() {
    let o = run(&["simulate", "--listen", "127.0.0.1:0", "--stream", "nofile"]);
    assert!(stderr(&o).contains("NAME=FILE"), "{}", stderr(&o));
    let o = run(&[
        "simulate",
        "--listen",
        "127.0.0.1:0",
        "--stream",
        "a=/nonexistent.mp4",
    ]);
    assert!(
        stderr(&o).contains("/nonexistent.mp4 does not exist"),
        "{}",
        stderr(&o)
    );
    no_panic(&o);
}

/// Throughput settings are checked and located: an unknown execution
/// provider, a priority out of range, `decoder` together with `decoders`.
#[test]
fn throughput_settings_are_checked() {
    let (o, p) = check(&GOOD.replace(
        "name = \"yolox_nano\"",
        "name = \"yolox_nano\"\nproviders = [\"cuda\", \"gpu\"]\nworkers = 2",
    ));
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("{p}:9:22: unknown execution provider 'gpu'"))
            && e.contains("tensorrt"),
        "{e}"
    );
    let (o, p) = check(&GOOD.replace(
        "id = \"c1\"",
        "id = \"c1\"\npriority = 0\ndecoder = \"avdec_h264\"\ndecoders = [\"vah264dec\", \"avdec_h264\"]",
    ));
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("{p}:11:6: priority must be in (0, 100]")),
        "{e}"
    );
    assert!(e.contains("set either `decoder`"), "{e}");
    no_panic(&o);
    let (o, _) = check(&GOOD.replace(
        "id = \"c1\"",
        "id = \"c1\"\npriority = 2.5\ndecoder_threads = 1\ndecoders = [\"vah264dec\", \"avdec_h264\"]",
    ));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A folder sealed by the agent's key, then edited and re-signed by a forger
/// with a fresh key: `verify` without a pinned key refuses to judge it, with
/// the agent's key it fails, and only the forger's own key accepts it.
#[test]
fn verify_needs_a_pinned_key_and_refuses_a_resigned_folder() {
    use ioc_agent::evidence::sign::{self, Manifest};
    let d = tempfile::tempdir().unwrap();
    let agent_key = sign::load_or_create_key(&d.path().join("agent.key")).unwrap();
    let ev = d.path().join("E1");
    std::fs::create_dir(&ev).unwrap();
    std::fs::write(ev.join("clip.mp4"), vec![7u8; 4000]).unwrap();
    let manifest = || Manifest {
        schema: sign::MANIFEST_SCHEMA.into(),
        event_id: "E1".into(),
        agent_id: "ward-1".into(),
        camera: "cam".into(),
        place: None,
        time: "2026-12-01T10:00:00Z".into(),
        time_source: "agent_clock".into(),
        sealed_at: "2026-12-01T10:00:01Z".into(),
        files: vec![],
        clip: None,
        public_key: String::new(),
        key_id: String::new(),
    };
    sign::seal(&ev, &["clip.mp4"], manifest(), &agent_key).unwrap();
    let pinned = hex::encode(agent_key.verifying_key().as_bytes());
    let dir = ev.to_str().unwrap();
    let ok = run(&["verify", dir, "--key", &pinned]);
    assert!(ok.status.success(), "{}", stderr(&ok));

    // The forgery: a changed clip, re-hashed and re-signed with a fresh key.
    std::fs::write(ev.join("clip.mp4"), vec![8u8; 4000]).unwrap();
    let forger = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    sign::seal(&ev, &["clip.mp4"], manifest(), &forger).unwrap();

    let no_key = run(&["verify", dir]);
    no_panic(&no_key);
    assert_eq!(no_key.status.code(), Some(2));
    let out = String::from_utf8_lossy(&no_key.stdout);
    assert!(
        out.starts_with("UNVERIFIED:") && out.contains("--key") && out.contains("--trust"),
        "{out}"
    );
    assert!(!out.contains("OK"));

    let with_agent_key = run(&["verify", dir, "--key", &pinned]);
    assert_eq!(with_agent_key.status.code(), Some(1));
    let out = String::from_utf8_lossy(&with_agent_key.stdout);
    assert!(out.contains("not among the trusted keys"), "{out}");

    let key_file = d.path().join("ward-1.pub");
    std::fs::write(&key_file, &pinned).unwrap();
    let from_file = run(&["verify", dir, "--key-file", key_file.to_str().unwrap()]);
    assert_eq!(from_file.status.code(), Some(1));
    let from_trust = run(&["verify", dir, "--trust", key_file.to_str().unwrap()]);
    assert_eq!(from_trust.status.code(), Some(1));

    let bad = run(&["verify", dir, "--key", "nothex"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("64 hex digits"), "{}", stderr(&bad));
}

/// `key show` never creates a key (the service user does, on first start);
/// `key rotate` retires the key and old evidence still verifies with the
/// agent's own keys (`--config`) and with the trust file `key trust` prints,
/// but not with the new key alone.
#[test]
fn key_rotation_keeps_old_evidence_verifiable() {
    use ioc_agent::evidence::sign::{self, Manifest};
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "agent_id = \"ward-9\"\ndata_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n",
            d.path().join("data").display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let show = run(&["key", "show", "-c", c]);
    assert!(!show.status.success());
    assert!(stderr(&show).contains("first start"), "{}", stderr(&show));
    assert!(
        !d.path().join("data/agent.key").exists(),
        "key show created a key"
    );

    let key = sign::load_or_create_key(&d.path().join("data/agent.key")).unwrap();
    let ev = d.path().join("E7");
    std::fs::create_dir(&ev).unwrap();
    std::fs::write(ev.join("clip.mp4"), vec![1u8; 100]).unwrap();
    let m = Manifest {
        schema: sign::MANIFEST_SCHEMA.into(),
        event_id: "E7".into(),
        agent_id: "ward-9".into(),
        camera: "cam".into(),
        place: None,
        time: "2026-12-01T10:00:00Z".into(),
        time_source: "agent_clock".into(),
        sealed_at: "2026-12-01T10:00:01Z".into(),
        files: vec![],
        clip: None,
        public_key: String::new(),
        key_id: String::new(),
    };
    sign::seal(&ev, &["clip.mp4"], m, &key).unwrap();
    let show = run(&["key", "show", "-c", c]);
    assert!(show.status.success(), "{}", stderr(&show));
    let old_hex = String::from_utf8_lossy(&show.stdout).trim().to_string();
    assert!(stderr(&show).contains(&sign::key_id(&key.verifying_key())));

    let rot = run(&["key", "rotate", "-c", c]);
    assert!(rot.status.success(), "{}", stderr(&rot));
    let new_hex = String::from_utf8_lossy(&rot.stdout).trim().to_string();
    assert_ne!(new_hex, old_hex);
    assert!(
        stderr(&rot).contains("Restart the agent"),
        "{}",
        stderr(&rot)
    );

    let dir = ev.to_str().unwrap();
    let mine = run(&["verify", dir, "-c", c]);
    let out = String::from_utf8_lossy(&mine.stdout);
    assert!(
        mine.status.success() && out.contains("(retired "),
        "{out}{}",
        stderr(&mine)
    );
    let trust = run(&["key", "trust", "-c", c]);
    assert!(trust.status.success(), "{}", stderr(&trust));
    let text = String::from_utf8_lossy(&trust.stdout).to_string();
    assert!(text.contains(&old_hex) && text.contains(&new_hex), "{text}");
    let tf = d.path().join("ward-9.trust");
    std::fs::write(&tf, &text).unwrap();
    assert!(
        run(&["verify", dir, "--trust", tf.to_str().unwrap()])
            .status
            .success()
    );
    let only_new = run(&["verify", dir, "--key", &new_hex]);
    assert_eq!(only_new.status.code(), Some(1));

    // A genuine folder copied under another event's id is refused.
    let copy = d.path().join("E8");
    std::fs::rename(&ev, &copy).unwrap();
    let moved = run(&["verify", copy.to_str().unwrap(), "-c", c]);
    assert_eq!(moved.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&moved.stdout).contains("named 'E8'"));
}

/// Geometry a setup save (or a hand edit) can grow without bound is capped:
/// zones, lines, lanes per camera, and names (length, control characters).
/// Free text stays free: Vietnamese and punctuation are fine.
#[test]
fn geometry_counts_and_names_are_bounded() {
    let zones: String = (0..33)
        .map(|i| format!("[[cameras.zones]]\nname = \"z{i}\"\npolygon = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]\n"))
        .collect();
    let (o, _) = check(&GOOD.replace(
        "[[cameras.zones]]\nname = \"z\"\npolygon = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]\n",
        &format!("[[cameras.zones]]\nname = \"z\"\npolygon = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]\n{zones}"),
    ));
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("34 zones; at most 32"), "{e}");

    let long = "x".repeat(65);
    let (o, _) = check(
        &GOOD
            .replace("name = \"z\"", &format!("name = \"{long}\""))
            .replace("zone = \"z\"", &format!("zone = \"{long}\"")),
    );
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("65 characters; at most 64"), "{e}");

    let (o, _) = check(
        &GOOD
            .replace("name = \"z\"", "name = \"a\\nb\"")
            .replace("zone = \"z\"", "zone = \"a\\nb\""),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("control character"), "{}", stderr(&o));

    let (o, _) = check(
        &GOOD
            .replace("name = \"z\"", "name = \"Vạch dừng — ngã tư (Hàng Bạc)\"")
            .replace("zone = \"z\"", "zone = \"Vạch dừng — ngã tư (Hàng Bạc)\""),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    no_panic(&o);
}

/// `controller_key` is checked where it is written; topics without one are
/// accepted with a warning that names the fix.
#[test]
fn signal_keys_are_checked_and_open_topics_warned() {
    let public = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .verifying_key()
            .as_bytes(),
    );
    let other = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[9; 32])
            .verifying_key()
            .as_bytes(),
    );
    let cam = |id: &str, signal: &str| {
        format!(
            "\n[[cameras]]\nid = \"{id}\"\nurl = \"rtsp://10.0.0.3/s\"\n[cameras.signal]\n{signal}\n"
        )
    };
    let mqtt = |key: &str| format!("source = \"mqtt\"\ntopic = \"controllers/j1/signal\"\n{key}");

    let (o, _) = check(&(GOOD.to_string() + &cam("s1", &mqtt(""))));
    let e = stderr(&o);
    println!("{e}");
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("warning: signal states on controllers/j1/signal are trusted from any client")
            && e.contains("controller_key")
            && e.contains("broker ACL"),
        "{e}"
    );

    let with_key = mqtt(&format!("controller_key = \"{public}\""));
    let (o, _) = check(&(GOOD.to_string() + &cam("s1", &with_key)));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));

    let (o, p) = check(&(GOOD.to_string() + &cam("s1", &mqtt("controller_key = \"00zz\""))));
    assert!(
        stderr(&o).contains(&format!("{p}:29:18: controller_key is not hex")),
        "{}",
        stderr(&o)
    );

    // A key file: relative to the config, hex on the first line.
    let d = tempfile::tempdir().unwrap();
    let text = GOOD.to_string() + &cam("s1", &mqtt("controller_key_file = \"j1.pub\""));
    let p = write_cfg(d.path(), &text);
    let o = run(&["check-config", &p]);
    assert!(
        stderr(&o).contains("cannot read controller_key_file") && stderr(&o).contains("j1.pub"),
        "{}",
        stderr(&o)
    );
    std::fs::write(d.path().join("j1.pub"), format!("{public}\n")).unwrap();
    let o = run(&["check-config", &p]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Cameras on one topic must trust the same controller.
    let text = GOOD.to_string()
        + &cam("s1", &with_key)
        + &cam("s2", &mqtt(&format!("controller_key = \"{other}\"")));
    let (o, _) = check(&text);
    assert!(
        stderr(&o).contains("cameras 's1' and 's2' read signal topic 'controllers/j1/signal' but trust different controller keys"),
        "{}",
        stderr(&o)
    );
    let image = format!(
        "source = \"image\"\nred_lamp = [[0.1, 0.1], [0.2, 0.2]]\ngreen_lamp = [[0.1, 0.3], [0.2, 0.4]]\ncontroller_key = \"{public}\""
    );
    let (o, _) = check(&(GOOD.to_string() + &cam("s1", &image)));
    assert!(
        stderr(&o).contains("controller_key applies to source = \"mqtt\" only"),
        "{}",
        stderr(&o)
    );
}

/// `signal keygen` and `signal sign` make what the agent takes: the signed
/// message passes the agent's own check with the printed public key, on its
/// topic only.
#[test]
fn signal_keygen_and_sign_make_messages_the_agent_takes() {
    use ioc_agent::rules::controller::{Gate, Refusal, TopicTrust, parse_key};
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("j1.key");
    let k = key.to_str().unwrap();
    let o = run(&["signal", "keygen", "--out", k]);
    assert!(o.status.success(), "{}", stderr(&o));
    let public = String::from_utf8(o.stdout).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = run(&["signal", "keygen", "--out", k]);
    assert!(!again.status.success() && stderr(&again).contains("never overwritten"));

    let topic = "controllers/j1/north/signal";
    let o = run(&[
        "signal",
        "sign",
        "--key",
        k,
        "--topic",
        topic,
        "--controller",
        "j1",
        "red",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let msg = String::from_utf8(o.stdout).unwrap();
    println!("{msg}");
    let trust = TopicTrust {
        key: Some(parse_key(&public).unwrap()),
        max_age: std::time::Duration::from_secs(10),
    };
    let now = chrono::Utc::now();
    let got = Gate::default()
        .check(topic, msg.trim().as_bytes(), &trust, now)
        .unwrap();
    assert_eq!(got.light, ioc_agent::rules::Light::Red);
    assert_eq!(
        Gate::default().check(
            "controllers/j1/east/signal",
            msg.trim().as_bytes(),
            &trust,
            now
        ),
        Err(Refusal::BadSignature)
    );
    let bad = run(&[
        "signal",
        "sign",
        "--key",
        k,
        "--topic",
        topic,
        "--controller",
        "j1",
        "purple",
    ]);
    assert!(stderr(&bad).contains("not one of red, yellow, green, unknown"));
}

/// Numbers that are NaN, infinite or huge are refused by `check-config`,
/// naming the key (they used to pass and then panic the camera task).
#[test]
fn non_finite_and_huge_numbers_are_refused() {
    let cases = [
        ("connect_timeout_secs = nan", "connect_timeout_secs"),
        ("inactivity_timeout_secs = inf", "inactivity_timeout_secs"),
        ("backoff_min_secs = nan", "backoff_min_secs"),
        ("backoff_max_secs = inf", "backoff_max_secs"),
        (
            "backoff_min_secs = 1e19\nbackoff_max_secs = 1e19",
            "backoff_min_secs",
        ),
        ("thumbnail_max_side = 0", "thumbnail_max_side"),
        ("thumbnail_max_side = 100000", "thumbnail_max_side"),
        ("detect_fps = nan", "detect_fps"),
        ("priority = inf", "priority"),
    ];
    for (line, key) in cases {
        let (o, _) = check(&GOOD.replace("id = \"c1\"", &format!("id = \"c1\"\n{line}")));
        no_panic(&o);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{line} passed: {e}");
        assert!(
            e.contains(key),
            "{line}: the message does not name {key}: {e}"
        );
    }
    let sig = "[cameras.signal]\nsource = \"mqtt\"\ntopic = \"ward/sig\"\nmax_age_secs = inf\n";
    let (o, _) = check(&GOOD.replace("[[cameras.zones]]", &format!("{sig}\n[[cameras.zones]]")));
    no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("max_age_secs"), "{}", stderr(&o));
    for (sec, line, key) in [
        ("[mqtt]", "status_interval_secs = 0", "status_interval_secs"),
        (
            "[mqtt]",
            "stats_interval_secs = 100000000000",
            "stats_interval_secs",
        ),
    ] {
        let (o, _) = check(&GOOD.replace(sec, &format!("{sec}\n{line}")));
        no_panic(&o);
        assert_eq!(o.status.code(), Some(1), "{line} passed: {}", stderr(&o));
        assert!(stderr(&o).contains(key), "{}", stderr(&o));
    }
}
