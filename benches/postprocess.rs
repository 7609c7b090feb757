//! Criterion benches of the per-frame CPU work around the model:
//! - preprocessing: the fused I420 → tensor pass at model size against the
//!   naive path (I420 → RGB at camera size → resize → tensor);
//! - the YOLOX output decoder with NMS on a realistic output;
//! - the tracker with 30 moving objects.
//!
//! Ratios are read side by side from one run (`make bench`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ioc_agent::decode::Frame;
use ioc_agent::infer::manifest::{ColorOrder, InputSpec, Layout, Letterbox};
use ioc_agent::infer::postprocess::{Detection, decode_yolox, nms};
use ioc_agent::infer::preprocess::i420_to_tensor;
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

fn bench_tracker(c: &mut Criterion) {
    c.bench_function("tracker_30_objects_100_frames", |b| {
        b.iter(|| {
            let mut t = Tracker::new(TrackerConfig::default());
            for f in 0..100 {
                let dets: Vec<Detection> = (0..30)
                    .map(|k| {
                        let x = (k * 60 + f * 4) as f32;
                        let y = (k % 6 * 150) as f32;
                        Detection {
                            class: 2,
                            score: 0.8,
                            bbox: [x, y, x + 50.0, y + 40.0],
                        }
                    })
                    .collect();
                black_box(t.update(&dets, f as f64 * 0.2).len());
            }
        })
    });
}

criterion_group!(benches, bench_preprocess, bench_decode, bench_tracker);
criterion_main!(benches);
