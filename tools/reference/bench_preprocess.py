"""Times the reference preprocessing on the frames benches/preprocess.rs uses.
Prints `w h clip_seconds sam_seconds` per line (median of 9)."""
import time

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import resize as tv_resize, to_pil_image
from transformers import CLIPImageProcessor
from transformers.image_utils import ChannelDimension

torch.set_num_threads(2)
CLIP = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                          image_mean=[0.48145466, 0.4578275, 0.40821073],
                          image_std=[0.26862954, 0.26130258, 0.27577711])
MEAN = torch.Tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
STD = torch.Tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)


def sam(img):
    h, w = img.shape[:2]
    s = 1024 / max(h, w)
    nh, nw = int(h * s + 0.5), int(w * s + 0.5)
    x = torch.from_numpy(np.array(tv_resize(to_pil_image(img), (nh, nw)))).permute(2, 0, 1).contiguous()
    return F.pad((x - MEAN) / STD, (0, 1024 - nw, 0, 1024 - nh))


def med(f):
    t = []
    for _ in range(9):
        s = time.perf_counter()
        f()
        t.append(time.perf_counter() - s)
    return sorted(t)[4]


for (w, h) in [(1280, 720), (854, 480), (1920, 1080)]:
    x, y = np.meshgrid(np.arange(w, dtype=np.uint32), np.arange(h, dtype=np.uint32))
    img = np.stack([(x * 7 + y) % 256, (x ^ y) % 256, (x * y) % 256], -1).astype(np.uint8)
    c = med(lambda: CLIP.preprocess(img, return_tensors="np", input_data_format=ChannelDimension.LAST))
    s = med(lambda: sam(img))
    print(w, h, c, s, flush=True)
