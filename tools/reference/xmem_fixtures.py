"""XMem++ post-optimization reference: XMem2's own `run_on_video` on a random-weight checkpoint in
the `XMem.pth` layout, seeded with 4 masks on the frames VideoLISA picks (videolisa-pipeline.md §3).

  XMEM2=/path/to/XMem2@adc7d4c python tools/reference/xmem_fixtures.py tests/fixtures/xmem_tiny
  XMEM2=... python tools/reference/xmem_fixtures.py --full /tmp/xmem_full   # real XMem sizes
  XMEM2=... python tools/reference/xmem_fixtures.py --full --weights-only DIR  # only DIR/XMem.pth
  XMEM2=... python tools/reference/xmem_fixtures.py --case joint tests/fixtures/xmem_joint
      # several objects in one memory (`propagate`): --case joint (first: it writes the
      # XMem.pth the others use, fitted to its clip) | stressed | jpeg480, into sibling folders

The network is XMem2's (its ResNet, KeyProjection, FeatureFusionBlock, CBAM, UpsampleBlock,
HiddenReinforcer/Updater classes, and their forward code); the tiny one only narrows the widths
and block counts, so the same reader has to derive every size from the tensor shapes.
Three things are changed to run it on a CPU with today's packages, each the way the pinned
versions behave: the warm-up `torch.zeros(device='cuda:0')` is made on the CPU, torchvision's
tensor Resize gets `antialias=False` (torchvision 0.13.1, pinned by XMem2, has no antialias
for tensors), and the fp16 autocast is a no-op on the CPU anyway.

Writes <out>/XMem.pth, <out>/frames/frame_%06d.png (an odd size, short side < 480: the
reader upscales), <out>/masks/ (the 4 seed masks, index PNGs as VideoLISA's import_proj.py
writes them; one is empty), and <out>/expected.safetensors + expected.json: every frame's
output index mask and the pixels where the reference's two probabilities are within 1e-4
(and 1e-3),
and intermediates of chosen frames (key, shrinkage, selection, encoder features, value,
hidden state, memory readout with each query pixel's top-k margin, 1/4-scale logits).
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

XMEM2 = os.environ.get("XMEM2")
if not XMEM2:
    sys.exit("set XMEM2 to a checkout of github.com/mbzuai-metaverse/XMem2 @ adc7d4c")
sys.path.insert(0, XMEM2)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import inference.inference_core as inference_core  # noqa: E402
import inference.run_on_video as rov  # noqa: E402
from inference.data import video_reader  # noqa: E402
from inference.memory_manager import MemoryManager  # noqa: E402
from model import resnet  # noqa: E402
from model.group_modules import MainToGroupDistributor  # noqa: E402
from model.memory_util import get_similarity  # noqa: E402
from model.modules import (Decoder, FeatureFusionBlock, HiddenReinforcer, HiddenUpdater,  # noqa: E402
                           KeyEncoder, KeyProjection, UpsampleBlock, ValueEncoder)
from model.network import XMem  # noqa: E402
from torchvision import transforms  # noqa: E402
from util.tensor_util import pad_divide_by  # noqa: E402
from videolisa_fixtures import get_dense_indices, get_sparse_indices  # noqa: E402

torch.set_num_threads(2)
DAVIS_PALETTE = [0, 0, 0, 128, 0, 0] + [0, 0, 0] * 254
# the first colours of DAVIS's palette (index 1 red, 2 green, 3 olive, 4 blue)
DAVIS_PALETTE_FULL = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [0, 0, 0] * 251

# Tiny widths: (key stem, key planes per layer, key blocks), (value stem, planes, blocks),
# key_dim, value_dim, hidden_dim, decoder mid, up dims, hidden-updater mid.
TINY = dict(k_stem=8, k_planes=(4, 8, 16), k_blocks=(1, 2, 1), v_stem=8, v_planes=(8, 16, 16),
            v_blocks=(1, 1, 2), key_dim=16, value_dim=32, hidden_dim=8, mid=32, up=(16, 16), upd_mid=16)


def tiny_resnet(block, stem, planes, blocks, extra_dim):
    """XMem2's ResNet, narrowed: same classes and `_make_layer`, layer4 dropped (unused)."""
    net = resnet.ResNet.__new__(resnet.ResNet)
    nn.Module.__init__(net)
    net.inplanes = stem
    net.conv1 = nn.Conv2d(3 + extra_dim, stem, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(stem)
    net.relu = nn.ReLU(inplace=True)
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    net.layer1 = net._make_layer(block, planes[0], blocks[0])
    net.layer2 = net._make_layer(block, planes[1], blocks[1], stride=2)
    net.layer3 = net._make_layer(block, planes[2], blocks[2], stride=2)
    return net


def bare(cls):
    m = cls.__new__(cls)
    nn.Module.__init__(m)
    return m


def build_tiny(c):
    k = tiny_resnet(resnet.Bottleneck, c["k_stem"], c["k_planes"], c["k_blocks"], 0)
    f4, f8, f16 = (p * 4 for p in c["k_planes"])
    ke = bare(KeyEncoder)
    ke.conv1, ke.bn1, ke.relu, ke.maxpool = k.conv1, k.bn1, k.relu, k.maxpool
    ke.res2, ke.layer2, ke.layer3 = k.layer1, k.layer2, k.layer3

    v = tiny_resnet(resnet.BasicBlock, c["v_stem"], c["v_planes"], c["v_blocks"], 2)
    ve = bare(ValueEncoder)
    ve.single_object = False
    ve.conv1, ve.bn1, ve.relu, ve.maxpool = v.conv1, v.bn1, v.relu, v.maxpool
    ve.layer1, ve.layer2, ve.layer3 = v.layer1, v.layer2, v.layer3
    ve.distributor = MainToGroupDistributor()
    ve.fuser = FeatureFusionBlock(f16, c["v_planes"][2], c["value_dim"], c["value_dim"])
    ve.hidden_reinforce = HiddenReinforcer(c["value_dim"], c["hidden_dim"])

    dec = bare(Decoder)
    dec.fuser = FeatureFusionBlock(f16, c["value_dim"] + c["hidden_dim"], c["mid"], c["mid"])
    dec.hidden_update = HiddenUpdater([c["mid"], c["up"][0], c["up"][1] + 1], c["upd_mid"], c["hidden_dim"])
    dec.up_16_8 = UpsampleBlock(f8, c["mid"], c["up"][0])
    dec.up_8_4 = UpsampleBlock(f4, c["up"][0], c["up"][1])
    dec.pred = nn.Conv2d(c["up"][1], 1, kernel_size=3, padding=1, stride=1)

    net = bare(XMem)
    net.key_dim, net.value_dim, net.hidden_dim = c["key_dim"], c["value_dim"], c["hidden_dim"]
    net.disable_hidden, net.single_object = False, False
    net.key_encoder, net.value_encoder = ke, ve
    net.key_proj = KeyProjection(f16, c["key_dim"])
    net.decoder = dec
    return net


def randomize(net, seed):
    """Random BatchNorm affine parameters (statistics: `calibrate_batchnorm`)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in net.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.6 + 0.5 * torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.6 + 0.8 * torch.rand(n, generator=g))
                m.num_batches_tracked.fill_(1000)


def normalized(w, h, t):
    """Frame t normalized, resized and padded as XMem's reader does (calibration only)."""
    x = torch.from_numpy(CLIP["frame"](w, h, t)[0]).permute(2, 0, 1).float()[None] / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    s = 480 / min(w, h)
    x = F.interpolate(x, (int(h * s), int(w * s)), mode="bilinear", align_corners=False)
    return pad_divide_by(x, 16)[0]


def calibrate_batchnorm(net, w, h):
    """Sets BatchNorm running statistics to those of a few frames (as training would leave
    them): with arbitrary statistics the random ResNets saturate and their features stop
    depending on the image."""
    imgs = torch.cat([normalized(w, h, t) for t in range(0, 40, 10)])
    masks = torch.stack([torch.from_numpy(CLIP["frame"](w, h, t)[1]).float() for t in range(0, 40, 10)])[:, None]
    masks = F.interpolate(masks, imgs.shape[-2:])
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    with torch.no_grad():
        f16 = net.key_encoder(imgs)[0]
        hidden = torch.zeros(imgs.shape[0], 1, net.hidden_dim, *f16.shape[-2:])
        net.value_encoder(imgs, f16, hidden, masks, torch.zeros_like(masks), is_deep_update=False)
    for m in bns:
        m.momentum = 0.1
        m.num_batches_tracked.fill_(1000)


def standardize_projections(net, w, h):
    """Gives frame 0's key, shrinkage and selection projections a chosen mean and spread per
    channel (through each conv's weight and bias). Keys made of the features' common
    component put the top-k neighbours within f32 rounding of each other (the similarity
    −a² + 2ab − b² cancels); an unscaled shrinkage underflows the top-k softmax."""
    img = normalized(w, h, 0)
    with torch.no_grad():
        f16, f8, f4 = net.key_encoder(img)
        kp = net.key_proj
        for conv, spread in ((kp.key_proj, 2.8), (kp.d_proj, 0.3), (kp.e_proj, 1.0)):
            y = conv(f16)
            mean, std = y.mean((0, 2, 3)), y.std((0, 2, 3))
            conv.weight.mul_((spread / std)[:, None, None, None])
            conv.bias.sub_(mean).mul_(spread / std)
        # A random decoder predicts one class everywhere: centre and spread its logits on
        # frame 0 read out from its own value, so masks vary.
        mask = F.interpolate(torch.from_numpy(CLIP["frame"](w, h, 0)[1]).float()[None, None], img.shape[-2:])
        hidden = torch.zeros(1, 1, net.hidden_dim, *f16.shape[-2:])
        value, _ = net.encode_value(img, f16, hidden, mask, is_deep_update=False)
        pred = net.decoder.pred
        _, logits = net.decoder(f16, f8, f4, hidden, value, h_out=False)
        pred.weight.mul_(2.0 / logits.std())
        pred.bias.mul_(2.0 / logits.std())
        pred.bias.sub_(logits.median() * 2.0 / logits.std())


def config_dims(net):
    """What XMem.init_hyperparameters reads from the weights and writes into the config."""
    return dict(key_dim=net.key_dim, value_dim=net.value_dim, hidden_dim=net.hidden_dim)


# ---- the clip ----
def frame(w, h, t):
    """Fresh noise every frame, and an ellipse moving over it: keys differ from pixel to pixel
    and from frame to frame, so the top-k neighbours are not near-duplicates whose order
    f32 rounding decides."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.int64)
    cx = w * (0.3 + 0.4 * (0.5 + 0.5 * np.sin(t / 9.0)))
    cy = h * (0.5 + 0.25 * np.cos(t / 13.0))
    blob = ((xs - cx) / (0.22 * w)) ** 2 + ((ys - cy) / (0.3 * h)) ** 2 < 1.0
    noise = [(xs * 73856093 ^ ys * 19349663 ^ (c + 3 * t) * 83492791) % 251 for c in range(3)]
    img = np.stack(noise, -1)
    img[blob] = np.stack([200 + noise[0][blob] % 50, 40 + noise[1][blob] % 40, 30 + noise[2][blob] % 30], -1)
    return img.astype(np.uint8), blob


def seed_mask(blob, empty):
    m = np.zeros(blob.shape, np.uint8) if empty else blob.astype(np.uint8)
    im = Image.fromarray(m, mode="P")
    im.putpalette(DAVIS_PALETTE)
    return im


# The clip the BatchNorm statistics and projections are fitted to (image, object-1 mask).
CLIP = {"frame": frame}


# ---- instrumentation (wrappers that record and call the official code) ----
REC = {}
STATE = {"event": None, "compress": [], "preload_order": [], "removed": []}
DUMP = set()
FEATURES = {"pre0", "step10"}


def strided(t, s):
    return t[..., ::s, ::s].contiguous()


def instrument(net):
    enc_key, enc_val = net.encode_key, net.encode_value

    def encode_key(image, need_sk=True, need_ek=True):
        out = enc_key(image, need_sk=need_sk, need_ek=need_ek)
        ev = STATE["event"]
        if ev in FEATURES:
            key, sk, ek, f16, f8, f4 = out
            REC[f"{ev}.key"], REC[f"{ev}.shrinkage"], REC[f"{ev}.selection"] = key[0], sk[0], ek[0]
            REC[f"{ev}.f16"], REC[f"{ev}.f8_s2"], REC[f"{ev}.f4_s4"] = f16[0], strided(f8[0], 2), strided(f4[0], 4)
        return out

    def encode_value(frame, f16, h16, masks, is_deep_update=True):
        g, h = enc_val(frame, f16, h16, masks, is_deep_update=is_deep_update)
        ev = STATE["event"]
        if ev in DUMP:
            REC[f"{ev}.value"] = g[0, 0]
            REC[f"{ev}.value_hidden"] = h[0, 0]
        return g, h

    net.encode_key, net.encode_value = encode_key, encode_value

    def pred_hook(_m, _i, out):
        ev = STATE["event"]
        if ev in DUMP:
            REC[f"{ev}.logits4"] = out[0, 0].clone()

    net.decoder.pred.register_forward_hook(pred_hook)

    def upd_hook(_m, _i, out):
        ev = STATE["event"]
        if ev in DUMP:
            REC[f"{ev}.hidden"] = out[0, 0].clone()

    net.decoder.hidden_update.register_forward_hook(upd_hook)


def topk_margin(mem, qk, qe):
    """Per query pixel: the similarity gap between the 30th and 31st memory element (how far
    the top-k choice is from a tie), over the memory `match_memory` is about to read."""
    stores = [mem.long_mem, mem.temporary_work_mem, mem.permanent_work_mem]
    stores = [st for st in stores if st.engaged() and st.size > 0]
    mk = torch.cat([st.key for st in stores], -1)
    ms = torch.cat([st.shrinkage for st in stores], -1)
    sim = get_similarity(mk, ms, qk.flatten(start_dim=2), qe.flatten(start_dim=2))
    top = torch.topk(sim, min(mem.top_k + 1, sim.shape[1]), dim=1).values[0]
    if top.shape[0] <= mem.top_k:
        return torch.full(top.shape[1:], float("inf"))
    return top[mem.top_k - 1] - top[mem.top_k]


def patch_xmem2(net):
    class TorchOnCpu:
        """`torch` for inference_core: the warm-up tensor is made on the CPU."""

        def __getattr__(self, n):
            return getattr(torch, n)

        @staticmethod
        def zeros(*a, device=None, **k):
            return torch.zeros(*a, **k)

    inference_core.torch = TorchOnCpu()

    def make_xmem(config, model_path=None, **_kw):
        config.update(config_dims(net))
        return net

    rov.XMem = make_xmem

    orig_init = video_reader.VideoReader.__init__

    def reader_init(self, *a, **k):
        orig_init(self, *a, **k)
        ts = self.im_transform.transforms
        ts[-1] = transforms.Resize(self.size, interpolation=transforms.InterpolationMode.BILINEAR, antialias=False)

    video_reader.VideoReader.__init__ = reader_init

    orig_step, orig_put = inference_core.InferenceCore.step, inference_core.InferenceCore.put_to_permanent_memory

    def step(self, *a, **k):
        STATE["event"] = f"step{self.curr_ti + 1}"
        t = time.perf_counter()
        out = orig_step(self, *a, **k)
        STATE["step_seconds"] = STATE.get("step_seconds", 0.0) + time.perf_counter() - t
        return out

    def put(self, image, mask, ti=None):
        STATE["event"] = f"pre{len(STATE['preload_order'])}"
        STATE["preload_order"].append(None)
        return orig_put(self, image, mask, ti)

    inference_core.InferenceCore.step = step
    inference_core.InferenceCore.put_to_permanent_memory = put

    orig_match, orig_compress = MemoryManager.match_memory, MemoryManager.compress_features

    def match(self, qk, qe, *a, **k):
        ev = STATE["event"]
        if ev in DUMP:
            REC[f"{ev}.topk_margin"] = topk_margin(self, qk, qe)
        r = orig_match(self, qk, qe, *a, **k)
        if ev in DUMP:
            REC[f"{ev}.readout"] = r[0].clone()
        return r

    def compress(self):
        STATE["compress"].append(STATE["event"])
        return orig_compress(self)

    MemoryManager.match_memory, MemoryManager.compress_features = match, compress

    from inference.kv_memory_store import KeyValueMemoryStore
    orig_remove = KeyValueMemoryStore.remove_obsolete_features

    def remove(self, max_size):
        STATE["removed"].append(STATE["event"])
        return orig_remove(self, max_size)

    KeyValueMemoryStore.remove_obsolete_features = remove

    orig_post = rov._post_process

    def post(sample, prob):
        p = F.interpolate(prob.unsqueeze(1), sample.shape, mode="bilinear", align_corners=False)[:, 0]
        out = orig_post(sample, prob)
        REC.setdefault("_masks", []).append(out.copy())
        top2 = torch.topk(p, 2, dim=0).values
        gap = top2[0] - top2[1]
        REC.setdefault("_ties", []).append((gap < 1e-4).numpy())
        REC.setdefault("_near", []).append((gap < 1e-3).numpy())
        return out

    rov._post_process = post


def pack(bits):
    return torch.from_numpy(np.packbits(np.stack(bits).astype(np.uint8).reshape(-1)))


# ---- several objects in one memory (`videolisa propagate`) ----
# Each case: frames, size, file type, the given frames, XMem2 settings changed, the mask
# mode written (P with the DAVIS palette, or L holding the labels), and when the third
# object enters the clip.
CASES = {
    # three objects; the third first given in a later mask (a second object group, whose
    # values start later in permanent memory); a consolidation
    "joint": dict(frames=40, size=(49, 37), ext="png", given=[0, 10, 24], third_from=20,
                  config=dict(mem_every=3), mode="P"),
    # two objects from the first mask; small working and long-term memory, so consolidation
    # and the removal of obsolete long-term features both run
    "stressed": dict(frames=30, size=(49, 37), ext="png", given=[0, 17], third_from=None,
                     config=dict(mem_every=2, max_mid_term_frames=4, min_mid_term_frames=2,
                                 num_prototypes=16, max_long_term_elements=40), mode="L"),
    # the short side exactly 480 (no resize), JPEG frames; drawn at 64×48 and enlarged
    # (bilinear; masks nearest) so the tiny network sees the texture it was fitted to
    "jpeg480": dict(frames=8, size=(640, 480), ext="jpg", given=[0, 4, 7], third_from=None,
                    config={}, mode="P", drawn=(64, 48)),
}


def multi_frame(w, h, t, third_from):
    """A still background of coarse noise (cells of 4 pixels per 49, so JPEG keeps it) with a little
    fresh noise every frame (keys of one pixel stay close from frame to frame, but not tied),
    under up to three moving ellipses; returns the image and the index mask (later objects
    drawn over earlier ones)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.int64)
    cell = max(4, round(4 * w / 49))  # the same texture at every frame size
    cy, cx = ys // cell, xs // cell
    noise = [(cx * 73856093 ^ cy * 19349663 ^ c * 83492791) % 211 +
             (cx * 19349663 ^ cy * 83492791 ^ (c + 3 * t) * 73856093) % 61 for c in range(3)]
    img = np.stack(noise, -1)
    index = np.zeros((h, w), np.uint8)
    paths = [(0.3, 0.4, 9.0, 0.2), (0.7, 0.6, 7.0, 0.16), (0.5, 0.3, 5.0, 0.14)]
    colours = [(200, 40, 30), (30, 190, 60), (40, 60, 210)]
    for k, (x0, y0, period, r) in enumerate(paths):
        if k == 2 and (third_from is None or t < third_from):
            continue
        px = w * (x0 + 0.15 * np.sin(t / period))
        py = h * (y0 + 0.12 * np.cos(t / (period + 2)))
        blob = ((xs - px) / (r * w * 1.3)) ** 2 + ((ys - py) / (r * h * 1.6)) ** 2 < 1.0
        base = np.array(colours[k])
        img[blob] = base + np.stack([n[blob] % 40 for n in noise], -1)
        index[blob] = k + 1
    return np.clip(img, 0, 255).astype(np.uint8), index


def run_case(name, out):
    c = CASES[name]
    w, h = c["size"]
    n = c["frames"]
    os.makedirs(f"{out}/frames", exist_ok=True)
    os.makedirs(f"{out}/masks", exist_ok=True)
    # One network for every case, fitted to the joint clip and kept with it.
    weights = os.path.join(os.path.dirname(os.path.abspath(out)), "xmem_joint", "XMem.pth")
    torch.manual_seed(0)
    net = build_tiny(TINY)
    if name == "joint":
        CLIP["frame"] = lambda fw, fh, t: (lambda img, idx: (img, idx == 1))(*multi_frame(fw, fh, t, 20))
        randomize(net, 2)
        calibrate_batchnorm(net, w, h)
        net.eval()
        standardize_projections(net, w, h)
        torch.save(net.state_dict(), weights)
    net.load_state_dict(torch.load(weights))
    net.eval()
    for t in range(n):
        if "drawn" in c:
            img, index = multi_frame(*c["drawn"], t, c["third_from"])
            img = np.array(Image.fromarray(img).resize((w, h), Image.BILINEAR))
            index = np.array(Image.fromarray(index).resize((w, h), Image.NEAREST))
        else:
            img, index = multi_frame(w, h, t, c["third_from"])
        if c["ext"] == "jpg":
            Image.fromarray(img).save(f"{out}/frames/frame_{t:06d}.jpg", quality=90)
        else:
            Image.fromarray(img).save(f"{out}/frames/frame_{t:06d}.png")
        if t in c["given"]:
            if c["mode"] == "P":
                im = Image.fromarray(index, mode="P")
                im.putpalette(DAVIS_PALETTE_FULL)
            else:
                im = Image.fromarray(index, mode="L")
            im.save(f"{out}/masks/frame_{t:06d}.png")
    FEATURES.clear()  # masks only: the stage-by-stage checks are xmem_tiny's
    patch_xmem2(net)
    instrument(net)
    config = {"model": weights}
    config.update(c["config"])
    with torch.no_grad():
        rov.run_on_video(f"{out}/frames", f"{out}/masks", f"{out}/out", frames_with_masks=c["given"],
                         print_progress=False, image_saving_max_queue_size=400, overwrite_config=config)
    masks, ties, near = REC.pop("_masks"), REC.pop("_ties"), REC.pop("_near")
    # per frame: the output channel (0 background, k object k in discovery order) and how
    # close the reference's two most probable channels are there (2: within 1e-4, 1: 1e-3)
    os.makedirs(f"{out}/expected", exist_ok=True)
    for t, (m, tie, nr) in enumerate(zip(masks, ties, near)):
        Image.fromarray(m.astype(np.uint8), mode="L").save(f"{out}/expected/frame_{t:06d}.png")
        closeness = tie.astype(np.uint8) + nr.astype(np.uint8)
        Image.fromarray(closeness, mode="L").save(f"{out}/expected/ties_{t:06d}.png")
    # XMem2's own saved output (RGB in the first mask's palette) for two frames
    for t in (c["given"][0], 1):
        src = f"{out}/out/masks/frame_{t:06d}.png"
        Image.open(src).save(f"{out}/xmem2_frame_{t:06d}.png")
    import shutil
    shutil.rmtree(f"{out}/out")
    meta = dict(case=name, frames=n, width=w, height=h, given=c["given"], config=c["config"],
                mask_mode=c["mode"], preload_order=list(set(c["given"])),
                consolidated_at=STATE["compress"], removed_at=STATE["removed"],
                objects=int(max(int(m.max()) for m in masks)),
                step_seconds_per_frame=STATE["step_seconds"] / n, torch_threads=torch.get_num_threads(),
                tie_pixels=int(sum(t.sum() for t in ties)))
    with open(f"{out}/expected.json", "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta))


def main():
    case = next((sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "--case"), None)
    if case:
        return run_case(case, sys.argv[-1])
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    full = "--full" in sys.argv
    out = args[0]
    n_frames, (w, h) = (40, (854, 480)) if full else (160, (49, 37))
    os.makedirs(f"{out}/frames", exist_ok=True)
    os.makedirs(f"{out}/masks", exist_ok=True)
    torch.manual_seed(0)
    net = XMem({}, None, pretrained_key_encoder=False, pretrained_value_encoder=False) if full else build_tiny(TINY)
    randomize(net, 1)
    calibrate_batchnorm(net, w, h)
    net.eval()
    standardize_projections(net, w, h)
    torch.save(net.state_dict(), f"{out}/XMem.pth")
    if "--weights-only" in sys.argv:  # the checkpoint alone (benchmarks)
        return

    sparse = get_sparse_indices(n_frames)
    dense = [int(sparse[d]) for d in get_dense_indices()]
    empty = dense[2]
    for t in range(n_frames):
        img, blob = frame(w, h, t)
        Image.fromarray(img).save(f"{out}/frames/frame_{t:06d}.png")
        if t in dense:
            seed_mask(blob, t == empty).save(f"{out}/masks/frame_{t:06d}.png")

    order = list(set(dense))
    DUMP.update({"pre0", "step1", "step10", f"step{n_frames - 20}", f"step{n_frames - 1}"})
    patch_xmem2(net)
    instrument(net)
    with torch.no_grad():
        rov.run_on_video(f"{out}/frames", f"{out}/masks", f"{out}/out", frames_with_masks=dense,
                         print_progress=False, image_saving_max_queue_size=400,
                         overwrite_config={"model": f"{out}/XMem.pth"})

    masks, ties, near = REC.pop("_masks"), REC.pop("_ties"), REC.pop("_near")
    tensors = {k: v.detach().float().contiguous() for k, v in REC.items()}
    tensors["masks"] = pack(masks)
    tensors["ties"] = pack(ties)
    tensors["near_ties"] = pack(near)
    save_file(tensors, f"{out}/expected.safetensors")
    fg = [float(m.mean()) for m in masks]
    meta = dict(frames=n_frames, width=w, height=h, dense=dense, empty_seed=empty, preload_order=order,
                consolidated_at=STATE["compress"], dumped=sorted(DUMP),
                torch_threads=torch.get_num_threads(), step_seconds_per_frame=STATE["step_seconds"] / n_frames,
                foreground_min=min(fg), foreground_max=max(fg), tie_pixels=int(sum(t.sum() for t in ties)),
                config=config_dims(net))
    with open(f"{out}/expected.json", "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
