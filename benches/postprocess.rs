//! Criterion benches of the per-frame CPU work around the model:
//! - preprocessing: the fused I420 → tensor pass at model size against the
//!   naive path (I420 → RGB at camera size → resize → tensor);
//! - the YOLOX output decoder with NMS on a realistic output;
//! - the tracker with 100 and 500 objects per frame;
//! - rule evaluation (ten rules of different kinds) over 100 and 500 tracks.
//!
//! Ratios are read side by side from one run (`make bench`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench may panic on its own setup

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ioc_agent::decode::Frame;
use ioc_agent::infer::manifest::{ColorOrder, InputSpec, Layout, Letterbox};
use ioc_agent::infer::postprocess::{Detection, decode_yolox, nms};
use ioc_agent::infer::preprocess::i420_to_tensor;
use ioc_agent::rules::RuleEngine;
use ioc_agent::track::{Tracker, TrackerConfig};

fn spec() -> InputSpec {
    InputSpec {
        name: "images".into(),
        shape: [1, 3, 416, 416],
        layout: Layout::Nchw,
        color: ColorOrder::Bgr,
        letterbox: Letterbox::TopLeft,
        pad: 114.0,
        mean: [0.0; 3],
        std: [1.0; 3],
    }
}

/// A frame with some texture so nothing is trivially constant.
fn frame(w: u32, h: u32) -> Frame {
    let mut f = Frame::blank(w, h);
    for (i, v) in f.y_mut().iter_mut().enumerate() {
        *v = (i * 7 % 219 + 16) as u8;
    }
    for (i, v) in f.u_mut().iter_mut().enumerate() {
        *v = (i * 3 % 200 + 20) as u8;
    }
    for (i, v) in f.v_mut().iter_mut().enumerate() {
        *v = (i * 5 % 200 + 20) as u8;
    }
    f
}

/// The naive path: whole frame to RGB at camera size, then resize, then tensor.
fn naive(frame: &Frame, spec: &InputSpec, out: &mut Vec<f32>) {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let cw = frame.chroma_width();
    let mut rgb = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let c = 298 * (frame.y()[y * w + x] as i32 - 16);
            let d = frame.u()[(y / 2) * cw + x / 2] as i32 - 128;
            let e = frame.v()[(y / 2) * cw + x / 2] as i32 - 128;
            let i = (y * w + x) * 3;
            rgb[i] = ((c + 409 * e + 128) >> 8).clamp(0, 255) as u8;
            rgb[i + 1] = ((c - 100 * d - 208 * e + 128) >> 8).clamp(0, 255) as u8;
            rgb[i + 2] = ((c + 516 * d + 128) >> 8).clamp(0, 255) as u8;
        }
    }
    let img = image::RgbImage::from_raw(w as u32, h as u32, rgb).unwrap();
    let (mw, mh) = (spec.width(), spec.height());
    let r = (mw as f32 / w as f32).min(mh as f32 / h as f32);
    let (nw, nh) = ((w as f32 * r) as u32, (h as f32 * r) as u32);
    let small = image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle);
    out.clear();
    out.resize(3 * mw * mh, spec.pad);
    for y in 0..nh as usize {
        for x in 0..nw as usize {
            let p = small.get_pixel(x as u32, y as u32).0;
            out[y * mw + x] = p[2] as f32;
            out[mw * mh + y * mw + x] = p[1] as f32;
            out[2 * mw * mh + y * mw + x] = p[0] as f32;
        }
    }
}

fn bench_preprocess(c: &mut Criterion) {
    let s = spec();
    for (w, h) in [(1920u32, 1080u32), (1280, 720), (640, 360)] {
        let f = frame(w, h);
        let mut out = Vec::new();
        let mut g = c.benchmark_group(format!("preprocess_{w}x{h}_to_416"));
        g.bench_function("fused_i420_to_tensor", |b| {
            b.iter(|| i420_to_tensor(black_box(&f), &s, &mut out))
        });
        g.bench_function("naive_rgb_resize_tensor", |b| {
            b.iter(|| naive(black_box(&f), &s, &mut out))
        });
        g.finish();
    }
}

fn bench_decode(c: &mut Criterion) {
    // 3549 anchors x 85, with ~40 strong candidates around 8 objects.
    let mut rows = vec![0f32; 3549 * 85];
    for (i, r) in rows.chunks_mut(85).enumerate() {
        r[4] = if i % 90 < 5 { 0.9 } else { 0.01 };
        r[5 + (i % 80)] = 0.8;
        r[2] = 0.5;
        r[3] = 0.5;
    }
    c.bench_function("yolox_decode_nms_3549", |b| {
        b.iter(|| {
            let d = decode_yolox(black_box(&rows), 80, &[8, 16, 32], 416, 416, 0.3).unwrap();
            nms(d, 0.45)
        })
    });
}

/// `n` objects moving across a 1920x1080 frame, one frame of detections at `f`.
fn scene(n: usize, f: usize) -> Vec<Detection> {
    (0..n)
        .map(|k| {
            let row = (k / 25) as f32;
            let x = ((k % 25) as f32 * 76.0 + f as f32 * 3.0) % 1900.0;
            let y = (row * 52.0) % 1040.0;
            Detection {
                class: if k % 3 == 0 { 0 } else { 2 },
                score: 0.5 + (k % 5) as f32 * 0.1,
                bbox: [x, y, x + 40.0, y + 36.0],
            }
        })
        .collect()
}

fn bench_tracker(c: &mut Criterion) {
    let mut g = c.benchmark_group("tracker_update");
    for n in [100usize, 500] {
        let frames: Vec<Vec<Detection>> = (0..50).map(|f| scene(n, f)).collect();
        g.bench_function(format!("{n}_objects_per_frame"), |b| {
            b.iter_batched(
                || {
                    // Warm tracker with live tracks, then measure one update.
                    let mut t = Tracker::new(TrackerConfig::default());
                    for (f, d) in frames.iter().enumerate().take(10) {
                        t.update(d, f as f64 * 0.2);
                    }
                    t
                },
                |mut t| black_box(t.update(&frames[10], 2.0).len()),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// A camera with every kind of rule that needs no signal.
fn busy_camera() -> ioc_agent::config::CameraConfig {
    #[derive(serde::Deserialize)]
    struct W {
        cameras: Vec<ioc_agent::config::CameraConfig>,
    }
    let text = r#"
[[cameras]]
id = "c"
url = "rtsp://x/y"
[[cameras.zones]]
name = "z"
polygon = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]
[[cameras.lines]]
name = "l"
points = [[0.5, 0.0], [0.5, 1.0]]
[[cameras.lanes]]
name = "lane"
polygon = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]
direction = [[0.1, 0.7], [0.9, 0.7]]
classes = ["car"]
[cameras.calibration]
image = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]
world = [[0.0, 0.0], [100.0, 0.0], [100.0, 20.0], [0.0, 20.0]]
[[cameras.rules]]
kind = "zone_enter"
zone = "z"
[[cameras.rules]]
kind = "line_cross"
line = "l"
[[cameras.rules]]
kind = "wrong_way"
lane = "lane"
[[cameras.rules]]
kind = "lane_class"
lane = "lane"
[[cameras.rules]]
kind = "illegal_stop"
zone = "z"
[[cameras.rules]]
kind = "sidewalk"
zone = "z"
[[cameras.rules]]
kind = "speeding"
speed_limit_kmh = 60.0
[[cameras.rules]]
kind = "overload"
[[cameras.rules]]
kind = "crowd"
zone = "z"
max_count = 20
[[cameras.rules]]
kind = "loitering"
zone = "z"
"#;
    toml::from_str::<W>(text).unwrap().cameras.remove(0)
}

fn bench_rules(c: &mut Criterion) {
    let labels: Vec<String> = ["person", "bicycle", "car", "motorcycle"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut g = c.benchmark_group("rules_evaluate_10_rules");
    for n in [100usize, 500] {
        let mut t = Tracker::new(TrackerConfig::default());
        let mut tracks = Vec::new();
        for f in 0..20 {
            tracks = t.update(&scene(n, f), f as f64 * 0.2).to_vec();
        }
        let cam = busy_camera();
        g.bench_function(format!("{n}_tracks_per_frame"), |b| {
            b.iter_batched(
                || RuleEngine::new(&cam.rule_setup(), &labels).unwrap(),
                |mut e| {
                    black_box(
                        e.evaluate(&tracks, 1920, 1080, 4.0, std::time::SystemTime::now())
                            .len(),
                    )
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_preprocess,
    bench_decode,
    bench_tracker,
    bench_rules
);
criterion_main!(benches);
