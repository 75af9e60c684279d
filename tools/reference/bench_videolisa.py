"""Benchmark helper for benches/videolisa.rs: random VideoLISA checkpoints of a given size and the
Python reference pipeline timed per stage.

  python tools/reference/bench_videolisa.py make mid DIR        # random checkpoint files (bf16)
  python tools/reference/bench_videolisa.py manifest full DIR   # configs + tensor manifest only
  python tools/reference/bench_videolisa.py run DIR FRAMES_DIR  # reference pipeline, JSON timings
  python tools/reference/bench_videolisa.py ids DIR             # the prompt's input ids (JSON)

`make` and `run` take `--device cuda` (random weights drawn on the GPU; the pipeline in bf16 as
the official `evaluate` runs it, every frame preprocessed and on the GPU before SAM encodes them
one at a time; CLIP and Phi-3 with PyTorch's SDPA attention: FlashAttention-2, which the
official code asks for, is not installed there) and `run` takes `--ids FILE` (from `ids`, made
with transformers 4.41: transformers 5 tokenizes the prompt differently).

Sizes (dry = 2 layers of each, for a quick run of the scripts): mid = Phi-3 with 8 layers of the real widths, CLIP ViT-L/14-336 widths with 8 layers,
SAM ViT-H widths with 8 blocks; full = the real VideoLISA-3.8B + CLIP ViT-L/14-336 + SAM ViT-H
shapes (weights made in memory by the Rust bench). The tokenizer is the tiny fixture's.
On the CPU everything runs in float32 on 2 threads.
"""
import argparse
import glob
import json
import os
import resource
import shutil
import sys
import time
from functools import partial

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
import transformers
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom
from segment_anything.utils.transforms import ResizeLongestSide
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
    "dry": dict(llm_layers=2, clip_layers=2, sam_depth=2, sam_global=[1]),  # tools/gpu/check.sh --dry
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
    c = {("" if k.startswith("vision_model.") else "vision_model.") + k: list(v.shape)
         for k, v in clip.state_dict().items() if not k.endswith("position_ids")}
    json.dump({"model": m, "clip": c}, open(os.path.join(out, "manifest.json"), "w"))
    print(f"{sum(np.prod(s) for s in m.values()) / 1e9:.2f} B + CLIP {sum(np.prod(s) for s in c.values()) / 1e9:.2f} B")


@torch.no_grad()
def make(size, out, device="cpu"):
    pcfg, vcfg = write_configs(size, out)
    gen = torch.Generator(device=device).manual_seed(0)

    def rnd(shape, name):
        if "norm" in name and name.endswith("weight"):
            return torch.ones(shape, dtype=torch.bfloat16)
        return (torch.randn(shape, generator=gen, device=device) * 0.02).to(torch.bfloat16).cpu()

    with torch.device("meta"):
        llm, clip, sam = Phi3Model(pcfg), CLIPVisionModel(vcfg), build_sam(size)
    sd = {"model." + k: rnd(v.shape, k) for k, v in llm.state_dict().items()}
    sd.update({k: rnd(v, k) for k, v in extra_shapes().items()})
    sd.update({"model.visual_model." + k: rnd(v.shape, k) for k, v in sam.state_dict().items()
               if k not in ("pixel_mean", "pixel_std")})
    save_file(sd, os.path.join(out, "model", "model.safetensors"), metadata={"format": "pt"})
    # the on-disk names of openai/clip-vit-large-patch14-336 (transformers 5's CLIPVisionModel
    # drops the `vision_model.` prefix from its own state dict)
    csd = {("" if k.startswith("vision_model.") else "vision_model.") + k: rnd(v.shape, k)
           for k, v in clip.state_dict().items() if not k.endswith("position_ids")}
    save_file(csd, os.path.join(out, "clip", "model.safetensors"), metadata={"format": "pt"})


class Timer:
    """Seconds per stage; on a GPU each stage ends with a synchronisation."""

    def __init__(self, device, keys):
        self.device, self.t = device, {k: 0.0 for k in keys}

    def add(self, key, start):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.t[key] += time.perf_counter() - start


def prompt_ids(tok):
    return tokenizer_image_token(tok, phi3_prompt("Please segment the red ball in this image."))


def load_models(d, device, dtype):
    cfg = json.load(open(os.path.join(d, "model", "config.json")))
    pcfg = Phi3Config(**{k: v for k, v in cfg.items() if k in Phi3Config().to_dict()})
    attn = "eager" if device == "cpu" else "sdpa"
    pcfg._attn_implementation = attn
    if int(transformers.__version__.split(".")[0]) >= 5 and pcfg.sliding_window:
        # The official window (FlashAttention-2's `window_size=(sw, sw)`, and transformers 4.41's
        # eager mask) lets a query see sw + 1 keys, itself included; transformers 5 masks one more.
        pcfg.sliding_window += 1
    sd = {}
    for f in sorted(glob.glob(os.path.join(d, "model", "*.safetensors"))):
        sd.update({k: v.to(device, dtype) for k, v in load_file(f).items()})
    torch.set_default_dtype(dtype)  # parameters in dtype; the RoPE table stays float32 as in HF
    with torch.device(device):
        llm = Phi3Model(pcfg).eval()
    torch.set_default_dtype(torch.float32)
    llm.load_state_dict({k[6:]: v for k, v in sd.items() if k.startswith("model.") and ".mm_projector" not in k
                         and ".text_hidden_fcs" not in k and ".visual_model" not in k})
    # the SAM-H-width sizes by their layer count; anything narrower (the tiny fixture, whose
    # 2 layers match "dry") is the tiny SAM of sam_fixtures.py
    size = {s["llm_layers"]: name for name, s in SIZES.items()}.get(pcfg.num_hidden_layers)
    if size and pcfg.hidden_size == 3072:
        sam = build_sam(size)
    else:
        from sam_fixtures import build as build_tiny_sam
        sam = build_tiny_sam("tiny")
    sam.load_state_dict({k[len("model.visual_model."):]: v for k, v in sd.items() if ".visual_model." in k},
                        strict=False)
    sam = sam.to(device, dtype)
    if dtype != torch.float32:
        PositionEmbeddingRandom.forward = lisa_dense_pe
    clip = CLIPVisionModel.from_pretrained(os.path.join(d, "clip"), torch_dtype=dtype,
                                           attn_implementation=attn).to(device).eval()
    # transformers 5's CLIPImageProcessor resizes with torchvision; the reference's is Pillow's
    proc = getattr(transformers, "CLIPImageProcessorPil", CLIPImageProcessor).from_pretrained(os.path.join(d, "clip"))
    return llm, sam, clip, proc, sd, attn


def read_frames(frames_dir):
    paths = sorted(glob.glob(os.path.join(frames_dir, "*.png")) + glob.glob(os.path.join(frames_dir, "*.jpg")))
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


@torch.no_grad()
def visual_tokens(clip, proc, sd, frames, device, dtype):
    """CLIP (layer -2, patch tokens) + projector: 32 pooled tokens, then the dense frames' tokens."""
    sparse, dense = get_sparse_indices(len(frames)), get_dense_indices()
    pix = torch.as_tensor(proc.preprocess([frames[i] for i in sparse], return_tensors="np")["pixel_values"])
    hs = clip(pixel_values=pix.to(device, dtype), output_hidden_states=True).hidden_states[-2][:, 1:]
    feats = torch.nn.functional.gelu(hs @ sd["model.mm_projector.0.weight"].T + sd["model.mm_projector.0.bias"])
    feats = feats @ sd["model.mm_projector.2.weight"].T + sd["model.mm_projector.2.bias"]
    return torch.cat([feats.mean(dim=1), feats[dense].flatten(0, 1)], 0)


@torch.no_grad()
def prompt_embedding(llm, sd, visual, ids, seg):
    """Phi-3 prefill + text_hidden_fcs at the row before [SEG]; (embedding [1, 256], sequence length)."""
    p = ids.index(-200)
    emb = llm.embed_tokens
    tensor = partial(torch.tensor, device=visual.device)
    embeds = torch.cat([emb(tensor(ids[:p])), visual, emb(tensor(ids[p + 1:]))], 0)[None]
    hidden = llm(inputs_embeds=embeds).last_hidden_state[0]
    h = hidden[ids.index(seg) + visual.shape[0] - 2][None]
    e = torch.relu(h @ sd["model.text_hidden_fcs.0.0.weight"].T + sd["model.text_hidden_fcs.0.0.bias"])
    e = e @ sd["model.text_hidden_fcs.0.2.weight"].T + sd["model.text_hidden_fcs.0.2.bias"]
    return e, embeds.shape[1]


def lisa_dense_pe(self, size):
    """LISA's PositionEmbeddingRandom.forward: the grid built in the Gaussian matrix's dtype, so
    after `model.bfloat16()` the whole dense PE is computed in bf16 (stock segment-anything
    builds it in float32, which fails against a bf16 matrix)."""
    h, w = size
    g = self.positional_encoding_gaussian_matrix
    ones = torch.ones((h, w), device=g.device, dtype=g.dtype)
    ys = (ones.cumsum(dim=0) - 0.5) / h
    xs = (ones.cumsum(dim=1) - 0.5) / w
    return self._pe_encoding(torch.stack([xs, ys], dim=-1)).permute(2, 0, 1)


@torch.no_grad()
def run(d, frames_dir, device="cpu", dtype="f32", ids_file=None, out=None):
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
    tm = Timer(device, ("load", "decode", "preprocess", "clip", "llm", "sam_encode", "sam_decode", "write"))
    t0 = time.perf_counter()
    llm, sam, clip, proc, sd, attn = load_models(d, device, dtype)
    tok = LlamaTokenizer.from_pretrained(os.path.join(d, "model"))
    if ids_file:
        ids = json.load(open(ids_file))["input_ids"]
        seg = json.load(open(ids_file))["seg_token_id"]
    else:
        ids, seg = prompt_ids(tok), tok("[SEG]", add_special_tokens=False).input_ids[-1]
    tm.add("load", t0)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    s = time.perf_counter()
    frames = read_frames(frames_dir)
    tm.add("decode", s)
    s = time.perf_counter()
    visual = visual_tokens(clip, proc, sd, frames, device, dtype)
    tm.add("clip", s)
    s = time.perf_counter()
    e, seq_len = prompt_embedding(llm, sd, visual, ids, seg)
    tm.add("llm", s)
    s = time.perf_counter()
    inputs = []
    for f in frames:  # the official chat.py/evaluate: every frame preprocessed and moved first
        x, input_size = sam_pixels(sam, f) if dtype == torch.float32 else sam_pixels_on(sam, f, device, dtype)
        inputs.append((x, input_size, f.shape[:2]))
    tm.add("preprocess", s)
    out = out or os.path.join(d, "py_out")
    os.makedirs(out, exist_ok=True)
    for i, (x, input_size, size) in enumerate(inputs):
        s = time.perf_counter()
        ie = sam.image_encoder(x)
        tm.add("sam_encode", s)
        s = time.perf_counter()
        sp, de = sam.prompt_encoder(points=None, boxes=None, masks=None)
        sp = torch.cat([sp.to(e.dtype), e[:, None, :]], 1)
        low, _ = sam.mask_decoder(ie, sam.prompt_encoder.get_dense_pe(), sp, de, multimask_output=False)
        m = (sam.postprocess_masks(low.float(), input_size, size)[0, 0] > 0).cpu()
        tm.add("sam_decode", s)
        s = time.perf_counter()
        Image.fromarray((m.numpy() * 255).astype(np.uint8)).save(os.path.join(out, f"{i:05d}.png"))
        tm.add("write", s)
    t = dict(tm.t)
    t["total"] = time.perf_counter() - t0
    t["seq_len"] = seq_len
    t["frames"] = len(frames)
    t["attention"] = attn
    t["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    t["threads"] = torch.get_num_threads()
    t["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda"):
        t["peak_gpu_allocated_gb"] = torch.cuda.max_memory_allocated() / 1e9
    print(json.dumps(t))


def sam_pixels_on(sam, frame, device, dtype):
    """chat.py's SAM input: resize, normalise with float32 constants, pad, then `dtype` on `device`
    (`sam.preprocess` would use SAM's buffers, which `model.bfloat16()` rounded)."""
    size = sam.image_encoder.img_size
    x = ResizeLongestSide(size).apply_image(frame)
    input_size = x.shape[:2]
    x = torch.as_tensor(x).permute(2, 0, 1).float()
    mean = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    x = torch.nn.functional.pad((x - mean) / std, (0, size - x.shape[2], 0, size - x.shape[1]))
    return x[None].to(device, dtype), input_size


def ids(d):
    tok = LlamaTokenizer.from_pretrained(os.path.join(d, "model"))
    print(json.dumps({"input_ids": prompt_ids(tok), "seg_token_id": tok("[SEG]", add_special_tokens=False).input_ids[-1],
                      "transformers": transformers.__version__}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["make", "manifest", "run", "ids"])
    ap.add_argument("args", nargs="+")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="f32 (CPU default) or bf16 (GPU default)")
    ap.add_argument("--ids", default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.cmd == "make":
        make(a.args[0], a.args[1], a.device)
    elif a.cmd == "manifest":
        manifest(a.args[0], a.args[1])
    elif a.cmd == "run":
        run(a.args[0], a.args[1], a.device, a.dtype or ("f32" if a.device == "cpu" else "bf16"), a.ids, a.out)
    else:
        ids(a.args[0])
