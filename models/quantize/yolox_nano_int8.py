#!/usr/bin/env python3
"""Reproducible static int8 quantization of YOLOX-Nano (models/yolox_nano.toml).

    python yolox_nano_int8.py --fp32 ../../../shared/models/yolox_nano.onnx \
        --videos ../../../shared/videos --out /tmp/yolox_nano_int8.onnx

Calibration frames are chosen deterministically from our footage: for every
clip in CLIPS, CALIB_PER_CLIP frames evenly spaced over the FIRST half of the
clip (the second half is kept for compare.py). Frames are decoded to I420 with
libavcodec (PyAV, the same decoder family the agent uses) and turned into the
model tensor by a bit-for-bit numpy port of agent/infer/preprocess.rs
(`i420_crop_to_tensor`: top-left letterbox, pad 114, 8-bit fixed-point
bilinear luma, nearest chroma, BT.601 integer YUV->RGB, BGR, raw 0..255, NCHW).

The calibration session runs single-threaded with graph optimizations off so
the collected ranges, and hence the output file, do not depend on the core
count; running the script twice gives a byte-identical file (sha256 printed).

This module also holds the shared decode/pre/post-processing used by compare.py.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# ----------------------------------------------------------------------------
# Model contract (models/yolox_nano.toml)
# ----------------------------------------------------------------------------
FP32_SHA256 = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"
INPUT_NAME = "images"
OUTPUT_NAME = "output"
MW = MH = 416
PAD = 114.0
STRIDES = (8, 16, 32)
SCORE_THRESHOLD = 0.3
NMS_IOU = 0.45
CROSS_CLASS_IOU = 0.7  # agent/infer/postprocess.rs
MAX_CANDIDATES = 2000
MAX_DETECTIONS = 300
NUM_CLASSES = 80

# Footage, fixed list and order (../shared/videos).
CLIPS = (
    "opencv4nodejs_traffic.mp4",
    "opencv4nodejs_people.mp4",
    "bgslibrary_video02_h264.mp4",
    "one-by-one-person-detection.mp4",
)
CALIB_PER_CLIP = 40  # 4 clips x 40 = 160 calibration frames
TEST_FPS = 5.0


# ----------------------------------------------------------------------------
# Decoding and frame selection
# ----------------------------------------------------------------------------
def decode_i420(path: str | Path):
    """Yields (index, pts_seconds, y, u, v, width, height) for every frame, in
    presentation order, as packed I420 planes (uint8)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for i, f in enumerate(c.decode(s)):
            if f.format.name != "yuv420p":
                f = f.reformat(format="yuv420p")
            w, h = f.width, f.height
            cw, ch = (w + 1) // 2, (h + 1) // 2
            planes = []
            for p, (pw, ph) in zip(f.planes, ((w, h), (cw, ch), (cw, ch))):
                a = np.frombuffer(p, dtype=np.uint8).reshape(ph, p.line_size)[:, :pw]
                planes.append(np.ascontiguousarray(a))
            t = float(f.time) if f.time is not None else float("nan")
            yield i, t, planes[0], planes[1], planes[2], w, h


def frame_count(path: str | Path) -> int:
    return sum(1 for _ in decode_i420(path))


def clip_fps(path: str | Path) -> float:
    import av

    with av.open(str(path)) as c:
        return float(c.streams.video[0].average_rate)


def calibration_indices(n_frames: int, per_clip: int = CALIB_PER_CLIP) -> list[int]:
    """`per_clip` frames evenly spaced over the first half [0, n/2)."""
    half = n_frames // 2
    return sorted({(k * half) // per_clip for k in range(per_clip)})


def test_indices(n_frames: int, fps: float, test_fps: float = TEST_FPS) -> list[int]:
    """The second half [n/2, n) sampled at `test_fps` (disjoint from calibration)."""
    step = max(1, int(round(fps / test_fps)))
    return list(range(n_frames // 2, n_frames, step))


# ----------------------------------------------------------------------------
# Preprocessing: numpy port of agent/infer/preprocess.rs::i420_crop_to_tensor
# (no crop, top-left letterbox, mean 0 / std 1, BGR)
# ----------------------------------------------------------------------------
_TABLES: dict = {}


def _rust_round(x: np.float32) -> int:
    return int(np.floor(np.float32(x) + np.float32(0.5)))  # positive values: half away from zero


def letterbox(w: int, h: int):
    f32 = np.float32
    r = min(f32(MW) / f32(w), f32(MH) / f32(h))
    nw = min(max(_rust_round(f32(w) * r), 1), MW)
    nh = min(max(_rust_round(f32(h) * r), 1), MH)
    return f32(r), nw, nh


def _axis_table(n_out: int, n_in: int):
    f32 = np.float32
    s = f32(n_in) / f32(n_out)
    o = np.arange(n_out, dtype=np.float32)
    f = np.maximum((o + f32(0.5)) * s - f32(0.5), f32(0.0)).astype(np.float32)
    i0 = np.minimum(f.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    wgt = ((f - i0.astype(np.float32)) * f32(256.0)).astype(np.int64)
    c = np.minimum(((o + f32(0.5)) * s).astype(np.int64), n_in - 1) // 2
    return i0, i1, wgt, c


def i420_to_tensor(y: np.ndarray, u: np.ndarray, v: np.ndarray, w: int, h: int):
    """Returns (tensor [1,3,416,416] float32, r) exactly as the agent builds it."""
    key = (w, h)
    if key not in _TABLES:
        r, nw, nh = letterbox(w, h)
        _TABLES[key] = (r, nw, nh, _axis_table(nw, w), _axis_table(nh, h))
    r, nw, nh, (x0, x1, wx, cx), (y0, y1, wy, cy) = _TABLES[key]
    yi = y.astype(np.int64)
    r0 = yi[y0]
    r1 = yi[y1]
    top = r0[:, x0] * (256 - wx) + r0[:, x1] * wx
    bot = r1[:, x0] * (256 - wx) + r1[:, x1] * wx
    wyc = wy[:, None]
    luma = (top * (256 - wyc) + bot * wyc + (1 << 15)) >> 16
    c = 298 * (luma - 16)
    d = u.astype(np.int64)[cy][:, cx] - 128
    e = v.astype(np.int64)[cy][:, cx] - 128
    rr = np.clip((c + 409 * e + 128) >> 8, 0, 255)
    gg = np.clip((c - 100 * d - 208 * e + 128) >> 8, 0, 255)
    bb = np.clip((c + 516 * d + 128) >> 8, 0, 255)
    out = np.full((1, 3, MH, MW), PAD, dtype=np.float32)
    out[0, 0, :nh, :nw] = bb  # BGR
    out[0, 1, :nh, :nw] = gg
    out[0, 2, :nh, :nw] = rr
    return out, r


# ----------------------------------------------------------------------------
# Postprocessing: port of agent/infer/postprocess.rs (decode_yolox, nms, to_frame)
# ----------------------------------------------------------------------------
_GRID = None


def _grid():
    global _GRID
    if _GRID is None:
        gx, gy, st = [], [], []
        for s in STRIDES:
            g = MW // s
            yy, xx = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
            gx.append(xx.ravel())
            gy.append(yy.ravel())
            st.append(np.full(g * g, s))
        _GRID = tuple(np.concatenate(a).astype(np.float32) for a in (gx, gy, st))
    return _GRID


def iou_one(b: np.ndarray, bs: np.ndarray) -> np.ndarray:
    ix = np.maximum(np.minimum(b[2], bs[:, 2]) - np.maximum(b[0], bs[:, 0]), 0)
    iy = np.maximum(np.minimum(b[3], bs[:, 3]) - np.maximum(b[1], bs[:, 1]), 0)
    inter = ix * iy
    area = lambda r: np.maximum(r[..., 2] - r[..., 0], 0) * np.maximum(r[..., 3] - r[..., 1], 0)  # noqa: E731
    union = area(b) + area(bs) - inter
    return np.where(union <= 0, 0.0, inter / np.where(union <= 0, 1, union))


def postprocess(out: np.ndarray, r: float, w: int, h: int, threshold: float = SCORE_THRESHOLD):
    """Model output [1,3549,85] -> (boxes [N,4] frame px, scores [N], classes [N])."""
    rows = out.reshape(-1, 5 + NUM_CLASSES).astype(np.float32)
    gx, gy, st = _grid()
    obj = rows[:, 4]
    cls_id = np.argmax(rows[:, 5:], axis=1)
    cls_p = rows[np.arange(len(rows)), 5 + cls_id]
    score = obj * cls_p
    keep = (obj >= threshold) & (score >= threshold)
    rows, gx, gy, st, score, cls_id = rows[keep], gx[keep], gy[keep], st[keep], score[keep], cls_id[keep]
    cx = (rows[:, 0] + gx) * st
    cy = (rows[:, 1] + gy) * st
    bw = np.exp(rows[:, 2]) * st
    bh = np.exp(rows[:, 3]) * st
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).astype(np.float32)
    order = np.argsort(-score, kind="stable")[:MAX_CANDIDATES]
    kept: list[int] = []
    for i in order:
        if kept:
            k = np.array(kept)
            o = iou_one(boxes[i], boxes[k])
            lim = np.where(cls_id[k] == cls_id[i], NMS_IOU, CROSS_CLASS_IOU)
            if np.any(o > lim):
                continue
        kept.append(int(i))
        if len(kept) == MAX_DETECTIONS:
            break
    k = np.array(kept, dtype=np.int64)
    b = boxes[k] / np.float32(r)
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
    ok = ((b[:, 2] - b[:, 0]) >= 1) & ((b[:, 3] - b[:, 1]) >= 1)
    return b[ok], score[k][ok], cls_id[k][ok]


# ----------------------------------------------------------------------------
# Calibration data
# ----------------------------------------------------------------------------
def calibration_frames(videos: Path) -> list[np.ndarray]:
    frames = []
    for name in CLIPS:
        p = videos / name
        idx = set(calibration_indices(frame_count(p)))
        for i, _t, y, u, v, w, h in decode_i420(p):
            if i in idx:
                frames.append(i420_to_tensor(y, u, v, w, h)[0])
            if i > max(idx):
                break
    return frames


class FrameReader:
    """onnxruntime.quantization.CalibrationDataReader over fixed tensors."""

    def __init__(self, frames):
        self.frames = frames
        self.it = iter(frames)

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {INPUT_NAME: x}

    def rewind(self):
        self.it = iter(self.frames)


# ----------------------------------------------------------------------------
# Quantization configs
# ----------------------------------------------------------------------------
# Configs tried (see /tmp/int8-report.md for the numbers). Excluded groups are
# found structurally (see excluded_nodes), not by node name. The default keeps
# the 208x208 and 104x104 stages (stem + dark2) and the output tail in float:
# those early activations have outliers of +-45..60 at std ~2, and 8-bit
# per-tensor activation ranges there wreck everything downstream (recall vs
# fp32 0.40 when they are quantized, 0.93 when they are not).
# Histogram calibrators (Percentile/Entropy) keep every activation of every
# calibration frame in memory: ~22 GB for 160 frames; Entropy did not finish.
CONFIGS = {
    # name: (format, per_channel, calibrate_method, excluded groups, extra_options)
    "qdq_pc_minmax_tail": ("QDQ", True, "MinMax", ("tail",), {}),
    "qdq_pc_minmax_head": ("QDQ", True, "MinMax", ("head",), {}),
    "qdq_pc_minmax_none": ("QDQ", True, "MinMax", (), {}),
    "qdq_pt_minmax_tail": ("QDQ", False, "MinMax", ("tail",), {}),
    "qdq_pc_minmax_stem_tail": ("QDQ", True, "MinMax", ("stem", "tail"), {}),
    "qdq_pc_percentile_tail": ("QDQ", True, "Percentile", ("tail",), {"CalibPercentile": 99.999}),
    "qdq_pc_minmax_res208_tail": ("QDQ", True, "MinMax", ("res208", "tail"), {}),
    "qdq_pc_minmax_res104_tail": ("QDQ", True, "MinMax", ("res104", "tail"), {}),
    "qdq_pc_minmax_silu_tail": ("QDQ", True, "MinMax", ("silu", "tail"), {}),
    "qdq_pc_minmax_res104_silu_tail": ("QDQ", True, "MinMax", ("res104", "silu", "tail"), {}),
    "qop_pc_minmax_silu_tail": ("QOperator", True, "MinMax", ("silu", "tail"), {}),
    "qop_pc_minmax_res104_silu_tail": ("QOperator", True, "MinMax", ("res104", "silu", "tail"), {}),
    "qop_pc_minmax_res104_tail": ("QOperator", True, "MinMax", ("res104", "tail"), {}),
    "qop_pc_minmax_tail": ("QOperator", True, "MinMax", ("tail",), {}),
    "qop_pc_minmax_head": ("QOperator", True, "MinMax", ("head",), {}),
}
DEFAULT_CONFIG = "qdq_pc_minmax_res104_tail"


def excluded_nodes(model, groups) -> list[str]:
    """Node names to keep in float for the given groups:
    "stem": the first Conv (after the Focus slicing; its output has outliers
            of +-60 at std ~2.4, so 8 bits lose ~10% of the signal) and its SiLU;
    "tail": every op after the head's 1x1 prediction convs;
    "head": "tail" plus the nine prediction convs."""
    g = model.graph
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    names: set[str] = set()
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(g.value_info) + list(g.output)
    }
    for grp in groups:
        if grp.startswith("res"):  # every op whose output map is >= N x N pixels
            lim = int(grp[3:])
            for n in g.node:
                shp = shapes.get(n.output[0], [])
                if len(shp) == 4 and shp[2] >= lim and n.op_type not in ("Slice",):
                    names.add(n.name)
    if "silu" in groups:  # SiLU = Mul(x, Sigmoid(x)) stays float: ORT fuses it (QuickGelu)
        for n in g.node:
            if n.op_type == "Sigmoid":
                muls = [c for c in consumers.get(n.output[0], []) if c.op_type == "Mul" and n.input[0] in c.input]
                if muls:
                    names.add(n.name)
                    names.update(c.name for c in muls)
    if "stem" in groups:
        stem = next(n for n in g.node if n.op_type == "Conv")
        names.add(stem.name)
        for n in consumers[stem.output[0]]:  # SiLU = Mul(x, Sigmoid(x))
            names.add(n.name)
    if "tail" in groups or "head" in groups:
        preds = [
            n
            for n in g.node
            if n.op_type == "Conv"
            and len(n.input) > 1
            and any(k in n.input[1] for k in ("cls_preds", "reg_preds", "obj_preds"))
        ]
        assert len(preds) == 9, f"expected 9 head prediction convs, found {len(preds)}"
        seen: set[str] = set()
        stack = [o for n in preds for o in n.output]
        while stack:
            t = stack.pop()
            for n in consumers.get(t, []):
                if n.name not in seen:
                    seen.add(n.name)
                    stack.extend(n.output)
        names |= seen
        if "head" in groups:
            names |= {n.name for n in preds}
    return sorted(names)


def prepare_fp32(fp32: Path, workdir: Path) -> Path:
    """opset 11 -> 13 (per-channel Q/DQ needs the `axis` attribute of opset 13),
    named nodes, shape inference."""
    import onnx
    from onnx import version_converter

    m = onnx.load(str(fp32))
    m = version_converter.convert_version(m, 13)
    for i, n in enumerate(m.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_auto_{i}"
    m = onnx.shape_inference.infer_shapes(m)
    onnx.checker.check_model(m)
    p = workdir / "fp32_opset13.onnx"
    onnx.save(m, str(p))
    return p


def _single_threaded_calibration():
    """Calibration sessions: one intra-op thread, no graph optimizations, so the
    collected ranges (and the output file) do not depend on the machine's cores."""
    import onnxruntime
    from onnxruntime.quantization import calibrate

    def create_inference_session(self):
        so = onnxruntime.SessionOptions()
        so.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self.infer_session = onnxruntime.InferenceSession(
            self.augmented_model_path, sess_options=so, providers=self.execution_providers
        )

    calibrate.CalibraterBase.create_inference_session = create_inference_session


def quantize(fp32: Path, frames, out: Path, config: str = DEFAULT_CONFIG) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    fmt, per_channel, method, exclude, extra = CONFIGS[config]
    _single_threaded_calibration()
    with tempfile.TemporaryDirectory(prefix="yolox-int8-") as td:
        prep = prepare_fp32(fp32, Path(td))
        nodes_to_exclude = excluded_nodes(onnx.load(str(prep)), exclude)
        extra_options = dict(extra)
        quantize_static(
            str(prep),
            str(out),
            FrameReader(frames),
            quant_format=getattr(QuantFormat, fmt),
            per_channel=per_channel,
            reduce_range=False,  # x86 with VNNI; see report for non-VNNI targets
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=nodes_to_exclude,
            calibrate_method=getattr(CalibrationMethod, method),
            extra_options=extra_options,
        )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32", required=True, type=Path, help="yolox_nano.onnx (fp32)")
    ap.add_argument("--videos", required=True, type=Path, help="directory holding the clips in CLIPS")
    ap.add_argument("--out", required=True, type=Path, help="int8 model to write")
    ap.add_argument("--config", default=DEFAULT_CONFIG, choices=sorted(CONFIGS))
    a = ap.parse_args(argv)

    got = sha256(a.fp32)
    if got != FP32_SHA256:
        print(f"error: {a.fp32} sha256 {got} != {FP32_SHA256} (models/yolox_nano.toml)", file=sys.stderr)
        return 2
    import onnxruntime

    t0 = time.perf_counter()
    frames = calibration_frames(a.videos)
    t1 = time.perf_counter()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    quantize(a.fp32, frames, a.out, a.config)
    t2 = time.perf_counter()
    print(f"onnxruntime {onnxruntime.__version__}, config {a.config}: {CONFIGS[a.config]}")
    print(f"calibration frames: {len(frames)} ({t1 - t0:.1f} s to decode+preprocess)")
    print(f"quantization: {t2 - t1:.1f} s; total {t2 - t0:.1f} s")
    print(f"{a.out}: {a.out.stat().st_size} bytes")
    print(f"sha256 {sha256(a.out)}  {a.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
