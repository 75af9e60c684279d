"""y4m decoding fixtures: small YUV4MPEG2 files and what `cv2.VideoCapture` makes of them.

A y4m stream carries raw planes, so the only arithmetic between the file and VideoLISA's frames is
libswscale's conversion to BGR24 inside OpenCV's FFmpeg (the same one mp4 frames go through once
decoded). For each chroma layout and range this writes a y4m of random planes (odd widths and heights
among them) and the frames `cv2.VideoCapture` returns, as RGB PNGs:

    python tools/reference/y4m_fixtures.py tests/fixtures/y4m

Needs: numpy, opencv-python-headless. No ffmpeg: the files are written here byte by byte.
"""

import json
import os
import sys

import cv2
import numpy as np

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/y4m"
FRAMES = 3

# (file name, size, colour-space tag, chroma subsampling (x, y) or None for luma only, extra
# params, content). OpenCV's libswscale converts 4:2:0 and 4:2:2 of even height with its
# unscaled converter (exact here, tested on noise, every value reachable); odd heights, 4:4:4 and
# mono go through its general scaler, which we approximate (tested on natural, in-gamut content).
CASES = [
    ("c420jpeg", (38, 30), "C420jpeg", (2, 2), "", "noise"),
    ("c420mpeg2", (38, 30), "C420mpeg2", (2, 2), "", "noise"),
    ("c420paldv", (38, 30), "C420paldv", (2, 2), "", "noise"),
    ("c420_full", (38, 30), "C420jpeg", (2, 2), " XCOLORRANGE=FULL", "noise"),
    ("c420_oddw", (37, 30), "C420jpeg", (2, 2), "", "noise"),
    ("c422", (38, 30), "C422", (2, 1), "", "noise"),
    ("no_tag", (38, 30), None, (2, 2), "", "noise"),
    ("c420_oddh", (37, 29), "C420jpeg", (2, 2), "", "natural"),
    ("c444", (38, 30), "C444", (1, 1), "", "natural"),
    ("c444_full", (38, 30), "C444", (1, 1), " XCOLORRANGE=FULL", "natural"),
    ("mono", (38, 30), "Cmono", None, "", "natural"),
]


def natural(rng, size, sub, full, k):
    """A smooth colour picture (gradients and a disc) as BT.601 YCbCr, then subsampled."""
    w, h = size
    x, y = np.meshgrid(np.arange(w) / w, np.arange(h) / h)
    disc = ((x - 0.3 - 0.1 * k) ** 2 + (y - 0.5) ** 2) < 0.06
    r = 40 + 180 * x
    g = 30 + 200 * y * (1 - disc) + 220 * disc
    b = 60 + 120 * (1 - x) + 10 * rng.standard_normal((h, w))
    r, g, b = [np.clip(c, 0, 255) for c in (r, g, b)]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    cb, cr = (b - luma) / 1.772, (r - luma) / 1.402
    if full:
        yy, u, v = luma, cb + 128, cr + 128
    else:
        yy, u, v = 16 + luma * 219 / 255, 128 + cb * 224 / 255, 128 + cr * 224 / 255
    yy = np.clip(np.round(yy), 0, 255).astype(np.uint8)
    if sub is None:
        return [yy]
    chroma = [np.clip(np.round(c[:: sub[1], :: sub[0]]), 0, 255).astype(np.uint8) for c in (u, v)]
    return [yy] + chroma


def noise(rng, size, sub):
    w, h = size
    y = rng.integers(0, 256, (h, w), dtype=np.uint8)
    if sub is None:
        return [y]
    cw, ch = -(-w // sub[0]), -(-h // sub[1])
    return [y] + [rng.integers(0, 256, (ch, cw), dtype=np.uint8) for _ in range(2)]


def write(path, size, tag, sub, extra, content, rng):
    colour = f" {tag}" if tag else ""
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{size[0]} H{size[1]} F25:1 Ip A1:1{colour}{extra}\n".encode())
        for k in range(FRAMES):
            f.write(b"FRAME\n")
            if content == "noise":
                ps = noise(rng, size, sub)
            else:
                ps = natural(rng, size, sub, "FULL" in extra, k)
            for p in ps:
                f.write(p.tobytes())


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(7)
    index = {}
    for name, size, tag, sub, extra, content in CASES:
        path = os.path.join(OUT, f"{name}.y4m")
        write(path, size, tag, sub, extra, content, rng)
        cap = cv2.VideoCapture(path)
        n = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            cv2.imwrite(os.path.join(OUT, f"{name}_{n}.png"), bgr)  # PNG holds RGB
            n += 1
        index[name] = {"frames": n, "fps": cap.get(cv2.CAP_PROP_FPS), "content": content}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"opencv": cv2.__version__, "cases": index}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
