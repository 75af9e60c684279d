"""PyTorch side of benches/sam.rs: same weights (sam.pth from sam_fixtures.py), same frame, same loop.
Usage: bench_sam.py DIR FRAMES f32|bf16 cpu|cuda"""
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from sam_fixtures import build  # noqa: E402
from segment_anything.utils.transforms import ResizeLongestSide  # noqa: E402

torch.set_num_threads(int(os.environ.get("VIDEOLISA_THREADS", "2")))


@torch.no_grad()
def main():
    d, frames, dt, dev = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    sd = torch.load(os.path.join(d, "sam.pth"))
    kind = "vit_b" if sd["image_encoder.patch_embed.proj.weight"].shape[0] == 768 else "tiny"
    sam = build(kind)
    sam.load_state_dict(sd, strict=False)
    dtype = torch.bfloat16 if dt == "bf16" else torch.float32
    sam = sam.to(dev)
    # upstream SAM builds the PE grid in f32, which cannot multiply a bf16 matrix: take it first
    pe = sam.prompt_encoder.get_dense_pe().to(dtype)
    sam = sam.to(dtype)
    x, y = np.meshgrid(np.arange(640, dtype=np.uint32), np.arange(360, dtype=np.uint32))
    img = np.stack([(x * 7 + y) % 256, (x ^ y) % 256, (x * y) % 256], -1).astype(np.uint8)
    t = ResizeLongestSide(sam.image_encoder.img_size)
    inp = t.apply_image(img)
    size = inp.shape[:2]
    px = sam.preprocess(torch.as_tensor(inp).permute(2, 0, 1)[None].float().to(dev)).to(dtype)
    text = torch.ones(1, 1, sam.prompt_encoder.embed_dim, device=dev, dtype=dtype)

    def one():
        emb = sam.image_encoder(px)
        sparse, dense = sam.prompt_encoder(points=None, boxes=None, masks=None)
        sparse = torch.cat([sparse.to(dtype), text], 1)
        low, _ = sam.mask_decoder(emb, pe, sparse, dense.to(dtype), multimask_output=False)
        m = sam.postprocess_masks(low.float(), size, (360, 640)) > 0
        m.cpu()

    one()
    s = time.perf_counter()
    for _ in range(frames):
        one()
    el = time.perf_counter() - s
    print(f"pytorch {torch.__version__} threads {torch.get_num_threads()}: {frames / el:.3f} frames/s ({el / frames:.2f} s/frame)")
    print(f"pytorch fps {frames / el}")


if __name__ == "__main__":
    main()
