"""A tiny random VideoLISA checkpoint in the real on-disk layout, and the reference outputs of the
whole pipeline on it (transformers 4.41 Phi3Model + CLIPVisionModel, segment-anything, and our
reading of VideoLISA's sampling, assembly and [SEG] selection: videolisa-pipeline.md §2).

  python tools/reference/videolisa_fixtures.py tests/fixtures/videolisa_tiny

Writes <out>/model (config.json, two safetensors shards + model.safetensors.index.json, bf16;
the "early" tokenizer files of tests/fixtures/tokenizer), <out>/clip (a CLIPModel: config.json,
model.safetensors, preprocessor_config.json) and <out>/expected.safetensors + expected.json:
for T = 1, 20, 100 frames (frames = common.test_image) and two prompts, the input ids, sampled
indices, visual tokens, the hidden row before [SEG], the prompt embedding and the per-frame
logits, all computed in float32 from the bf16-stored weights. Masks are meaningless.
"""
import copy
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, LlamaTokenizer, Phi3Config, Phi3Model
from segment_anything.utils.transforms import ResizeLongestSide

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from common import phi3_prompt, test_image, tokenizer_image_token  # noqa: E402
from sam_fixtures import build as build_sam, randomize as randomize_sam  # noqa: E402

torch.set_num_threads(2)

FRAME_W, FRAME_H = 40, 30
PROMPTS = [("referring", "The red ball on the left"), ("reason_sentence", "Which object is moving fastest")]
TEMPLATES = {
    "chat": lambda t: t,
    "referring": lambda t: f"Please segment the {t.lower()} in this image.",
    "reason_sentence": lambda t: f"{t}. Please output the segmentation masks.",
    "reason_phrase": lambda t: f"Please segment the {t.lower()} in this scene.",
}


# ---- VideoLISA's sampling (chat.py:71-99) ----
def uniform_sample(total_len, n):
    iv = np.linspace(0, total_len, n + 1).astype(int)
    return [(iv[i] + (iv[i + 1] - 1)) // 2 for i in range(n)]


def get_sparse_indices(total, n_sparse=32):
    if total > n_sparse:
        return sorted(uniform_sample(total, n_sparse))
    rep, rem = divmod(n_sparse, total)
    return sorted(list(range(total)) * rep + uniform_sample(total, rem))


def get_dense_indices(n_sparse=32, n_dense=4):
    iv = np.linspace(0, n_sparse - 1, n_dense + 1).astype(int)
    return [(iv[i] + (iv[i + 1] - 1)) // 2 for i in range(n_dense)]


def rand_(t, gen, scale):
    with torch.no_grad():
        t.copy_(torch.randn(t.shape, generator=gen) * scale)


def build_models(vocab):
    gen = torch.Generator().manual_seed(7)
    pcfg = Phi3Config(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                      original_max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
                      sliding_window=40, bos_token_id=1, eos_token_id=700, pad_token_id=0,
                      attn_implementation="eager")
    pcfg._attn_implementation = "eager"
    llm = Phi3Model(pcfg).eval()
    for name, p in llm.named_parameters():
        if "norm" in name:
            rand_(p, gen, 0.1)
            with torch.no_grad():
                p.add_(1.0)
        else:
            rand_(p, gen, 1.0 / np.sqrt(p.shape[-1]) if p.dim() == 2 and "embed" not in name else 0.5)
    ccfg = CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, projection_dim=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                           image_size=56, patch_size=14, projection_dim=16, hidden_act="quick_gelu"),
        projection_dim=16)
    clip = CLIPModel(ccfg).eval()
    for name, p in clip.named_parameters():
        if "layer_norm" in name or "layrnorm" in name:
            rand_(p, gen, 0.1)
            with torch.no_grad():
                if name.endswith("weight"):
                    p.add_(1.0)
        elif name.endswith("bias"):
            rand_(p, gen, 0.05)
        elif p.dim() >= 2 and "embedding" not in name:
            rand_(p, gen, 1.0 / np.sqrt(np.prod(p.shape[1:])))
        else:
            rand_(p, gen, 0.5)
    d, mm = 64, 32
    heads = {
        "model.mm_projector.0.weight": (d, mm), "model.mm_projector.0.bias": (d,),
        "model.mm_projector.2.weight": (d, d), "model.mm_projector.2.bias": (d,),
        "model.text_hidden_fcs.0.0.weight": (d, d), "model.text_hidden_fcs.0.0.bias": (d,),
        "model.text_hidden_fcs.0.2.weight": (32, d), "model.text_hidden_fcs.0.2.bias": (32,),
    }
    extra = {}
    for k, shape in heads.items():
        t = torch.empty(shape)
        rand_(t, gen, 0.05 if k.endswith("bias") else 1.0 / np.sqrt(shape[-1]))
        extra[k] = t
    extra["lm_head.weight"] = torch.randn(vocab, d, generator=gen) * 0.1
    sam = build_sam("tiny")
    randomize_sam(sam)
    return pcfg, llm, ccfg, clip, extra, sam


def bf16_round(module):
    """Rounds what the checkpoint stores (parameters and persistent buffers) to bf16; computed
    buffers such as RoPE's inv_freq stay float32, as after loading a real checkpoint."""
    with torch.no_grad():
        for p in module.state_dict().values():
            if p.dtype == torch.float32:
                p.copy_(p.to(torch.bfloat16).float())


def write_checkpoint(out, pcfg, llm, ccfg, clip, extra, sam):
    mdir, cdir = os.path.join(out, "model"), os.path.join(out, "clip")
    os.makedirs(mdir, exist_ok=True)
    os.makedirs(cdir, exist_ok=True)
    sd = {"model." + k: v for k, v in llm.state_dict().items()}
    sd.update(extra)
    sd.update({"model.visual_model." + k: v for k, v in sam.state_dict().items() if k not in ("pixel_mean", "pixel_std")})
    sd = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in sd.items()}
    keys = sorted(sd)
    shards = [[k for k in keys if not k.startswith("model.visual_model")], [k for k in keys if k.startswith("model.visual_model")]]
    weight_map = {}
    for i, ks in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: sd[k] for k in ks}, os.path.join(mdir, fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in ks})
    with open(os.path.join(mdir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(v.numel() * 2 for v in sd.values())}, "weight_map": weight_map},
                  f, indent=2)
    cfg = pcfg.to_dict()
    for k in ("_attn_implementation_autoset", "attn_implementation", "_name_or_path"):
        cfg.pop(k, None)
    cfg.update({
        "architectures": ["VideoLISAForCausalLM"], "model_type": "llava_phi", "torch_dtype": "bfloat16",
        "vision_tower": "openai/clip-vit-large-patch14-336", "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_hidden_size": 32, "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "mm_patch_merge_type": "flat", "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False, "image_aspect_ratio": "square", "image_grid_pinpoints": None,
        "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": True, "pretrain_mm_mlp_adapter": None,
        "train_mask_decoder": True, "out_dim": 32, "use_cache": False, "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right",
    })
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    tokdir = os.path.join(REPO, "tests", "fixtures", "tokenizer", "early")
    for fname in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        shutil.copy(os.path.join(tokdir, fname), os.path.join(mdir, fname))
    csd = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in clip.state_dict().items()
           if not k.endswith("position_ids")}
    save_file(csd, os.path.join(cdir, "model.safetensors"), metadata={"format": "pt"})
    ccfg.save_pretrained(cdir)
    CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}).save_pretrained(cdir)


def sam_pixels(sam, frame):
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    x = transform.apply_image(frame)
    input_size = x.shape[:2]
    x = torch.as_tensor(x).permute(2, 0, 1).contiguous()[None]
    return sam.preprocess(x.float()), input_size


@torch.no_grad()
def run_case(frames, tok, llm, clip, proc, extra, sam, seg_id, nowindow_llm):
    total = len(frames)
    sparse = get_sparse_indices(total)
    dense = get_dense_indices()
    pix = torch.as_tensor(np.stack(proc.preprocess([frames[i] for i in sparse], return_tensors="np")["pixel_values"]))
    hs = clip.vision_model(pixel_values=pix, output_hidden_states=True).hidden_states[-2][:, 1:]
    p0w, p0b = extra["model.mm_projector.0.weight"], extra["model.mm_projector.0.bias"]
    p2w, p2b = extra["model.mm_projector.2.weight"], extra["model.mm_projector.2.bias"]
    feats = torch.nn.functional.gelu(hs @ p0w.T + p0b) @ p2w.T + p2b
    visual = torch.cat([feats.mean(dim=1), feats[dense].flatten(0, 1)], 0)
    nvis = visual.shape[0]
    out = {"sparse": sparse, "dense": dense, "visual_tokens": visual, "prompts": []}
    embs = []
    for kind, text in PROMPTS:
        ids = tokenizer_image_token(tok, phi3_prompt(TEMPLATES[kind](text)))
        p = ids.index(-200)
        emb_tok = llm.embed_tokens
        embeds = torch.cat([emb_tok(torch.tensor(ids[:p])), visual, emb_tok(torch.tensor(ids[p + 1:]))], 0)[None]
        hidden = llm(inputs_embeds=embeds).last_hidden_state[0]
        k = ids.index(seg_id)
        mask = [False] * (nvis - 1) + [t == seg_id for t in ids[1:]] + [False]
        row = k + nvis - 2
        assert mask.index(True) == row and len(mask) == hidden.shape[0]
        h = hidden[row:row + 1]
        e = torch.relu(h @ extra["model.text_hidden_fcs.0.0.weight"].T + extra["model.text_hidden_fcs.0.0.bias"])
        e = e @ extra["model.text_hidden_fcs.0.2.weight"].T + extra["model.text_hidden_fcs.0.2.bias"]
        h_nw = nowindow_llm(inputs_embeds=embeds).last_hidden_state[0, row:row + 1]
        out["prompts"].append({"kind": kind, "text": text, "input_ids": ids, "seq_len": hidden.shape[0], "seg_row": row,
                               "hidden": h, "embedding": e, "window_effect": float((h - h_nw).abs().max())})
        embs.append(e)
    logits = [[] for _ in embs]
    logits64 = [[] for _ in embs]
    # The random tiny decoder is ill-conditioned: the same decoder in float64 gives the
    # rounding-free answer, so a test can tell implementation differences from f32 noise.
    md64 = copy.deepcopy(sam.mask_decoder).double()
    for f in frames:
        x, input_size = sam_pixels(sam, f)
        emb = sam.image_encoder(x)
        for j, e in enumerate(embs):
            sp, de = sam.prompt_encoder(points=None, boxes=None, masks=None)
            sp = torch.cat([sp, e[:, None, :]], dim=1)  # LISA's text_embeds path
            pe = sam.prompt_encoder.get_dense_pe()
            low, _ = sam.mask_decoder(emb, pe, sp, de, multimask_output=False)
            logits[j].append(sam.postprocess_masks(low, input_size, f.shape[:2])[0, 0])
            low64, _ = md64(emb.double(), pe.double(), sp.double(), de.double(), multimask_output=False)
            logits64[j].append(sam.postprocess_masks(low64.float(), input_size, f.shape[:2])[0, 0])
    for j, pr in enumerate(out["prompts"]):
        pr["logits"] = torch.stack(logits[j])
        pr["logits_f64"] = torch.stack(logits64[j])
    return out


@torch.no_grad()
def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    tokdir = os.path.join(REPO, "tests", "fixtures", "tokenizer", "early")
    tok = LlamaTokenizer.from_pretrained(tokdir)
    seg_id = tok("[SEG]", add_special_tokens=False).input_ids[-1]
    pcfg, llm, ccfg, clip, extra, sam = build_models(len(tok))
    for m in (llm, clip, sam):
        bf16_round(m)
    extra = {k: v.to(torch.bfloat16).float() for k, v in extra.items()}
    write_checkpoint(out, pcfg, llm, ccfg, clip, extra, sam)
    proc = CLIPImageProcessor.from_pretrained(os.path.join(out, "clip"))
    nw_cfg = Phi3Config(**{**pcfg.to_dict(), "sliding_window": None})
    nw_cfg._attn_implementation = "eager"
    nowindow = Phi3Model(nw_cfg).eval()
    nowindow.load_state_dict(llm.state_dict())
    tensors, meta = {}, {"frame_size": [FRAME_W, FRAME_H], "cases": []}
    for total in (1, 20, 100):
        frames = [test_image(FRAME_W, FRAME_H, 100 + t) for t in range(total)]
        r = run_case(frames, tok, llm, clip, proc, extra, sam, seg_id, nowindow)
        c = f"T{total}"
        tensors[f"{c}.visual_tokens"] = r["visual_tokens"]
        case = {"frames": total, "sparse": [int(i) for i in r["sparse"]], "dense": [int(i) for i in r["dense"]],
                "prompts": []}
        for j, pr in enumerate(r["prompts"]):
            tensors[f"{c}.p{j}.hidden"] = pr["hidden"]
            tensors[f"{c}.p{j}.embedding"] = pr["embedding"]
            tensors[f"{c}.p{j}.logits"] = pr["logits"]
            tensors[f"{c}.p{j}.logits_f64dec"] = pr["logits_f64"]
            case["prompts"].append({k: pr[k] for k in ("kind", "text", "input_ids", "seq_len", "seg_row", "window_effect")})
            lg = pr["logits"]
            print(f"T={total} prompt {j}: seq {pr['seq_len']} row {pr['seg_row']} (window 40; dropping it moves "
                  f"the hidden row by {pr['window_effect']:.3g}); logits {lg.min():.3f}..{lg.max():.3f}, "
                  f"fg {(lg > 0).float().mean():.3f}, |logit|<1e-3: {(lg.abs() < 1e-3).sum().item()}, "
                  f"f32 vs f64 decoder {(lg - pr['logits_f64']).abs().max():.2e}", flush=True)
        meta["cases"].append(case)
    save_file({k: v.contiguous().float() for k, v in tensors.items()}, os.path.join(out, "expected.safetensors"))
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
