"""Benchmark helper for benches/videolisa.rs: random VideoLISA checkpoints of a given size and the
Python reference pipeline timed per stage.

  python tools/reference/bench_videolisa.py make mid DIR        # random checkpoint files (bf16)
  python tools/reference/bench_videolisa.py manifest full DIR   # configs + tensor manifest only
  python tools/reference/bench_videolisa.py run DIR FRAMES_DIR  # reference pipeline, JSON timings

Sizes: mid = Phi-3 with 8 layers of the real widths, CLIP ViT-L/14-336 widths with 8 layers,
SAM ViT-H widths with 8 blocks; full = the real VideoLISA-3.8B + CLIP ViT-L/14-336 + SAM ViT-H
shapes (weights made in memory by the Rust bench). The tokenizer is the tiny fixture's.
Everything runs in float32 on 2 CPU threads.
"""
import glob
import json
import os
import shutil
import sys
import time
from functools import partial

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, LlamaTokenizer, Phi3Config, Phi3Model

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from videolisa_fixtures import (get_dense_indices, get_sparse_indices, phi3_prompt, sam_pixels,  # noqa: E402
                                tokenizer_image_token)

torch.set_num_threads(2)
TINY = os.path.join(REPO, "tests", "fixtures", "videolisa_tiny")

SIZES = {
    "mid": dict(llm_layers=8, clip_layers=8, sam_depth=8, sam_global=[3, 7]),
    "full": dict(llm_layers=32, clip_layers=24, sam_depth=32, sam_global=[7, 15, 23, 31]),
}


def configs(size):
    s = SIZES[size]
    pcfg = Phi3Config(vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=s["llm_layers"],
                      num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                      original_max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
                      sliding_window=2047, bos_token_id=1, eos_token_id=32000, pad_token_id=0)
    pcfg._attn_implementation = "eager"
    vcfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=s["clip_layers"],
                            num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
                            hidden_act="quick_gelu")
    return pcfg, vcfg


def build_sam(size):
    s = SIZES[size]
    return Sam(
        image_encoder=ImageEncoderViT(depth=s["sam_depth"], embed_dim=1280, img_size=1024, mlp_ratio=4,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=16, patch_size=16,
                                      qkv_bias=True, use_rel_pos=True, global_attn_indexes=s["sam_global"],
                                      window_size=14, out_chans=256),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                                     mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=256,
                                 mlp_dim=2048, num_heads=8), transformer_dim=256, iou_head_depth=3,
                                 iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


def extra_shapes():
    d = 3072
    return {"model.mm_projector.0.weight": (d, 1024), "model.mm_projector.0.bias": (d,),
            "model.mm_projector.2.weight": (d, d), "model.mm_projector.2.bias": (d,),
            "model.text_hidden_fcs.0.0.weight": (d, d), "model.text_hidden_fcs.0.0.bias": (d,),
            "model.text_hidden_fcs.0.2.weight": (256, d), "model.text_hidden_fcs.0.2.bias": (256,)}


def write_configs(size, out):
    pcfg, vcfg = configs(size)
    os.makedirs(os.path.join(out, "model"), exist_ok=True)
    os.makedirs(os.path.join(out, "clip"), exist_ok=True)
    cfg = json.load(open(os.path.join(TINY, "model", "config.json")))
    p = pcfg.to_dict()
    for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "sliding_window"):
        cfg[k] = p[k]
    cfg.update({"mm_hidden_size": 1024, "out_dim": 256, "eos_token_id": 32000})
    json.dump(cfg, open(os.path.join(out, "model", "config.json"), "w"), indent=2)
    for f in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        shutil.copy(os.path.join(TINY, "model", f), os.path.join(out, "model", f))
    vcfg.save_pretrained(os.path.join(out, "clip"))
    CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}).save_pretrained(
        os.path.join(out, "clip"))
    return pcfg, vcfg


def manifest(size, out):
    pcfg, vcfg = write_configs(size, out)
    with torch.device("meta"):
        llm, clip, sam = Phi3Model(pcfg), CLIPVisionModel(vcfg), build_sam(size)
    m = {"model." + k: list(v.shape) for k, v in llm.state_dict().items()}
    m.update({k: list(v) for k, v in extra_shapes().items()})
    m.update({"model.visual_model." + k: list(v.shape) for k, v in sam.state_dict().items()
              if k not in ("pixel_mean", "pixel_std")})
    c = {k: list(v.shape) for k, v in clip.state_dict().items() if not k.endswith("position_ids")}
    json.dump({"model": m, "clip": c}, open(os.path.join(out, "manifest.json"), "w"))
    print(f"{sum(np.prod(s) for s in m.values()) / 1e9:.2f} B + CLIP {sum(np.prod(s) for s in c.values()) / 1e9:.2f} B")


@torch.no_grad()
def make(size, out):
    pcfg, vcfg = write_configs(size, out)
    gen = torch.Generator().manual_seed(0)

    def rnd(shape, name):
        if "norm" in name and name.endswith("weight"):
            return torch.ones(shape)
        return torch.randn(shape, generator=gen) * 0.02

    llm, clip, sam = Phi3Model(pcfg), CLIPVisionModel(vcfg), build_sam(size)
    sd = {"model." + k: rnd(v.shape, k) for k, v in llm.state_dict().items()}
    sd.update({k: rnd(v, k) for k, v in extra_shapes().items()})
    sd.update({"model.visual_model." + k: rnd(v.shape, k) for k, v in sam.state_dict().items()
               if k not in ("pixel_mean", "pixel_std")})
    sd = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    save_file(sd, os.path.join(out, "model", "model.safetensors"), metadata={"format": "pt"})
    csd = {k: rnd(v.shape, k).to(torch.bfloat16) for k, v in clip.state_dict().items()
           if not k.endswith("position_ids")}
    save_file(csd, os.path.join(out, "clip", "model.safetensors"), metadata={"format": "pt"})


@torch.no_grad()
def run(d, frames_dir):
    t = {k: 0.0 for k in ("load", "decode", "preprocess", "clip", "llm", "sam_encode", "sam_decode", "write")}
    t0 = time.perf_counter()
    cfg = json.load(open(os.path.join(d, "model", "config.json")))
    pcfg = Phi3Config(**{k: v for k, v in cfg.items() if k in Phi3Config().to_dict()})
    pcfg._attn_implementation = "eager"
    sd = {}
    for f in sorted(glob.glob(os.path.join(d, "model", "*.safetensors"))):
        sd.update({k: v.float() for k, v in load_file(f).items()})
    llm = Phi3Model(pcfg).eval()
    llm.load_state_dict({k[6:]: v for k, v in sd.items() if k.startswith("model.") and ".mm_projector" not in k
                         and ".text_hidden_fcs" not in k and ".visual_model" not in k})
    if pcfg.num_hidden_layers in (8, 32):
        sam = build_sam("mid" if pcfg.num_hidden_layers == 8 else "full")
    else:
        from sam_fixtures import build as build_tiny_sam
        sam = build_tiny_sam("tiny")
    sam.load_state_dict({k[len("model.visual_model."):]: v for k, v in sd.items() if ".visual_model." in k},
                        strict=False)
    clip = CLIPVisionModel.from_pretrained(os.path.join(d, "clip"), torch_dtype=torch.float32).eval()
    proc = CLIPImageProcessor.from_pretrained(os.path.join(d, "clip"))
    tok = LlamaTokenizer.from_pretrained(os.path.join(d, "model"))
    t["load"] = time.perf_counter() - t0

    s = time.perf_counter()
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(glob.glob(os.path.join(frames_dir, "*.png")) + glob.glob(os.path.join(frames_dir, "*.jpg")))]
    t["decode"] = time.perf_counter() - s
    sparse, dense = get_sparse_indices(len(frames)), get_dense_indices()
    s = time.perf_counter()
    pix = torch.as_tensor(proc.preprocess([frames[i] for i in sparse], return_tensors="np")["pixel_values"])
    t["preprocess"] += time.perf_counter() - s
    s = time.perf_counter()
    hs = clip(pixel_values=pix, output_hidden_states=True).hidden_states[-2][:, 1:]
    feats = torch.nn.functional.gelu(hs @ sd["model.mm_projector.0.weight"].T + sd["model.mm_projector.0.bias"])
    feats = feats @ sd["model.mm_projector.2.weight"].T + sd["model.mm_projector.2.bias"]
    visual = torch.cat([feats.mean(dim=1), feats[dense].flatten(0, 1)], 0)
    t["clip"] = time.perf_counter() - s
    s = time.perf_counter()
    ids = tokenizer_image_token(tok, phi3_prompt("Please segment the red ball in this image."))
    p = ids.index(-200)
    emb = llm.embed_tokens
    embeds = torch.cat([emb(torch.tensor(ids[:p])), visual, emb(torch.tensor(ids[p + 1:]))], 0)[None]
    hidden = llm(inputs_embeds=embeds).last_hidden_state[0]
    seg = tok("[SEG]", add_special_tokens=False).input_ids[-1]
    h = hidden[ids.index(seg) + visual.shape[0] - 2][None]
    e = torch.relu(h @ sd["model.text_hidden_fcs.0.0.weight"].T + sd["model.text_hidden_fcs.0.0.bias"])
    e = e @ sd["model.text_hidden_fcs.0.2.weight"].T + sd["model.text_hidden_fcs.0.2.bias"]
    t["llm"] = time.perf_counter() - s
    out = os.path.join(d, "py_out")
    os.makedirs(out, exist_ok=True)
    for i, f in enumerate(frames):
        s = time.perf_counter()
        x, input_size = sam_pixels(sam, f)
        t["preprocess"] += time.perf_counter() - s
        s = time.perf_counter()
        ie = sam.image_encoder(x)
        t["sam_encode"] += time.perf_counter() - s
        s = time.perf_counter()
        sp, de = sam.prompt_encoder(points=None, boxes=None, masks=None)
        sp = torch.cat([sp, e[:, None, :]], 1)
        low, _ = sam.mask_decoder(ie, sam.prompt_encoder.get_dense_pe(), sp, de, multimask_output=False)
        m = sam.postprocess_masks(low, input_size, f.shape[:2])[0, 0] > 0
        t["sam_decode"] += time.perf_counter() - s
        s = time.perf_counter()
        Image.fromarray((m.numpy() * 255).astype(np.uint8)).save(os.path.join(out, f"{i:05d}.png"))
        t["write"] += time.perf_counter() - s
    t["seq_len"] = embeds.shape[1]
    print(json.dumps(t))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2], sys.argv[3])
    elif cmd == "manifest":
        manifest(sys.argv[2], sys.argv[3])
    elif cmd == "run":
        run(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
