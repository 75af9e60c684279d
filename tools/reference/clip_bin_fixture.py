"""A CLIP tower saved the way `openai/clip-vit-large-patch14-336` ships it on the hub: only a
`pytorch_model.bin` written by `torch.save` (zip format), float32, with the `position_ids` buffers
older transformers versions stored. Made from the tiny test tower (bf16 → f32 is exact), so the
test can require the same visual tokens as from `model.safetensors`:

    python tools/reference/clip_bin_fixture.py   # → tests/fixtures/videolisa_tiny/clip_bin
"""

import json
import os
import shutil

import torch
from safetensors.torch import load_file

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
SRC = os.path.join(REPO, "tests", "fixtures", "videolisa_tiny", "clip")
OUT = os.path.join(REPO, "tests", "fixtures", "videolisa_tiny", "clip_bin")

os.makedirs(OUT, exist_ok=True)
sd = {k: v.to(torch.float32) for k, v in load_file(os.path.join(SRC, "model.safetensors")).items()}
cfg = json.load(open(os.path.join(SRC, "config.json")))
sd["vision_model.embeddings.position_ids"] = torch.arange(
    sd["vision_model.embeddings.position_embedding.weight"].shape[0]).unsqueeze(0)
sd["text_model.embeddings.position_ids"] = torch.arange(cfg["text_config"]["max_position_embeddings"]).unsqueeze(0)
torch.save(sd, os.path.join(OUT, "pytorch_model.bin"))
for f in ("config.json", "preprocessor_config.json"):
    shutil.copy(os.path.join(SRC, f), os.path.join(OUT, f))
print(f"{len(sd)} tensors, torch {torch.__version__}")
