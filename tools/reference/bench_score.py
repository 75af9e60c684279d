"""Scoring speed of the official davis2017-evaluation metrics (J and F per frame) on the vendored
real-shaped masks, for benches/score.rs. DAVIS2017_EVAL points at a clone of the official repo.

  DAVIS2017_EVAL=/path python tools/reference/bench_score.py tests/fixtures/davis_masks 300
Prints one JSON line: frames, seconds, frames_per_s, checksum.
"""
import glob
import json
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.environ["DAVIS2017_EVAL"])
from davis2017.metrics import db_eval_boundary, db_eval_iou  # noqa: E402

d, n = sys.argv[1], int(sys.argv[2])
pairs = []
for g in sorted(glob.glob(os.path.join(d, "osvos_*.png"))):
    pairs.append((np.array(Image.open(g)) > 0, np.array(Image.open(g.replace("osvos_", "rvos_"))) > 0))
t = time.perf_counter()
s = 0.0
for i in range(n):
    gt, pr = pairs[i % len(pairs)]
    s += db_eval_iou(gt, pr) + db_eval_boundary(gt, pr)
dt = time.perf_counter() - t
print(json.dumps({"frames": n, "seconds": dt, "frames_per_s": n / dt, "checksum": s}))
