"""Synthetic test clip as JPEG frames (textured background, a red disc moving across it).

  python tools/gpu/make_frames.py DIR N WIDTH HEIGHT
"""
import os
import sys
from multiprocessing import Pool

import numpy as np
from PIL import Image


def frame(args):
    out, t, w, h = args
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(t)
    img = np.stack([(x * 255 // w + t) % 256, (y * 255 // h) % 256, ((x + y) // 4) % 256], -1).astype(np.int16)
    img += rng.integers(-20, 21, img.shape, dtype=np.int16)
    cx, cy, r = (0.2 + 0.6 * (t % 200) / 200) * w, 0.5 * h + 0.2 * h * np.sin(t / 15), 0.12 * h
    img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = (220, 30, 30)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(os.path.join(out, f"{t:05d}.jpg"), quality=90)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    out, n, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    os.makedirs(out, exist_ok=True)
    with Pool() as p:
        p.map(frame, [(out, t, w, h) for t in range(n)])
