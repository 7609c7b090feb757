#!/usr/bin/env python3
"""Agreement and single-thread latency of int8 YOLOX-Nano models vs fp32.

    python compare.py --fp32 ../../../shared/models/yolox_nano.onnx \
        --int8 /tmp/yolox_nano_int8.onnx [--int8 other.onnx ...] \
        --videos ../../../shared/videos [--json out.json]

Test frames: the SECOND half of every clip in yolox_nano_int8.CLIPS sampled at
5 fps (calibration only uses the first half). Each frame is decoded to I420 and
preprocessed/postprocessed exactly like the agent (see yolox_nano_int8.py),
threshold 0.3, NMS 0.45.

Agreement, with fp32 as the reference: an int8 box matches an fp32 box of the
same class at IoU >= 0.5 (greedy one-to-one, highest IoU first). precision =
matched / int8 boxes, recall = matched / fp32 boxes, over the classes person,
bicycle, car, motorcycle, bus, truck.

Latency: every model gets its own CPU session with intra_op_num_threads=1,
inter_op_num_threads=1, default (full) graph optimization; on every frame all
models run back to back in rotating order, so background load hits them alike.
Only session.run is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yolox_nano_int8 as Y  # noqa: E402

CLASSES = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}
IOU_MATCH = 0.5
WARMUP = 10


def match(bf, cf, bq, cq):
    """Greedy one-to-one same-class matching; returns list of (i_fp32, j_int8, iou)."""
    pairs = []
    for i in range(len(bf)):
        if len(bq) == 0:
            break
        o = Y.iou_one(bf[i], bq)
        for j in np.nonzero((o >= IOU_MATCH) & (cq == cf[i]))[0]:
            pairs.append((float(o[j]), i, int(j)))
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    uf, uq, out = set(), set(), []
    for o, i, j in pairs:
        if i not in uf and j not in uq:
            uf.add(i)
            uq.add(j)
            out.append((i, j, o))
    return out


def session(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


class Stats:
    def __init__(self):
        self.n_ref = self.n_q = self.n_match = 0
        self.n_ref_conf = self.n_match_conf = 0  # fp32 boxes with score >= 0.5
        self.ious, self.dscore = [], []
        self.per_class = {c: [0, 0, 0] for c in CLASSES}  # ref, q, match

    def add(self, ref, q):
        bf, sf, cf = ref
        bq, sq, cq = q
        m = match(bf, cf, bq, cq)
        self.n_ref += len(bf)
        self.n_q += len(bq)
        self.n_match += len(m)
        self.n_ref_conf += int((sf >= 0.5).sum())
        self.n_match_conf += sum(1 for i, _, _ in m if sf[i] >= 0.5)
        for i, j, o in m:
            self.ious.append(o)
            self.dscore.append(float(sq[j] - sf[i]))
        for c in CLASSES:
            pc = self.per_class[c]
            pc[0] += int((cf == c).sum())
            pc[1] += int((cq == c).sum())
            pc[2] += sum(1 for i, _, _ in m if cf[i] == c)

    def merge(self, o):
        for k in ("n_ref", "n_q", "n_match", "n_ref_conf", "n_match_conf"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.ious += o.ious
        self.dscore += o.dscore
        for c in CLASSES:
            for t in range(3):
                self.per_class[c][t] += o.per_class[c][t]

    def summary(self):
        div = lambda a, b: (a / b) if b else float("nan")  # noqa: E731
        return {
            "fp32_boxes": self.n_ref,
            "int8_boxes": self.n_q,
            "matched": self.n_match,
            "precision": div(self.n_match, self.n_q),
            "recall": div(self.n_match, self.n_ref),
            "recall_fp32_score>=0.5": div(self.n_match_conf, self.n_ref_conf),
            "mean_iou_matched": float(np.mean(self.ious)) if self.ious else float("nan"),
            "mean_score_delta": float(np.mean(self.dscore)) if self.dscore else float("nan"),
            "mean_abs_score_delta": float(np.mean(np.abs(self.dscore))) if self.dscore else float("nan"),
            "per_class": {
                CLASSES[c]: {"fp32": v[0], "int8": v[1], "matched": v[2]}
                for c, v in self.per_class.items()
                if v[0] or v[1]
            },
        }


def keep_classes(det):
    b, s, c = det
    k = np.isin(c, list(CLASSES))
    return b[k], s[k], c[k]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32", required=True, type=Path)
    ap.add_argument("--int8", required=True, type=Path, action="append")
    ap.add_argument("--videos", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)

    import onnxruntime as ort

    names = ["fp32"] + [p.name for p in a.int8]
    paths = [a.fp32] + list(a.int8)
    sess = [session(p, a.threads) for p in paths]
    lat = {n: [] for n in names}
    per_clip = {}
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    rot = 0
    for clip in Y.CLIPS:
        p = a.videos / clip
        n = Y.frame_count(p)
        idx = set(Y.test_indices(n, Y.clip_fps(p)))
        assert not idx & set(Y.calibration_indices(n))
        stats = {nm: Stats() for nm in names[1:]}
        nf = 0
        for i, _t, y, u, v, w, h in Y.decode_i420(p):
            if i not in idx:
                continue
            x, r = Y.i420_to_tensor(y, u, v, w, h)
            feeds = {Y.INPUT_NAME: x}
            if rot == 0:
                for s in sess:
                    for _ in range(WARMUP):
                        s.run(None, feeds)
            outs = [None] * len(sess)
            order = [(rot + k) % len(sess) for k in range(len(sess))]
            rot += 1
            for k in order:
                t0 = time.perf_counter()
                outs[k] = sess[k].run(None, feeds)[0]
                lat[names[k]].append((time.perf_counter() - t0) * 1e3)
            dets = [keep_classes(Y.postprocess(o, r, w, h)) for o in outs]
            for k, nm in enumerate(names[1:], start=1):
                stats[nm].add(dets[0], dets[k])
            nf += 1
        per_clip[clip] = {"frames": nf, **{nm: s for nm, s in stats.items()}}

    result = {
        "onnxruntime": ort.__version__,
        "threads": a.threads,
        "loadavg_before": load0,
        "loadavg_after": os.getloadavg(),
        "wall_s": time.perf_counter() - t_start,
        "latency_ms": {},
        "agreement": {},
    }
    for nm in names:
        v = np.array(lat[nm])
        result["latency_ms"][nm] = {
            "mean": float(v.mean()),
            "median": float(np.median(v)),
            "p10": float(np.percentile(v, 10)),
            "p90": float(np.percentile(v, 90)),
            "frames": len(v),
        }
    f32 = np.array(lat["fp32"])
    for nm in names[1:]:
        q = np.array(lat[nm])
        result["latency_ms"][nm]["speedup_vs_fp32_median"] = float(np.median(f32) / np.median(q))
        result["latency_ms"][nm]["speedup_vs_fp32_mean"] = float(f32.mean() / q.mean())
        result["latency_ms"][nm]["speedup_vs_fp32_paired_median"] = float(np.median(f32 / q))
        tot = Stats()
        ag = {}
        for clip, d in per_clip.items():
            ag[clip] = {"frames": d["frames"], **d[nm].summary()}
            tot.merge(d[nm])
        ag["overall"] = {"frames": sum(d["frames"] for d in per_clip.values()), **tot.summary()}
        result["agreement"][nm] = ag

    print(f"onnxruntime {ort.__version__}, intra_op_num_threads={a.threads}, "
          f"loadavg before {load0[0]:.2f} after {result['loadavg_after'][0]:.2f}")
    for nm in names:
        L = result["latency_ms"][nm]
        extra = ""
        if nm != "fp32":
            extra = (f"  speedup x{L['speedup_vs_fp32_median']:.2f} (median) "
                     f"x{L['speedup_vs_fp32_mean']:.2f} (mean) x{L['speedup_vs_fp32_paired_median']:.2f} (paired)")
        print(f"latency {nm:40s} median {L['median']:6.2f} ms  mean {L['mean']:6.2f} ms  "
              f"p10 {L['p10']:6.2f}  p90 {L['p90']:6.2f}  n={L['frames']}{extra}")
    for nm in names[1:]:
        print(f"\n== {nm} vs fp32 (IoU>={IOU_MATCH}, same class, classes {', '.join(CLASSES.values())})")
        print(f"{'clip':34s} {'frames':>6s} {'fp32':>6s} {'int8':>6s} {'match':>6s} {'prec':>6s} {'recall':>6s} "
              f"{'rec@.5':>6s} {'mIoU':>6s} {'dScore':>7s}")
        for clip, s in result["agreement"][nm].items():
            print(f"{clip:34s} {s['frames']:6d} {s['fp32_boxes']:6d} {s['int8_boxes']:6d} {s['matched']:6d} "
                  f"{s['precision']:6.3f} {s['recall']:6.3f} {s['recall_fp32_score>=0.5']:6.3f} "
                  f"{s['mean_iou_matched']:6.3f} {s['mean_score_delta']:+7.3f}")
        print("per class (overall):", json.dumps(result["agreement"][nm]["overall"]["per_class"]))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
