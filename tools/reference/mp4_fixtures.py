"""mp4 decoding fixtures: small H.264 clips and what `cv2.VideoCapture` makes of them.

VideoLISA's chat.py reads videos with `cv2.VideoCapture` (FFmpeg inside OpenCV: the mov demuxer
with its edit-list handling, the H.264 decoder, libswscale's YUV→BGR24, the track rotation).
For each clip this writes the number of frames OpenCV returns and the SHA-256 of every frame
after `cvtColor(BGR2RGB)`:

    python tools/reference/mp4_fixtures.py tests/fixtures/mp4

Needs: numpy, opencv-python-headless, and an `ffmpeg` with libx264 (Debian's) to make the clips.
Clips the built-in decoder must refuse (10-bit, 4:4:4, interlaced) are written too, without hashes.

Most clips are encoded without the deblocking filter: OpenH264 deblocks a few B-frame edges
differently from FFmpeg's decoder (a handful of pixels by a few levels), so those clips test
everything after the decoder bit for bit. `high_bframes.mp4` keeps x264's defaults; its frames are
also stored (the first STRIP of them, one PNG strip) so the test can measure that decoder
difference.
"""

import hashlib
import json
import os
import subprocess
import sys

import cv2
import numpy as np

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/mp4"
STRIP = 10


def ff(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def source(name, size="96x64", rate=10, seconds=3, pix="yuv420p", extra=()):
    path = os.path.join(OUT, name)
    ff("-f", "lavfi", "-i", f"testsrc2=duration={seconds}:size={size}:rate={rate}",
       "-c:v", "libx264", "-pix_fmt", pix, "-g", "12", *extra, path)
    return path


def remux(name, src, *args, before=()):
    path = os.path.join(OUT, name)
    ff(*before, "-i", src, "-c", "copy", *args, path)
    return path


def frames(path, strip=None):
    cap = cv2.VideoCapture(path)
    hashes, size, rows = [], None, []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        size = [rgb.shape[1], rgb.shape[0]]
        hashes.append(hashlib.sha256(rgb.tobytes()).hexdigest())
        rows.append(bgr)
    if strip:
        cv2.imwrite(strip, np.concatenate(rows[:STRIP], 0))
    return hashes, size


def main():
    os.makedirs(OUT, exist_ok=True)
    high = source("high_bframes.mp4")
    plain = source("bframes_nodeblock.mp4", extra=("-x264opts", "no-deblock=1"))
    clips = [
        high,
        plain,
        source("baseline.mp4", seconds=1, extra=("-profile:v", "baseline")),
        remux("cut_editlist.mp4", plain, before=("-ss", "1.05")),
        remux("delay_empty_edit.mp4", plain, before=("-itsoffset", "0.4")),
        remux("faststart.mp4", plain, "-movflags", "+faststart"),
        remux("rotate90.mp4", plain, "-metadata:s:v:0", "rotate=90"),
        remux("rotate180.mp4", plain, "-metadata:s:v:0", "rotate=180"),
        remux("rotate270.mp4", plain, "-metadata:s:v:0", "rotate=270"),
        source("bt709.mp4", seconds=1, extra=("-colorspace", "bt709", "-color_primaries", "bt709",
                                              "-color_trc", "bt709")),
        source("full_range.mp4", seconds=1, pix="yuvj420p"),
        source("cropped_98x62.mp4", size="98x62", seconds=1),
    ]
    entries = []
    for path in clips:
        strip = path[:-4] + ".frames.png" if path == high else None
        hashes, size = frames(path, strip)
        entries.append({"file": os.path.basename(path), "frames": len(hashes), "size": size,
                        "sha256": hashes, "strip": os.path.basename(strip) if strip else None})
    refused = [
        source("high10.mp4", size="32x32", seconds=0.2, pix="yuv420p10le"),
        source("high444.mp4", size="32x32", seconds=0.2, pix="yuv444p"),
        source("interlaced.mp4", size="32x32", seconds=0.2, extra=("-flags", "+ildct+ilme")),
    ]
    meta = {
        "reference": f"cv2.VideoCapture + cvtColor(BGR2RGB), OpenCV {cv2.__version__}",
        "clips": entries,
        "refused": [os.path.basename(p) for p in refused],
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{len(entries)} clips, {sum(e['frames'] for e in entries)} frames; {len(refused)} refused")


if __name__ == "__main__":
    main()
