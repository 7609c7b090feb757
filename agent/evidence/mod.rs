//! Evidence: annotated thumbnails (clips, plates and signatures come later).
//! Only the thumbnail's own pixels are converted to RGB, at thumbnail size.

use image::{ImageEncoder, RgbImage};

use crate::decode::Frame;
use crate::rules::Geometry;

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
    let (w, h) = (img.width() as f32, img.height() as f32);
    let px = |p: [f64; 2]| (p[0] as f32 * w, p[1] as f32 * h);
    let yellow = [255, 210, 0];
    match geometry {
        Some(Geometry::Zone { polygon, .. }) | Some(Geometry::Lane { polygon, .. }) => {
            for i in 0..polygon.len() {
                draw_line(
                    &mut img,
                    px(polygon[i]),
                    px(polygon[(i + 1) % polygon.len()]),
                    yellow,
                    2,
                );
            }
            if let Some(Geometry::Lane { arrow, .. }) = geometry {
                // The allowed direction, with a head.
                let (a, b) = (px(arrow[0]), px(arrow[1]));
                draw_line(&mut img, a, b, yellow, 3);
                let (dx, dy) = (b.0 - a.0, b.1 - a.1);
                let l = (dx * dx + dy * dy).sqrt().max(1.0);
                let (ux, uy) = (dx / l * 12.0, dy / l * 12.0);
                draw_line(
                    &mut img,
                    b,
                    (b.0 - ux - uy * 0.6, b.1 - uy + ux * 0.6),
                    yellow,
                    3,
                );
                draw_line(
                    &mut img,
                    b,
                    (b.0 - ux + uy * 0.6, b.1 - uy - ux * 0.6),
                    yellow,
                    3,
                );
            }
        }
        Some(Geometry::Line { points, .. }) => {
            draw_line(&mut img, px(points[0]), px(points[1]), yellow, 3)
        }
        Some(Geometry::None) | None => {}
    }
    for b in boxes {
        let (x1, y1, x2, y2) = (b[0] * w, b[1] * h, b[2] * w, b[3] * h);
        let red = [255, 32, 32];
        draw_line(&mut img, (x1, y1), (x2, y1), red, 2);
        draw_line(&mut img, (x2, y1), (x2, y2), red, 2);
        draw_line(&mut img, (x2, y2), (x1, y2), red, 2);
        draw_line(&mut img, (x1, y2), (x1, y1), red, 2);
    }
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 80).write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(Jpeg {
        bytes,
        width: img.width(),
        height: img.height(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
