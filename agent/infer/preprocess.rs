//! Fused preprocessing: I420 camera frame → model tensor in one pass at model
//! size (letterbox, bilinear luma / nearest chroma sampling, BT.601 YUV→RGB,
//! channel order, normalisation, NCHW). The whole camera frame is never
//! converted to RGB on the detection path.

use crate::decode::Frame;
use crate::infer::manifest::{ColorOrder, InputSpec, Letterbox};

/// Maps model-canvas pixels back to frame pixels: `frame = (model - pad) / scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    pub scale_x: f32,
    pub scale_y: f32,
    pub pad_x: f32,
    pub pad_y: f32,
}

impl Transform {
    pub fn to_frame(&self, x: f32, y: f32) -> (f32, f32) {
        (
            (x - self.pad_x) / self.scale_x,
            (y - self.pad_y) / self.scale_y,
        )
    }
}

/// Where a `w`×`h` frame lands on the model canvas.
pub fn letterbox(spec: &InputSpec, w: u32, h: u32) -> (Transform, usize, usize) {
    let (mw, mh) = (spec.width() as f32, spec.height() as f32);
    let (w, h) = (w as f32, h as f32);
    match spec.letterbox {
        Letterbox::Stretch => (
            Transform {
                scale_x: mw / w,
                scale_y: mh / h,
                pad_x: 0.0,
                pad_y: 0.0,
            },
            spec.width(),
            spec.height(),
        ),
        lb => {
            let r = (mw / w).min(mh / h);
            let nw = ((w * r).round() as usize).clamp(1, spec.width());
            let nh = ((h * r).round() as usize).clamp(1, spec.height());
            let (px, py) = if lb == Letterbox::Center {
                (
                    ((spec.width() - nw) / 2) as f32,
                    ((spec.height() - nh) / 2) as f32,
                )
            } else {
                (0.0, 0.0)
            };
            (
                Transform {
                    scale_x: r,
                    scale_y: r,
                    pad_x: px,
                    pad_y: py,
                },
                nw,
                nh,
            )
        }
    }
}

#[inline(always)]
fn clamp_u8(v: i32) -> f32 {
    v.clamp(0, 255) as f32
}

/// Fills `out` (length 3·H·W) with the model input for `frame`; returns the
/// transform from model coordinates back to frame coordinates.
pub fn i420_to_tensor(frame: &Frame, spec: &InputSpec, out: &mut Vec<f32>) -> Transform {
    i420_crop_to_tensor(frame, None, spec, out)
}

/// Like [`i420_to_tensor`] for a region `[x, y, w, h]` of the frame (pixels,
/// clipped to the frame): cascades run their model on crops of tracked
/// objects without converting anything outside the crop.
pub fn i420_crop_to_tensor(
    frame: &Frame,
    crop: Option<[usize; 4]>,
    spec: &InputSpec,
    out: &mut Vec<f32>,
) -> Transform {
    let (fw_all, fh_all) = (frame.width as usize, frame.height as usize);
    let [cx0, cy0, cwid, chei] = match crop {
        Some([x, y, w, h]) => {
            let x = x.min(fw_all - 1);
            let y = y.min(fh_all - 1);
            [x, y, w.clamp(1, fw_all - x), h.clamp(1, fh_all - y)]
        }
        None => [0, 0, fw_all, fh_all],
    };
    let (mw, mh) = (spec.width(), spec.height());
    let plane = mw * mh;
    out.resize(3 * plane, 0.0);
    let (mut t, nw, nh) = letterbox(spec, cwid as u32, chei as u32);
    let ox = t.pad_x as usize;
    let oy = t.pad_y as usize;

    // Per output channel: value = (pixel - mean) / std, in the model's channel order.
    let (mean, std) = (spec.mean, spec.std);
    let inv = [1.0 / std[0], 1.0 / std[1], 1.0 / std[2]];
    let pad: [f32; 3] = [
        (spec.pad - mean[0]) * inv[0],
        (spec.pad - mean[1]) * inv[1],
        (spec.pad - mean[2]) * inv[2],
    ];
    for c in 0..3 {
        out[c * plane..(c + 1) * plane].fill(pad[c]);
    }
    // Channel index in the tensor of R, G, B.
    let (ri, gi, bi) = match spec.color {
        ColorOrder::Rgb => (0, 1, 2),
        ColorOrder::Bgr => (2, 1, 0),
    };

    let fw = fw_all;
    let (y_plane, u_plane, v_plane) = (frame.y(), frame.u(), frame.v());
    let cw = frame.chroma_width();
    let sx = cwid as f32 / nw as f32;
    let sy = chei as f32 / nh as f32;
    // Sample positions stay inside the crop.
    let (xmax, ymax) = (cx0 + cwid - 1, cy0 + chei - 1);

    // Horizontal tables: left sample, right sample, weight (8-bit fixed point), chroma column.
    let mut xs: Vec<(usize, usize, i32, usize)> = Vec::with_capacity(nw);
    for x in 0..nw {
        let fx = cx0 as f32 + ((x as f32 + 0.5) * sx - 0.5).max(0.0);
        let x0 = (fx as usize).min(xmax);
        let x1 = (x0 + 1).min(xmax);
        let wx = ((fx - x0 as f32) * 256.0) as i32;
        let cx = (cx0 + ((x as f32 + 0.5) * sx) as usize).min(xmax) / 2;
        xs.push((x0, x1, wx, cx));
    }

    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    let planes: [&mut [f32]; 3] = [r_plane, g_plane, b_plane];
    // planes[k] is tensor channel k; find which tensor channel gets R, G and B.
    for y in 0..nh {
        let fy = cy0 as f32 + ((y as f32 + 0.5) * sy - 0.5).max(0.0);
        let y0 = (fy as usize).min(ymax);
        let y1 = (y0 + 1).min(ymax);
        let wy = ((fy - y0 as f32) * 256.0) as i32;
        let cy = (cy0 + ((y as f32 + 0.5) * sy) as usize).min(ymax) / 2;
        let row0 = &y_plane[y0 * fw..y0 * fw + fw];
        let row1 = &y_plane[y1 * fw..y1 * fw + fw];
        let urow = &u_plane[cy * cw..cy * cw + cw];
        let vrow = &v_plane[cy * cw..cy * cw + cw];
        let base = (oy + y) * mw + ox;
        for (x, &(x0, x1, wx, cx)) in xs.iter().enumerate() {
            let top = row0[x0] as i32 * (256 - wx) + row0[x1] as i32 * wx;
            let bot = row1[x0] as i32 * (256 - wx) + row1[x1] as i32 * wx;
            let luma = (top * (256 - wy) + bot * wy + (1 << 15)) >> 16;
            let c = 298 * (luma - 16);
            let d = urow[cx] as i32 - 128;
            let e = vrow[cx] as i32 - 128;
            let r = clamp_u8((c + 409 * e + 128) >> 8);
            let g = clamp_u8((c - 100 * d - 208 * e + 128) >> 8);
            let b = clamp_u8((c + 516 * d + 128) >> 8);
            let i = base + x;
            planes[ri][i] = (r - mean[ri]) * inv[ri];
            planes[gi][i] = (g - mean[gi]) * inv[gi];
            planes[bi][i] = (b - mean[bi]) * inv[bi];
        }
    }
    // Model canvas → frame: undo the crop offset too.
    t.pad_x -= cx0 as f32 * t.scale_x;
    t.pad_y -= cy0 as f32 * t.scale_y;
    t
}

/// A quadrilateral region of the frame (corners top-left, top-right,
/// bottom-right, bottom-left, in frame pixels) rectified onto the model canvas:
/// the region's height fills the canvas height, its width is `aspect` × the
/// height (0: the quad's own aspect; capped at the canvas width),
/// left-aligned; the rest is padding.
/// Sampling is bilinear between the corners, which rectifies a plate seen at
/// an angle well enough to read.
pub fn i420_quad_to_tensor(
    frame: &Frame,
    quad: [f32; 8],
    aspect: f32,
    spec: &InputSpec,
    out: &mut Vec<f32>,
) {
    let (mw, mh) = (spec.width(), spec.height());
    let plane = mw * mh;
    out.resize(3 * plane, 0.0);
    let (mean, std) = (spec.mean, spec.std);
    let inv = [1.0 / std[0], 1.0 / std[1], 1.0 / std[2]];
    for c in 0..3 {
        out[c * plane..(c + 1) * plane].fill((spec.pad - mean[c]) * inv[c]);
    }
    let (ri, gi, bi) = match spec.color {
        ColorOrder::Rgb => (0, 1, 2),
        ColorOrder::Bgr => (2, 1, 0),
    };
    let p = |i: usize| (quad[2 * i], quad[2 * i + 1]);
    let dist = |a: (f32, f32), b: (f32, f32)| ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
    let qw = (dist(p(0), p(1)) + dist(p(3), p(2))) / 2.0;
    let qh = (dist(p(0), p(3)) + dist(p(1), p(2))) / 2.0;
    if qw < 1.0 || qh < 1.0 {
        return;
    }
    // The output's width ÷ height: given (a plate's real shape, which
    // perspective hides), else the quad's own.
    let aspect = if aspect > 0.0 { aspect } else { qw / qh };
    let nw = ((mh as f32 * aspect).ceil() as usize).clamp(1, mw);
    let (fw, fh) = (frame.width as usize, frame.height as usize);
    let (yp, up, vp) = (frame.y(), frame.u(), frame.v());
    let cw = frame.chroma_width();
    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    let planes: [&mut [f32]; 3] = [r_plane, g_plane, b_plane];
    for y in 0..mh {
        let v = (y as f32 + 0.5) / mh as f32;
        // Left and right edges at this height.
        let l = (
            p(0).0 + (p(3).0 - p(0).0) * v,
            p(0).1 + (p(3).1 - p(0).1) * v,
        );
        let r = (
            p(1).0 + (p(2).0 - p(1).0) * v,
            p(1).1 + (p(2).1 - p(1).1) * v,
        );
        for x in 0..nw {
            let u = (x as f32 + 0.5) / nw as f32;
            let fx = (l.0 + (r.0 - l.0) * u - 0.5).clamp(0.0, (fw - 1) as f32);
            let fy = (l.1 + (r.1 - l.1) * u - 0.5).clamp(0.0, (fh - 1) as f32);
            let (x0, y0) = (fx as usize, fy as usize);
            let (x1, y1) = ((x0 + 1).min(fw - 1), (y0 + 1).min(fh - 1));
            let (wx, wy) = (fx - x0 as f32, fy - y0 as f32);
            let luma = (yp[y0 * fw + x0] as f32 * (1.0 - wx) + yp[y0 * fw + x1] as f32 * wx)
                * (1.0 - wy)
                + (yp[y1 * fw + x0] as f32 * (1.0 - wx) + yp[y1 * fw + x1] as f32 * wx) * wy;
            let ci = ((fy as usize) / 2) * cw + (fx as usize) / 2;
            let c = 298 * (luma as i32 - 16);
            let d = up[ci] as i32 - 128;
            let e = vp[ci] as i32 - 128;
            let rr = clamp_u8((c + 409 * e + 128) >> 8);
            let gg = clamp_u8((c - 100 * d - 208 * e + 128) >> 8);
            let bb = clamp_u8((c + 516 * d + 128) >> 8);
            let i = y * mw + x;
            planes[ri][i] = (rr - mean[ri]) * inv[ri];
            planes[gi][i] = (gg - mean[gi]) * inv[gi];
            planes[bi][i] = (bb - mean[bi]) * inv[bi];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::manifest::Layout;

    fn spec(letterbox: Letterbox, color: ColorOrder) -> InputSpec {
        InputSpec {
            name: "x".into(),
            shape: [1, 3, 8, 8],
            layout: Layout::Nchw,
            color,
            letterbox,
            pad: 114.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    fn grey_frame(w: u32, h: u32, yv: u8, u: u8, v: u8) -> Frame {
        let mut f = Frame::blank(w, h);
        f.y_mut().fill(yv);
        f.u_mut().fill(u);
        f.v_mut().fill(v);
        f
    }

    #[test]
    fn top_left_letterbox_pads_bottom() {
        // 16x8 frame into 8x8: scale 0.5, content rows 0..4, pad rows 4..8.
        let f = grey_frame(16, 8, 235, 128, 128); // white
        let mut out = Vec::new();
        let t = i420_to_tensor(&f, &spec(Letterbox::TopLeft, ColorOrder::Bgr), &mut out);
        assert_eq!(t.scale_x, 0.5);
        assert_eq!((t.pad_x, t.pad_y), (0.0, 0.0));
        assert_eq!(out[0], 255.0); // row 0 is white
        assert_eq!(out[5 * 8], 114.0); // row 5 is padding
        assert_eq!(t.to_frame(4.0, 2.0), (8.0, 4.0));
    }

    #[test]
    fn centred_letterbox_and_colour_order() {
        // Pure red in BT.601 limited range: Y=81, U=90, V=240.
        let f = grey_frame(8, 4, 81, 90, 240);
        let mut out = Vec::new();
        let t = i420_to_tensor(&f, &spec(Letterbox::Center, ColorOrder::Rgb), &mut out);
        assert_eq!((t.pad_x, t.pad_y), (0.0, 2.0));
        let px = 3 * 8 + 3; // inside content
        assert!(out[px] > 240.0, "R {}", out[px]);
        assert!(out[64 + px] < 20.0, "G {}", out[64 + px]);
        assert!(out[128 + px] < 20.0, "B {}", out[128 + px]);
        assert_eq!(out[0], 114.0); // top padding row
        // A crop maps back to frame coordinates.
        let mut big = grey_frame(40, 20, 81, 90, 240);
        for v in big.y_mut().iter_mut().take(40 * 10) {
            *v = 235;
        }
        let t2 = i420_crop_to_tensor(
            &big,
            Some([20, 10, 16, 8]),
            &spec(Letterbox::TopLeft, ColorOrder::Rgb),
            &mut out,
        );
        let (fx, fy) = t2.to_frame(0.0, 0.0);
        assert_eq!((fx, fy), (20.0, 10.0));
        assert!(
            out[0] > 200.0 && out[64] < 40.0,
            "crop is from the red lower half"
        );
        let mut bgr = Vec::new();
        i420_to_tensor(&f, &spec(Letterbox::Center, ColorOrder::Bgr), &mut bgr);
        assert!(bgr[128 + px] > 240.0); // red lands in the last channel for BGR
    }
}
