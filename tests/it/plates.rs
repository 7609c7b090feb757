//! The plate cascade on a real picture: YOLOX finds the car, the HyperLPR3
//! detector finds its plate and its corners, the PaddleOCR reader reads the
//! rectified plate. The plate is Chinese (`苏E·D51712`); the reader's alphabet
//! has Latin letters and digits only, so it must read `ED51712`, and the
//! Vietnamese plate check must mark it low-confidence (not a VN pattern).

use crate::common;

use common::*;

#[test]
fn reads_the_plate_in_the_street_photo() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("plates.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"agent_id = "plates"
data_dir = "{data}"
manifest_dir = "{manifests}"
model_dir = "{models}"
onnxruntime = "{ort}"
[mqtt]
url = "mqtt://127.0.0.1:1"
[[models]]
name = "yolox_nano"
[[models]]
name = "hyperlpr3_plate"
[[models]]
name = "ppocr_plate_reader"
[evidence.plates]
detector = "hyperlpr3_plate"
reader = "ppocr_plate_reader"
"#,
            data = dir.path().display(),
            manifests = root().join("models").display(),
            models = model_dir().display(),
            ort = ort_lib().display(),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["read-plates", "--config"])
        .arg(&cfg)
        .arg(shared().join("images/street_1080p.jpg"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "read-plates failed");
    let car = text
        .lines()
        .find(|l| l.contains("raw=\"ED51712\""))
        .unwrap_or_else(|| panic!("ED51712 not read: {text}"));
    // Where ASSETS.md saw it: box ≈ [1749, 742, 1876, 856].
    assert!(car.contains("box=[17"), "{car}");
    assert!(
        car.contains("valid=false"),
        "a Chinese plate is not a VN plate: {car}"
    );
    let conf: f32 = car
        .split("confidence=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    // Invalid readings are reported at half the reader's confidence.
    assert!(conf > 0.3 && conf <= 0.5, "confidence {conf}");
}

#[test]
fn read_plates_without_plate_models_says_what_to_add() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "agent_id = \"p\"\nmanifest_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[[models]]\nname = \"yolox_nano\"\n",
            root().join("models").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["read-plates", "--config"])
        .arg(&cfg)
        .arg(shared().join("images/street_1080p.jpg"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("[evidence.plates]"), "{err}");
}
