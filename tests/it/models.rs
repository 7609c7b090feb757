//! The model layer on real models and a real picture: both detectors, with
//! their different output decoders, find the car in the street photo.

use crate::common;

use common::*;
use ioc_agent::decode::Frame;
use ioc_agent::infer::manifest::Manifest;
use ioc_agent::infer::{Detector, init_runtime};

/// RGB picture → I420 frame (BT.601 limited range), as a camera decoder would give.
fn i420_from_rgb(img: &image::RgbImage) -> Frame {
    let (w, h) = (img.width() & !1, img.height() & !1);
    let mut f = Frame::blank(w, h);
    let cw = f.chroma_width();
    let px = |x: u32, y: u32| {
        let p = img.get_pixel(x, y).0;
        (p[0] as f32, p[1] as f32, p[2] as f32)
    };
    for y in 0..h {
        for x in 0..w {
            let (r, g, b) = px(x, y);
            f.y_mut()[(y * w + x) as usize] =
                (16.0 + 0.257 * r + 0.504 * g + 0.098 * b).round() as u8;
        }
    }
    for y in 0..h / 2 {
        for x in 0..w / 2 {
            let (r, g, b) = px(2 * x, 2 * y);
            f.u_mut()[y as usize * cw + x as usize] =
                (128.0 - 0.148 * r - 0.291 * g + 0.439 * b).round() as u8;
            f.v_mut()[y as usize * cw + x as usize] =
                (128.0 + 0.439 * r - 0.368 * g - 0.071 * b).round() as u8;
        }
    }
    f
}

fn street() -> Frame {
    let img = image::open(shared().join("images/street_1080p.jpg"))
        .unwrap()
        .to_rgb8();
    i420_from_rgb(&img)
}

fn detector(name: &str) -> Detector {
    let env = init_runtime(&ort_lib()).expect("ONNX Runtime (run `make ort`)");
    let m = Manifest::load(&root().join(format!("models/{name}.toml"))).unwrap();
    let path = model_dir().join(&m.file);
    Detector::load(env, m, &path, 1, None).unwrap()
}

fn finds_a_car(name: &str) {
    let frame = street();
    let mut det = detector(name);
    let dets = det.detect(&frame).unwrap();
    let labels = &det.manifest.labels;
    for d in &dets {
        println!(
            "{name}: {} {:.2} {:?}",
            labels[d.class],
            d.score,
            d.bbox.map(|v| v.round())
        );
    }
    let car = labels.iter().position(|l| l == "car").unwrap();
    let cars: Vec<_> = dets.iter().filter(|d| d.class == car).collect();
    assert!(!cars.is_empty(), "{name} found no car");
    // The plate sits at about (1749..1876, 742..856): the car around it is detected.
    assert!(
        cars.iter().any(|c| c.bbox[0] < 1749.0
            && c.bbox[2] > 1876.0
            && c.bbox[1] < 742.0
            && c.bbox[3] > 856.0),
        "{name}: no car box contains the plate"
    );
    for d in &dets {
        assert!(d.bbox[0] >= 0.0 && d.bbox[2] <= 1920.0 && d.bbox[1] >= 0.0 && d.bbox[3] <= 1080.0);
        assert!(d.score >= det.manifest.output.score_threshold());
    }
}

#[test]
fn yolox_finds_the_car() {
    finds_a_car("yolox_nano");
}

#[test]
fn nanodet_finds_the_car() {
    finds_a_car("nanodet_m");
}

/// Execution providers on this CPU-only ONNX Runtime: every accelerator in
/// the preference list is skipped with its reason, the session runs on the
/// CPU, and its detections equal those of a plain CPU session.
#[test]
fn accelerators_fall_back_to_the_cpu() {
    use ioc_agent::infer::providers::Provider;
    let env = init_runtime(&ort_lib()).unwrap();
    let m = Manifest::load(&root().join("models/yolox_nano.toml")).unwrap();
    let path = model_dir().join(&m.file);
    let available = ioc_agent::infer::providers::available();
    println!("this ONNX Runtime has: {available:?}");
    assert!(available.iter().any(|p| p == "CPUExecutionProvider"));
    let mut gpu = Detector::load_on(
        env,
        m.clone(),
        &path,
        1,
        None,
        &[
            Provider::TensorRt,
            Provider::Cuda,
            Provider::OpenVino,
            Provider::Cpu,
        ],
    )
    .expect("falls back to the CPU instead of failing");
    println!("chosen: {}", gpu.provider);
    for p in ["tensorrt", "cuda", "openvino"] {
        let accel = [Provider::TensorRt, Provider::Cuda, Provider::OpenVino]
            .into_iter()
            .find(|x| x.as_str() == p)
            .unwrap();
        if available.iter().any(|a| a == accel.ort_name()) {
            continue; // a GPU build: nothing to assert about this one here
        }
        assert!(
            gpu.provider
                .contains(&format!("{p} skipped: not built into")),
            "{p} not reported as skipped: {}",
            gpu.provider
        );
    }
    assert!(gpu.provider.starts_with("cpu"), "{}", gpu.provider);
    let mut cpu = Detector::load(env, m, &path, 1, None).unwrap();
    assert_eq!(cpu.provider, "cpu");
    let frame = street();
    let (a, b) = (gpu.detect(&frame).unwrap(), cpu.detect(&frame).unwrap());
    assert!(!a.is_empty());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.class, x.bbox), (y.class, y.bbox));
    }
}
