//! The package's pictures: the annotated thumbnail and overview, track
//! close-up crops, the YUV↔RGB conversions they need and JPEG encoding.

use image::{ImageEncoder, RgbImage};

use crate::decode::Frame;
use crate::rules::Geometry;

use super::font;

/// RGB crop of `bbox` (frame pixels) grown by `margin` of its size on each
/// side, scaled so its longest side is at most `max_side`.
pub fn crop_rgb(
    frame: &Frame,
    bbox: [f32; 4],
    margin: f32,
    max_side: u32,
) -> Option<image::RgbImage> {
    let (fw, fh) = (frame.width as f32, frame.height as f32);
    let (w, h) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
    if w < 2.0 || h < 2.0 {
        return None;
    }
    let x0 = (bbox[0] - w * margin).clamp(0.0, fw - 1.0);
    let y0 = (bbox[1] - h * margin).clamp(0.0, fh - 1.0);
    let x1 = (bbox[2] + w * margin).clamp(x0 + 1.0, fw);
    let y1 = (bbox[3] + h * margin).clamp(y0 + 1.0, fh);
    let (cw, ch) = (x1 - x0, y1 - y0);
    let scale = (max_side as f32 / cw.max(ch)).min(1.0);
    let (ow, oh) = (
        ((cw * scale).round() as u32).max(1),
        ((ch * scale).round() as u32).max(1),
    );
    let (y, u, v) = (frame.y(), frame.u(), frame.v());
    let cwid = frame.chroma_width();
    let mut img = RgbImage::new(ow, oh);
    for oy in 0..oh {
        let sy = ((y0 + (oy as f32 + 0.5) / scale) as usize).min(frame.height as usize - 1);
        for ox in 0..ow {
            let sx = ((x0 + (ox as f32 + 0.5) / scale) as usize).min(frame.width as usize - 1);
            img.put_pixel(
                ox,
                oy,
                image::Rgb(yuv_px(
                    y[sy * frame.width as usize + sx],
                    u[(sy / 2) * cwid + sx / 2],
                    v[(sy / 2) * cwid + sx / 2],
                )),
            );
        }
    }
    Some(img)
}

fn yuv_px(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (y as i32 - 16);
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    [
        ((c + 409 * e + 128) >> 8).clamp(0, 255) as u8,
        ((c - 100 * d - 208 * e + 128) >> 8).clamp(0, 255) as u8,
        ((c + 516 * d + 128) >> 8).clamp(0, 255) as u8,
    ]
}

/// An I420 frame from an RGB picture (BT.601 limited range), e.g. a JPEG.
pub fn rgb_to_frame(img: &image::RgbImage) -> Frame {
    let (w, h) = (img.width() & !1, img.height() & !1);
    let mut f = Frame::blank(w.max(2), h.max(2));
    let cw = f.chroma_width();
    for yy in 0..h {
        for xx in 0..w {
            let p = img.get_pixel(xx, yy).0;
            let (r, g, b) = (p[0] as i32, p[1] as i32, p[2] as i32);
            let yv = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
            f.y_mut()[(yy * w + xx) as usize] = yv.clamp(0, 255) as u8;
            if yy % 2 == 0 && xx % 2 == 0 {
                let uv = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
                let vv = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
                let i = (yy / 2) as usize * cw + (xx / 2) as usize;
                f.u_mut()[i] = uv.clamp(0, 255) as u8;
                f.v_mut()[i] = vv.clamp(0, 255) as u8;
            }
        }
    }
    f
}

pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, image::ImageError> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality).write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(bytes)
}

/// Burns `text` into `img` at (x, y) in white on a dark band.
pub fn burn_text(img: &mut RgbImage, x: u32, y: u32, text: &str, scale: usize) {
    let w = font::text_width(text, scale) as u32 + 2 * scale as u32;
    let h = ((font::GLYPH_H + 2) * scale) as u32;
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            let p = img.get_pixel_mut(xx, yy);
            p.0 = p.0.map(|c| c / 4);
        }
    }
    let (iw, ih) = (img.width(), img.height());
    font::render(text, scale, |px, py| {
        let (gx, gy) = (x + scale as u32 + px as u32, y + scale as u32 + py as u32);
        if gx < iw && gy < ih {
            img.put_pixel(gx, gy, image::Rgb([255, 255, 255]));
        }
    });
}

/// The overview picture: the decision frame with geometry, boxes and track
/// ids drawn, and the banner (camera, place, time and rule; one band per
/// line) burned in.
pub fn overview(
    frame: &Frame,
    max_side: u32,
    geometry: Option<&Geometry>,
    boxes: &[([f32; 4], u64)],
    banner: &str,
) -> Result<Jpeg, image::ImageError> {
    let mut img = frame_to_rgb(frame, max_side);
    let only: Vec<[f32; 4]> = boxes.iter().map(|b| b.0).collect();
    annotate(&mut img, geometry, &only);
    let scale = ((img.width() / 640) as usize).max(1) + 1;
    let (w, h) = (img.width() as f32, img.height() as f32);
    for (b, id) in boxes {
        let label = format!("#{id}");
        let ly = ((b[1] * h) as u32).saturating_sub(((font::GLYPH_H + 2) * scale) as u32);
        burn_text(&mut img, (b[0] * w) as u32, ly, &label, scale);
    }
    // One band per line of the banner, top left.
    let line_h = ((font::GLYPH_H + 2) * scale) as u32;
    for (i, line) in banner.lines().enumerate() {
        burn_text(&mut img, 0, i as u32 * line_h, line, scale);
    }
    let bytes = encode_jpeg(&img, 90)?;
    Ok(Jpeg {
        bytes,
        width: img.width(),
        height: img.height(),
    })
}

/// A JPEG with its size.
#[derive(Debug, Clone)]
pub struct Jpeg {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Scales `frame` so its longest side is at most `max_side`, converting only
/// the output pixels from I420 (BT.601 limited range) to RGB.
pub fn frame_to_rgb(frame: &Frame, max_side: u32) -> RgbImage {
    let (fw, fh) = (frame.width, frame.height);
    let scale = (max_side as f32 / fw.max(fh) as f32).min(1.0);
    let w = ((fw as f32 * scale).round() as u32).max(1);
    let h = ((fh as f32 * scale).round() as u32).max(1);
    let (y, u, v) = (frame.y(), frame.u(), frame.v());
    let cw = frame.chroma_width();
    let mut img = RgbImage::new(w, h);
    for oy in 0..h {
        let sy = ((oy as f32 + 0.5) / scale) as usize;
        let sy = sy.min(fh as usize - 1);
        for ox in 0..w {
            let sx = (((ox as f32 + 0.5) / scale) as usize).min(fw as usize - 1);
            let c = 298 * (y[sy * fw as usize + sx] as i32 - 16);
            let d = u[(sy / 2) * cw + sx / 2] as i32 - 128;
            let e = v[(sy / 2) * cw + sx / 2] as i32 - 128;
            let r = ((c + 409 * e + 128) >> 8).clamp(0, 255) as u8;
            let g = ((c - 100 * d - 208 * e + 128) >> 8).clamp(0, 255) as u8;
            let b = ((c + 516 * d + 128) >> 8).clamp(0, 255) as u8;
            img.put_pixel(ox, oy, image::Rgb([r, g, b]));
        }
    }
    img
}

fn draw_line(img: &mut RgbImage, a: (f32, f32), b: (f32, f32), color: [u8; 3], thick: i32) {
    let (w, h) = (img.width() as i32, img.height() as i32);
    let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as i32).max(1);
    for s in 0..=steps {
        let t = s as f32 / steps as f32;
        let x = (a.0 + (b.0 - a.0) * t).round() as i32;
        let y = (a.1 + (b.1 - a.1) * t).round() as i32;
        for dy in -thick / 2..=thick / 2 {
            for dx in -thick / 2..=thick / 2 {
                let (px, py) = (x + dx, y + dy);
                if px >= 0 && py >= 0 && px < w && py < h {
                    img.put_pixel(px as u32, py as u32, image::Rgb(color));
                }
            }
        }
    }
}

/// Draws the rule geometry (yellow) and the object boxes (red, normalised
/// coordinates) on a thumbnail of the frame and encodes it as JPEG.
pub fn thumbnail(
    frame: &Frame,
    max_side: u32,
    geometry: Option<&Geometry>,
    boxes: &[[f32; 4]],
) -> Result<Jpeg, image::ImageError> {
    let mut img = frame_to_rgb(frame, max_side);
    annotate(&mut img, geometry, boxes);
    let bytes = encode_jpeg(&img, 80)?;
    Ok(Jpeg {
        bytes,
        width: img.width(),
        height: img.height(),
    })
}

/// [`thumbnail`] no larger than `max_bytes`: the longest side is cut by a
/// quarter until it fits (down to 64 pixels). `None` when even that does not
/// fit; the flag says whether it was shrunk.
pub fn thumbnail_within(
    frame: &Frame,
    max_side: u32,
    geometry: Option<&Geometry>,
    boxes: &[[f32; 4]],
    max_bytes: usize,
) -> Result<Option<(Jpeg, bool)>, image::ImageError> {
    let full = max_side.min(frame.width.max(frame.height)).max(1);
    let mut side = full;
    loop {
        let j = thumbnail(frame, side, geometry, boxes)?;
        if j.bytes.len() <= max_bytes {
            return Ok(Some((j, side != full)));
        }
        if side <= 64 {
            return Ok(None);
        }
        side = (side * 3 / 4).max(64);
    }
}

/// Draws the rule geometry (yellow) and boxes (red, normalised) on `img`.
pub fn annotate(img: &mut RgbImage, geometry: Option<&Geometry>, boxes: &[[f32; 4]]) {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let px = |p: [f64; 2]| (p[0] as f32 * w, p[1] as f32 * h);
    let yellow = [255, 210, 0];
    match geometry {
        Some(Geometry::Zone { polygon, .. }) | Some(Geometry::Lane { polygon, .. }) => {
            for i in 0..polygon.len() {
                draw_line(
                    img,
                    px(polygon[i]),
                    px(polygon[(i + 1) % polygon.len()]),
                    yellow,
                    2,
                );
            }
            if let Some(Geometry::Lane { arrow, .. }) = geometry {
                // The allowed direction, with a head.
                let (a, b) = (px(arrow[0]), px(arrow[1]));
                draw_line(img, a, b, yellow, 3);
                let (dx, dy) = (b.0 - a.0, b.1 - a.1);
                let l = (dx * dx + dy * dy).sqrt().max(1.0);
                let (ux, uy) = (dx / l * 12.0, dy / l * 12.0);
                draw_line(
                    img,
                    b,
                    (b.0 - ux - uy * 0.6, b.1 - uy + ux * 0.6),
                    yellow,
                    3,
                );
                draw_line(
                    img,
                    b,
                    (b.0 - ux + uy * 0.6, b.1 - uy - ux * 0.6),
                    yellow,
                    3,
                );
            }
        }
        Some(Geometry::Line { points, .. }) => {
            draw_line(img, px(points[0]), px(points[1]), yellow, 3)
        }
        Some(Geometry::None) | None => {}
    }
    for b in boxes {
        let (x1, y1, x2, y2) = (b[0] * w, b[1] * h, b[2] * w, b[3] * h);
        let red = [255, 32, 32];
        draw_line(img, (x1, y1), (x2, y1), red, 2);
        draw_line(img, (x2, y1), (x2, y2), red, 2);
        draw_line(img, (x2, y2), (x1, y2), red, 2);
        draw_line(img, (x1, y2), (x1, y1), red, 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overview_burns_in_text() {
        let mut f = Frame::blank(640, 360);
        f.y_mut().fill(16);
        f.u_mut().fill(128);
        f.v_mut().fill(128);
        let plain = overview(&f, 640, None, &[], "").unwrap();
        let text = overview(
            &f,
            640,
            None,
            &[([0.2, 0.3, 0.4, 0.6], 7)],
            "CAM1 2026-11-22 07:30:00.000 UTC",
        )
        .unwrap();
        let a = image::load_from_memory(&plain.bytes).unwrap().to_rgb8();
        let b = image::load_from_memory(&text.bytes).unwrap().to_rgb8();
        let bright = |img: &RgbImage| img.pixels().filter(|p| p.0[0] > 200).count();
        assert_eq!(bright(&a), 0);
        assert!(bright(&b) > 500, "{} bright pixels", bright(&b));
    }

    #[test]
    fn thumbnail_is_a_jpeg_of_the_stated_size() {
        let mut f = Frame::blank(1280, 720);
        f.y_mut().fill(120);
        f.u_mut().fill(128);
        f.v_mut().fill(128);
        let j = thumbnail(&f, 640, None, &[[0.1, 0.1, 0.5, 0.5]]).unwrap();
        assert_eq!((j.width, j.height), (640, 360));
        let img = image::load_from_memory_with_format(&j.bytes, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((img.width(), img.height()), (640, 360));
    }
}
