"""Goldens for the J/F metrics from the official davis2017-evaluation code (not vendored: point
DAVIS2017_EVAL at a clone of github.com/davisvideochallenge/davis2017-evaluation).

  DAVIS2017_EVAL=/path/to/davis2017-evaluation python tools/reference/metrics_goldens.py tests/fixtures/davis_masks

Needs numpy, opencv-python(-headless), scikit-image, pillow. Writes <dir>/goldens.json: per pair
(osvos = ground truth, rvos = prediction, binarised > 0) J and F, and the same for every
pair of objects (labels 1..n) of the same files.
"""
import glob
import json
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.environ["DAVIS2017_EVAL"])
from davis2017.metrics import db_eval_boundary, db_eval_iou  # noqa: E402


def main():
    d = sys.argv[1]
    out = []
    for gt_path in sorted(glob.glob(os.path.join(d, "osvos_*.png"))):
        pr_path = gt_path.replace("osvos_", "rvos_")
        gt_l = np.array(Image.open(gt_path))
        pr_l = np.array(Image.open(pr_path))
        pairs = [("any", gt_l > 0, pr_l > 0)]
        for g in range(1, int(gt_l.max()) + 1):
            for p in range(1, int(pr_l.max()) + 1):
                pairs.append((f"gt{g}_pr{p}", gt_l == g, pr_l == p))
        for name, g, p in pairs:
            out.append({"file": os.path.basename(gt_path)[len("osvos_"):], "pair": name,
                        "J": float(db_eval_iou(g, p)), "F": float(db_eval_boundary(g, p))})
    with open(os.path.join(d, "goldens.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(len(out), "goldens")


if __name__ == "__main__":
    main()
