"""Reference outputs of the official `segment-anything` package on random weights.

  python tools/reference/sam_fixtures.py tiny  tests/fixtures/sam_tiny   # committed, used by CI
  python tools/reference/sam_fixtures.py vit_b /tmp/sam_vit_b            # on demand (#[ignore] test)

Writes the weights twice — VideoLISA layout (prefix `model.visual_model.`, two safetensors shards +
model.safetensors.index.json) and the original `sam.pth` state dict — plus expected.safetensors with
image embeddings, dense PE, low-res masks, IoU, multimask outputs, final logits for three frame sizes,
and prompt-encoder outputs for points, boxes and mask prompts.
"""
import copy
import json
import os
import sys
from functools import partial

import numpy as np
import torch
from safetensors.torch import save_file
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.transforms import ResizeLongestSide

sys.path.insert(0, os.path.dirname(__file__))
from common import test_image  # noqa: E402

torch.set_num_threads(2)


def build(kind):
    if kind == "tiny":
        img, patch, dim, depth, heads, mlp_ratio, ws, glob = 256, 16, 48, 3, 3, 4.0, 5, [2]
        pdim, mic, dmlp, iou_hidden = 32, 8, 64, 24
    elif kind == "vit_b":
        img, patch, dim, depth, heads, mlp_ratio, ws, glob = 1024, 16, 768, 12, 12, 4.0, 14, [2, 5, 8, 11]
        pdim, mic, dmlp, iou_hidden = 256, 16, 2048, 256
    else:
        raise SystemExit(f"unknown config {kind}")
    g = img // patch
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=depth, embed_dim=dim, img_size=img, mlp_ratio=mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=heads, patch_size=patch,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=glob, window_size=ws, out_chans=pdim),
        prompt_encoder=PromptEncoder(embed_dim=pdim, image_embedding_size=(g, g),
                                     input_image_size=(img, img), mask_in_chans=mic),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=pdim, mlp_dim=dmlp, num_heads=8),
                                 transformer_dim=pdim, iou_head_depth=3, iou_head_hidden_dim=iou_hidden),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    return sam.eval()


@torch.no_grad()
def randomize(sam, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for name, p in list(sam.named_parameters()) + list(sam.named_buffers()):
        if name in ("pixel_mean", "pixel_std"):
            continue
        r = torch.randn(p.shape, generator=gen)
        if "norm" in name and name.endswith("weight") or "upscaling.1.weight" in name or "downscaling.1.weight" in name \
                or "downscaling.4.weight" in name or "neck.1.weight" in name or "neck.3.weight" in name:
            p.copy_(1.0 + 0.1 * r)
        elif name.endswith("bias"):
            p.copy_(0.05 * r)
        elif "rel_pos" in name or "pos_embed" in name:
            p.copy_(0.1 * r)
        elif "gaussian_matrix" in name:
            p.copy_(r)
        elif p.dim() >= 2 and not any(k in name for k in ("embed.weight", "embeddings", "_token")):
            fan_in = int(np.prod(p.shape[1:]))
            if "output_upscaling" in name:  # ConvTranspose: [in, out, k, k]
                fan_in = p.shape[0]
            p.copy_(r / np.sqrt(fan_in))
        else:
            p.copy_(0.5 * r)


def save_weights(sam, out):
    sd = {k: v.contiguous() for k, v in sam.state_dict().items() if k not in ("pixel_mean", "pixel_std")}
    torch.save(sd, os.path.join(out, "sam.pth"))
    vl = {"model.visual_model." + k: v for k, v in sd.items()}
    vl["lm_head.weight"] = torch.zeros(4, 4)  # unrelated tensors are ignored
    keys = sorted(vl)
    half = len(keys) // 2
    shards = [keys[:half], keys[half:]]
    vdir = os.path.join(out, "videolisa")
    os.makedirs(vdir, exist_ok=True)
    weight_map = {}
    for i, ks in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: vl[k] for k in ks}, os.path.join(vdir, fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in ks})
    with open(os.path.join(vdir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(v.numel() * 4 for v in vl.values())}, "weight_map": weight_map}, f, indent=1)


@torch.no_grad()
def main():
    kind, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    sam = build(kind)
    randomize(sam)
    save_weights(sam, out)
    img = sam.image_encoder.img_size
    pdim = sam.prompt_encoder.embed_dim
    gen = torch.Generator().manual_seed(1)
    text = torch.randn(1, 1, pdim, generator=gen)
    exp = {"text_embed": text, "dense_pe": sam.prompt_encoder.get_dense_pe()}
    frames = [(200, 120, 31), (90, 160, 32), (37, 23, 33)] if kind == "tiny" else [(640, 360, 31), (360, 640, 32), (96, 64, 33)]
    transform = ResizeLongestSide(img)
    meta = {"frames": []}
    for i, (w, h, seed) in enumerate(frames):
        im = test_image(w, h, seed)
        x = transform.apply_image(im)
        input_size = x.shape[:2]
        x = torch.as_tensor(x).permute(2, 0, 1).contiguous()[None]
        x = sam.preprocess(x.float())
        emb = sam.image_encoder(x)
        sparse, dense = sam.prompt_encoder(points=None, boxes=None, masks=None)
        sparse = torch.cat([sparse, text], dim=1)  # LISA's text_embeds path
        low, iou = sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=False)
        lowm, ioum = sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=True)
        logits = sam.postprocess_masks(low, input_size, (h, w))
        # The same decoder in float64 on these embeddings: the rounding-free answer, to tell
        # implementation differences from f32 rounding on ill-conditioned random weights.
        md64 = copy.deepcopy(sam.mask_decoder).double()
        low64, iou64 = md64(emb.double(), sam.prompt_encoder.get_dense_pe().double(), sparse.double(), dense.double(),
                            multimask_output=False)
        exp.update({f"frame{i}.image_embeddings": emb, f"frame{i}.low_res_masks": low, f"frame{i}.iou": iou,
                    f"frame{i}.multimask_low_res_masks": lowm, f"frame{i}.multimask_iou": ioum,
                    f"frame{i}.logits": logits[0, 0], f"frame{i}.low_res_masks_f64": low64, f"frame{i}.iou_f64": iou64})
        meta["frames"].append({"width": w, "height": h, "seed": seed, "input_size": list(input_size)})
        print(f"frame {i}: {w}x{h} -> input {input_size}, logits range {logits.min():.3f}..{logits.max():.3f}, "
              f"near zero {(logits.abs() < 1e-3).sum().item()}", flush=True)
    # Complete prompt encoder: points (padded, all label kinds), boxes + points, mask prompt.
    pts = torch.tensor([[[10.0, 20.0], [100.5, 30.25], [50.0, 50.0]]]) * (img / 256)
    lab = torch.tensor([[1, 0, -1]])
    boxes = torch.tensor([[5.0, 6.0, 120.0, 90.0]]) * (img / 256)
    mask_in = torch.randn(1, 1, 4 * sam.prompt_encoder.image_embedding_size[0],
                          4 * sam.prompt_encoder.image_embedding_size[1], generator=gen)
    s1, d1 = sam.prompt_encoder(points=(pts, lab), boxes=None, masks=None)
    s2, d2 = sam.prompt_encoder(points=(pts, lab), boxes=boxes, masks=mask_in)
    exp.update({"prompt.points": pts, "prompt.labels": lab.float(), "prompt.boxes": boxes, "prompt.mask_input": mask_in,
                "prompt.points_sparse": s1, "prompt.points_dense": d1, "prompt.all_sparse": s2, "prompt.all_dense": d2})
    save_file({k: v.contiguous() if v.dtype == torch.float64 else v.contiguous().float() for k, v in exp.items()},
              os.path.join(out, "expected.safetensors"))
    with open(os.path.join(out, "frames.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
