"""Helpers shared by the reference scripts (deterministic test images, hashing)."""
import hashlib

import numpy as np


def h32(x, y, c, seed):
    """32-bit integer hash; mirrored bit for bit by tests/common/mod.rs::h32."""
    v = (x * 73856093) ^ (y * 19349663) ^ (c * 83492791) ^ (seed * 2654435761)
    v &= 0xFFFFFFFF
    v ^= v >> 13
    v = (v * 0x5BD1E995) & 0xFFFFFFFF
    v ^= v >> 15
    return v


def test_image(w, h, seed):
    """uint8 HxWx3 test image: sawtooth ramps with hard wrap edges plus hash noise."""
    ys, xs = np.meshgrid(np.arange(h, dtype=np.int64), np.arange(w, dtype=np.int64), indexing="ij")
    out = np.zeros((h, w, 3), dtype=np.uint8)
    for c in range(3):
        v = (xs * (c + 1) * 3 + ys * (3 - c) * 5 + seed * 17) % 256
        hv = (xs * 73856093) ^ (ys * 19349663) ^ (c * 83492791) ^ (seed * 2654435761)
        hv &= 0xFFFFFFFF
        hv ^= hv >> 13
        hv = (hv * 0x5BD1E995) & 0xFFFFFFFF
        hv ^= hv >> 15
        n = (hv % 64) - 32
        out[:, :, c] = np.clip(v + n, 0, 255).astype(np.uint8)
    return out


def sha256(arr):
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def phi3_prompt(instruction):
    """VideoLISA's phi3_instruct conversation with the hard-coded answer (chat.py:186-192)."""
    return ("<|system|>\nYou are a helpful AI assistant.<|end|>\n<|user|>\n<image>\n" + instruction
            + "<|end|>\n<|assistant|>\nSure, [SEG].<|end|>")


def tokenizer_image_token(tok, prompt):
    """LLaVA's tokenizer_image_token: chunks around <image>, the second chunk's BOS dropped, -200 between."""
    chunks = [tok(c).input_ids for c in prompt.split("<image>")]
    ids, offset = [], 0
    if chunks[0] and chunks[0][0] == tok.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    for i, c in enumerate(chunks):
        if i > 0:
            ids.append(-200)
        ids.extend(c[offset:])
    return ids
