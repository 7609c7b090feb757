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
