"""Per-frame IoU of two folders of mask PNGs (foreground = value > 0), matched by sorted order.

  python tools/gpu/compare_masks.py OURS_DIR REFERENCE_DIR     # prints one JSON line
"""
import glob
import json
import os
import sys

import numpy as np
from PIL import Image


def masks(d):
    return [np.asarray(Image.open(p)) > 0 for p in sorted(glob.glob(os.path.join(d, "*.png")))]


def main(a, b):
    ours, ref = masks(a), masks(b)
    if len(ours) != len(ref) or not ours:
        print(json.dumps({"error": f"{len(ours)} masks in {a}, {len(ref)} in {b}"}))
        return
    ious, differ = [], 0
    for x, y in zip(ours, ref):
        union = np.logical_or(x, y).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(x, y).sum() / union))
        differ += int((x != y).sum())
    print(json.dumps({"frames": len(ious), "iou_min": min(ious), "iou_mean": float(np.mean(ious)),
                      "pixels_differing": differ, "pixels": int(sum(x.size for x in ours)),
                      "foreground_fraction_ours": float(np.mean([x.mean() for x in ours])),
                      "foreground_fraction_reference": float(np.mean([y.mean() for y in ref]))}))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
