"""XMem2's own `run_on_video` on a long clip, timed, for the side-by-side CPU benchmark
(`tools/bench/cpu.sh`): the same frames, masks, checkpoint and memory settings as our
`videolisa propagate` run.

  XMEM2=/path/to/XMem2@adc7d4c python tools/reference/bench_xmem.py make DIR FRAMES WIDTH HEIGHT
      # DIR/frames/frame_%06d.png (a moving ellipse over noise) and DIR/masks/ (frames 0, F/3, 2F/3)
  XMEM2=... python tools/reference/bench_xmem.py run DIR XMEM_PTH MEM_EVERY
      # one JSON line: seconds (whole run_on_video), step_seconds, consolidations, frames

The network is XMem2's, built as `xmem_fixtures.py` builds it (no pretrained downloads) and
loaded from XMEM_PTH; the CPU patches are that script's (warm-up tensor on the CPU, tensor
Resize without antialias as XMem2's pinned torchvision).
"""
import json
import os
import sys
import time

import torch
from PIL import Image

import xmem_fixtures as xf


def make(out, n, w, h):
    os.makedirs(f"{out}/frames", exist_ok=True)
    os.makedirs(f"{out}/masks", exist_ok=True)
    given = [0, n // 3, 2 * n // 3]
    for t in range(n):
        img, blob = xf.frame(w, h, t)
        Image.fromarray(img).save(f"{out}/frames/frame_{t:06d}.png")
        if t in given:
            xf.seed_mask(blob, False).save(f"{out}/masks/frame_{t:06d}.png")
    print(json.dumps({"frames": n, "given": given}))


def run(out, pth, mem_every):
    net = xf.XMem({}, None, pretrained_key_encoder=False, pretrained_value_encoder=False)
    net.load_state_dict(torch.load(pth, map_location="cpu"))
    net.eval()
    xf.patch_xmem2(net)
    frames = sorted(os.listdir(f"{out}/frames"))
    given = [frames.index(m) for m in sorted(os.listdir(f"{out}/masks"))]
    t = time.perf_counter()
    with torch.no_grad():
        xf.rov.run_on_video(f"{out}/frames", f"{out}/masks", f"{out}/xmem2_out", frames_with_masks=given,
                            print_progress=False, image_saving_max_queue_size=400,
                            overwrite_config={"model": pth, "mem_every": mem_every})
    secs = time.perf_counter() - t
    print(json.dumps({"seconds": secs, "step_seconds": xf.STATE.get("step_seconds"), "frames": len(frames),
                      "consolidations": len(xf.STATE["compress"]), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]))
