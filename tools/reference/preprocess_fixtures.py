"""Reference outputs for src/preprocess and src/sampling.

Writes tests/fixtures/preprocess.json and tests/fixtures/sampling.txt.
Needs: numpy, pillow, transformers==4.41.0, torch, torchvision (see tools/reference/requirements.txt).

CLIP: transformers' CLIPImageProcessor with the openai/clip-vit-large-patch14-336 preprocessor_config
values (resize shortest_edge 336 bicubic, center crop 336, rescale 1/255, normalize).
SAM: segment-anything's ResizeLongestSide.apply_image (torchvision resize of a PIL image = PIL bilinear)
then VideoLISA's preprocess (normalize with pixel mean/std in 0-255 units, zero-pad bottom/right).
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.functional import resize as tv_resize, to_pil_image
from transformers import CLIPImageProcessor
from transformers.image_utils import ChannelDimension

sys.path.insert(0, os.path.dirname(__file__))
from common import sha256, test_image  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
OUT = os.path.join(ROOT, "tests", "fixtures")

CLIP = CLIPImageProcessor(
    do_resize=True, size={"shortest_edge": 336}, resample=3, do_center_crop=True,
    crop_size={"height": 336, "width": 336}, do_rescale=True, rescale_factor=1 / 255,
    do_normalize=True, image_mean=[0.48145466, 0.4578275, 0.40821073],
    image_std=[0.26862954, 0.26130258, 0.27577711], do_convert_rgb=True,
)
PIXEL_MEAN = torch.Tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
PIXEL_STD = torch.Tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)

# (width, height, seed): tiny, odd, portrait, landscape, identity, up- and downscales.
SIZES = [
    (1, 1, 1), (2, 2, 2), (3, 5, 3), (7, 4, 4), (17, 13, 5), (31, 64, 6), (64, 31, 7),
    (100, 100, 8), (335, 336, 9), (336, 336, 10), (337, 335, 11), (500, 375, 12),
    (375, 500, 13), (640, 480, 14), (480, 640, 15), (854, 480, 16), (480, 854, 17),
    (1280, 720, 18), (720, 1280, 19), (1024, 1024, 20), (1025, 1023, 21), (1920, 1080, 22),
    (20, 400, 23), (400, 20, 24),
]


def samples(flat, n=48, seed=0):
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(flat.size, size=min(n, flat.size), replace=False))
    return [[int(i), flat[i].item()] for i in idx]


def clip_ref(img):
    h, w = img.shape[:2]
    # The same call chat.py makes; input_data_format is given because a 1- or 3-pixel-high
    # image would otherwise be mistaken for channels-first by transformers' guess.
    size = CLIP.size["shortest_edge"]
    from transformers.image_transforms import get_resize_output_image_size, resize
    out_hw = get_resize_output_image_size(img, size=size, default_to_square=False,
                                          input_data_format=ChannelDimension.LAST)
    resized = resize(img, size=out_hw, resample=3, input_data_format=ChannelDimension.LAST)
    pv = CLIP.preprocess(img, return_tensors="np", input_data_format=ChannelDimension.LAST)["pixel_values"][0]
    assert pv.dtype == np.float32 and pv.shape == (3, 336, 336)
    return resized, pv


def sam_ref(img):
    h, w = img.shape[:2]
    scale = 1024 * 1.0 / max(h, w)
    newh, neww = int(h * scale + 0.5), int(w * scale + 0.5)
    resized = np.array(tv_resize(to_pil_image(img), (newh, neww)))
    x = torch.from_numpy(resized).permute(2, 0, 1).contiguous()
    x = (x - PIXEL_MEAN) / PIXEL_STD
    x = F.pad(x, (0, 1024 - neww, 0, 1024 - newh))
    return resized, x.numpy()


def pil_resize_cases():
    """Direct PIL resizes over a grid of sizes and both filters."""
    cases = []
    src = test_image(23, 17, 99)
    pil = Image.fromarray(src)
    for (w, h) in [(1, 1), (5, 3), (11, 17), (23, 17), (46, 34), (24, 16), (69, 5), (2, 51), (100, 80)]:
        for name, f in [("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)]:
            out = np.array(pil.resize((w, h), f))
            cases.append({"w": w, "h": h, "filter": name, "sha256": sha256(out),
                          "samples": samples(out.reshape(-1), 16, w * 31 + h)})
    return {"src": [23, 17, 99], "cases": cases}


def main():
    images = []
    for (w, h, seed) in SIZES:
        img = test_image(w, h, seed)
        cr, cpv = clip_ref(img)
        sr, spv = sam_ref(img)
        images.append({
            "width": w, "height": h, "seed": seed,
            "input_sha256": sha256(img),
            "clip": {"resized": [cr.shape[1], cr.shape[0]], "resized_sha256": sha256(cr),
                     "resized_samples": samples(cr.reshape(-1), 32, seed),
                     "pixel_values_sha256": sha256(cpv.astype("<f4")),
                     "pixel_values_samples": samples(cpv.reshape(-1), 64, seed + 1)},
            "sam": {"resized": [sr.shape[1], sr.shape[0]], "resized_sha256": sha256(sr),
                    "resized_samples": samples(sr.reshape(-1), 32, seed + 2),
                    "pixel_values_sha256": sha256(spv.astype("<f4")),
                    "pixel_values_samples": samples(spv.reshape(-1), 64, seed + 3)},
        })
        print(f"{w}x{h}: clip {cr.shape[1]}x{cr.shape[0]} sam {sr.shape[1]}x{sr.shape[0]}", flush=True)
    import PIL
    import transformers
    import torchvision
    doc = {"generator": "tools/reference/preprocess_fixtures.py",
           "versions": {"pillow": PIL.__version__, "transformers": transformers.__version__,
                        "torch": torch.__version__, "torchvision": torchvision.__version__,
                        "numpy": np.__version__},
           "images": images, "pil_resize": pil_resize_cases()}
    with open(os.path.join(OUT, "preprocess.json"), "w") as f:
        json.dump(doc, f, indent=1)

    # Sampling: exact numpy output of VideoLISA's functions (chat.py:71-99).
    def uniform_sample(total_len, n):
        iv = np.linspace(0, total_len, n + 1).astype(int)
        return [(iv[i] + (iv[i + 1] - 1)) // 2 for i in range(n)]

    def get_sparse_indices(T, n_sparse):
        if T > n_sparse:
            return sorted(uniform_sample(T, n_sparse))
        rep, rem = divmod(n_sparse, T)
        return sorted(list(range(T)) * rep + uniform_sample(T, rem))

    def get_dense_indices(n_sparse, n_dense):
        iv = np.linspace(0, n_sparse - 1, n_dense + 1).astype(int)
        return [(iv[i] + (iv[i + 1] - 1)) // 2 for i in range(n_dense)]

    with open(os.path.join(OUT, "sampling.txt"), "w") as f:
        f.write("# T n_sparse n_dense | sparse indices | dense indices (numpy reference)\n")
        combos = [(32, 4)] * 1 + [(50, 4), (8, 2), (16, 3), (7, 7), (1, 1), (3, 5), (64, 8)]
        for (ns, nd) in combos:
            Ts = range(1, 2001) if (ns, nd) == (32, 4) else list(range(1, 130)) + [997, 1999, 2000, 4321]
            dense = get_dense_indices(ns, nd)
            for T in Ts:
                sp = get_sparse_indices(T, ns)
                f.write(f"{T} {ns} {nd} | {' '.join(map(str, sp))} | {' '.join(map(str, dense))}\n")


if __name__ == "__main__":
    main()
