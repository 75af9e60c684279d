"""JPEG (and PNG) decoding fixtures: varied files and what `cv2.imread` makes of them.

The benchmark inference scripts read every frame with `cv2.imread(path)` (IMREAD_COLOR: libjpeg-turbo
with its default accurate integer IDCT and fancy upsampling, EXIF orientation applied, CMYK through
OpenCV's own conversion) followed by `cv2.cvtColor(BGR2RGB)`. This script writes a set of files
covering the cases a decoder can get wrong, and for each the SHA-256 of that RGB buffer:

    python tools/reference/jpeg_fixtures.py tests/fixtures/jpeg

Needs: numpy, opencv-python-headless, pillow; cjpeg and jpegtran (Debian libjpeg-turbo-progs) and
the helper tools/reference/make_cmyk_jpeg.c built against libjpeg (Debian libjpeg62-turbo-dev):
    gcc -O2 -o /tmp/make_cmyk_jpeg tools/reference/make_cmyk_jpeg.c -ljpeg
(MAKE_CMYK_JPEG names the binary). Inputs are synthetic (seeded), so the set is reproducible.
"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import cv2
import numpy as np
from PIL import Image

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/jpeg"
HELPER = os.environ.get("MAKE_CMYK_JPEG", "/tmp/make_cmyk_jpeg")


def pattern(w, h, seed):
    """Gradients, hard edges, a disc and noise: exercises every DCT frequency and the upsampler."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 127 + 120 * np.sin(x / 3.0 + y / 5.0)
    img = np.stack([r, g, b], -1)
    img[(x // 8 + y // 8) % 2 == 0] *= 0.6
    cx, cy, rad = w * 0.6, h * 0.4, max(min(w, h) / 3.0, 1)
    img[(x - cx) ** 2 + (y - cy) ** 2 < rad**2] = [230, 30, 40]
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def pil_save(name, arr, mode="RGB", **kw):
    im = Image.fromarray(arr).convert(mode)
    path = os.path.join(OUT, name)
    im.save(path, "JPEG", **kw)
    return path


def cjpeg(name, arr, *args):
    path = os.path.join(OUT, name)
    with tempfile.NamedTemporaryFile(suffix=".ppm") as t:
        Image.fromarray(arr).save(t.name)
        subprocess.run(["cjpeg", *args, "-outfile", path, t.name], check=True)
    return path


def jpegtran(name, src, *args):
    path = os.path.join(OUT, name)
    subprocess.run(["jpegtran", *args, "-outfile", path, src], check=True)
    return path


def four_channel(name, arr, transform, quality):
    rgb = arr.astype(np.int32)
    k = 255 - rgb.max(-1)
    cmy = 255 - rgb - k[..., None]
    cmyk = np.concatenate([cmy, k[..., None]], -1).astype(np.uint8)
    path = os.path.join(OUT, name)
    with tempfile.NamedTemporaryFile(suffix=".cmyk") as t:
        t.write(cmyk.tobytes())
        t.flush()
        h, w = arr.shape[:2]
        subprocess.run([HELPER, t.name, str(w), str(h), transform, str(quality), path], check=True)
    return path


def with_orientation(name, arr, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return pil_save(name, arr, exif=exif.tobytes(), quality=88, subsampling=2)


def png(name, arr, mode):
    path = os.path.join(OUT, name)
    im = Image.fromarray(arr)
    if mode == "I;16":
        im = Image.fromarray((arr[..., 0].astype(np.uint16) * 257 + 3).astype(np.uint16))
    elif mode == "P":
        im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=37)
    else:
        im = im.convert(mode)
    im.save(path, "PNG")
    return path


def cases():
    p = pattern
    yield pil_save("pil_q95_444.jpg", p(320, 240, 1), quality=95, subsampling=0)
    yield pil_save("pil_q90_422.jpg", p(320, 240, 2), quality=90, subsampling=1)
    yield pil_save("pil_q75_420.jpg", p(320, 240, 3), quality=75, subsampling=2)
    yield pil_save("pil_q30_420.jpg", p(320, 240, 4), quality=30, subsampling=2)
    yield pil_save("pil_q10_444.jpg", p(320, 240, 5), quality=10, subsampling=0)
    yield pil_save("pil_q100_420.jpg", p(160, 120, 6), quality=100, subsampling=2)
    for i, (w, h) in enumerate([(1, 1), (2, 3), (7, 5), (17, 9), (33, 65), (255, 3), (3, 255), (250, 141)]):
        yield pil_save(f"pil_420_{w}x{h}.jpg", p(w, h, 10 + i), quality=85, subsampling=2)
    for i, (w, h) in enumerate([(17, 9), (33, 65), (1, 7)]):
        yield pil_save(f"pil_422_{w}x{h}.jpg", p(w, h, 20 + i), quality=85, subsampling=1)
    yield pil_save("pil_progressive_420.jpg", p(320, 240, 30), quality=85, subsampling=2, progressive=True)
    yield pil_save("pil_progressive_444_101x77.jpg", p(101, 77, 31), quality=85, subsampling=0, progressive=True)
    yield pil_save("pil_optimize_420.jpg", p(200, 150, 32), quality=80, subsampling=2, optimize=True)
    yield pil_save("pil_large_640x360.jpg", p(640, 360, 33), quality=90, subsampling=2)
    yield pil_save("pil_gray.jpg", p(320, 240, 40), mode="L", quality=85)
    yield pil_save("pil_gray_33x17.jpg", p(33, 17, 41), mode="L", quality=60)
    yield pil_save("pil_gray_progressive.jpg", p(120, 90, 42), mode="L", quality=85, progressive=True)
    yield pil_save("pil_cmyk.jpg", p(96, 64, 50), mode="CMYK", quality=90)
    yield pil_save("pil_cmyk_progressive.jpg", p(65, 33, 51), mode="CMYK", quality=90, progressive=True)
    yield four_channel("libjpeg_ycck.jpg", p(96, 64, 52), "ycck", 90)
    yield four_channel("libjpeg_ycck_odd.jpg", p(37, 21, 53), "ycck", 75)
    yield four_channel("libjpeg_cmyk.jpg", p(48, 40, 54), "cmyk", 85)
    yield cjpeg("cjpeg_restart_row.jpg", p(160, 120, 60), "-restart", "1")
    yield cjpeg("cjpeg_restart_5blocks.jpg", p(100, 70, 61), "-restart", "5B")
    yield cjpeg("cjpeg_arithmetic.jpg", p(160, 120, 62), "-arithmetic")
    yield cjpeg("cjpeg_arithmetic_progressive.jpg", p(99, 51, 63), "-arithmetic", "-progressive")
    yield cjpeg("cjpeg_440.jpg", p(81, 59, 64), "-sample", "1x2")
    yield cjpeg("cjpeg_411.jpg", p(83, 45, 65), "-sample", "4x1")
    yield cjpeg("cjpeg_410.jpg", p(70, 44, 66), "-sample", "4x2")
    yield cjpeg("cjpeg_chroma_larger.jpg", p(64, 40, 67), "-sample", "1x1,2x2,1x1")
    yield cjpeg("cjpeg_mixed_420_422.jpg", p(57, 35, 68), "-sample", "2x2,1x1,2x1")
    yield cjpeg("cjpeg_rgb.jpg", p(64, 48, 69), "-rgb")
    yield cjpeg("cjpeg_grayscale.jpg", p(64, 48, 70), "-grayscale")
    yield cjpeg("cjpeg_smooth.jpg", p(96, 72, 71), "-smooth", "40")
    yield cjpeg("cjpeg_q5_baseline.jpg", p(96, 72, 72), "-quality", "5", "-baseline")
    yield cjpeg("cjpeg_dct_float.jpg", p(96, 72, 73), "-dct", "float", "-quality", "97")
    yield cjpeg("cjpeg_progressive_restart.jpg", p(120, 80, 74), "-progressive", "-restart", "2")
    base = pil_save("base_for_jpegtran.jpg", p(128, 96, 80), quality=85, subsampling=2)
    yield jpegtran("jpegtran_progressive.jpg", base, "-progressive")
    yield jpegtran("jpegtran_restart.jpg", base, "-restart", "3B")
    os.remove(base)
    for o in range(1, 9):
        yield with_orientation(f"exif_orientation_{o}.jpg", p(37, 23, 90 + o), o)
    for f in ["00000.jpg", "00017.jpg"]:
        src = os.path.join(os.path.dirname(__file__), "../../examples/demo/frames", f)
        dst = os.path.join(OUT, f"demo_{f}")
        shutil.copyfile(src, dst)
        yield dst
    yield png("png_rgb.png", p(45, 31, 100), "RGB")
    yield png("png_rgba.png", np.concatenate([p(45, 31, 101), p(45, 31, 102)[..., :1]], -1), "RGBA")
    yield png("png_gray.png", p(45, 31, 103), "L")
    yield png("png_gray16.png", p(45, 31, 104), "I;16")
    yield png("png_palette.png", p(45, 31, 105), "P")


def main():
    os.makedirs(OUT, exist_ok=True)
    entries = []
    for path in cases():
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        assert bgr is not None, path
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        pil = None
        if path.endswith(".jpg") and "exif" not in path and "cmyk" not in path and "ycck" not in path:
            pil = np.asarray(Image.open(path).convert("RGB"))
        entries.append(
            {
                "file": os.path.basename(path),
                "width": rgb.shape[1],
                "height": rgb.shape[0],
                "sha256": hashlib.sha256(rgb.tobytes()).hexdigest(),
                "pillow_agrees": None if pil is None else bool(np.array_equal(pil, rgb)),
            }
        )
    meta = {
        "reference": f"cv2.imread(IMREAD_COLOR) + cvtColor(BGR2RGB), OpenCV {cv2.__version__}",
        "files": entries,
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{len(entries)} files; Pillow agrees on "
          f"{sum(e['pillow_agrees'] is True for e in entries)} of "
          f"{sum(e['pillow_agrees'] is not None for e in entries)} plain JPEGs")


if __name__ == "__main__":
    main()
