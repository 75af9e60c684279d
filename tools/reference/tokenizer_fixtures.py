"""Tokenizer fixtures: our own Llama-style SentencePiece BPE model plus the Phi-3 added tokens and
[SEG], saved the way transformers 4.41 saves a slow LlamaTokenizer, and the ids the Python
tokenizers give for tricky texts and the VideoLISA prompts.

  python tools/reference/tokenizer_fixtures.py tests/fixtures/tokenizer

Writes <out>/spm.model (trained here on LICENSE + fixed sentences, Llama's trainer settings),
<out>/early/ and <out>/late/ (slow files: tokenizer.model, tokenizer_config.json,
special_tokens_map.json, added_tokens.json; plus tokenizer.json converted by transformers) —
"early" has rstrip=True on the Phi-3 chat tokens (the first Phi-3 release, which LLaVA-Phi-3 ships),
"late" rstrip=False — and <out>/expected.json with slow and fast ids per text.
"""
import json
import os
import shutil
import sys

import sentencepiece as spm
from transformers import AddedToken, LlamaTokenizer, LlamaTokenizerFast

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import phi3_prompt, tokenizer_image_token  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

SENTENCES = [
    "Please segment the person riding a bike in this image.",
    "The dog on the left jumps over the fence, then runs away 123 times.",
    "A helpful AI assistant answers: Sure, here it is.",
    "Which object moves fastest? The red car, the cat or the bird?",
    "   leading spaces\tand tabs\nand newlines\n\n",
    "numbers 2024 3.14159 and 42 apples",
]

PHI3_TOKENS = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
               "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]

TEXTS = [
    "",
    "Hello world",
    " Hello world",
    "  two leading spaces",
    "trailing space ",
    "multiple   inner    spaces",
    "line one\nline two\n\nline four",
    "\nstarts with newline",
    "tabs\tand\tmore",
    "unicode: café, naïve, 東京, emoji 🙂",
    "digits 0123456789 and 3.5",
    "[SEG]",
    "Sure, [SEG].",
    "a[SEG]b [SEG] c",
    "<s> literal bos and </s> eos and <unk>",
    "<|user|>\nhi<|end|>\n<|assistant|>\nok<|end|>",
    "<|end|>   spaces after end",
    "spaces before end   <|end|>",
    "\u2581already has the mark",
    "Please segment the person riding a bike in this image.",
]

INSTRUCTIONS = [
    ("chat", "What is the dog doing?"),
    ("referring", "Please segment the the man in a red shirt in this image."),
    ("reason_sentence", "Which animal is likely to catch the ball?. Please output the segmentation masks."),
    ("reason_phrase", "Please segment the cat that sleeps in this scene."),
    ("empty", ""),
]


def train(out):
    corpus = os.path.join(out, "corpus.txt")
    with open(os.path.join(REPO, "LICENSE")) as f:
        lic = f.read()
    with open(corpus, "w") as f:
        f.write(lic + "\n" + "\n".join(SENTENCES * 20) + "\n")
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=os.path.join(out, "spm"), model_type="bpe", vocab_size=700,
        byte_fallback=True, split_digits=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=True, allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        character_coverage=0.9995, num_threads=1, minloglevel=2)
    os.remove(corpus)
    os.remove(os.path.join(out, "spm.vocab"))
    return os.path.join(out, "spm.model")


def build(model, out, rstrip):
    tok = LlamaTokenizer(vocab_file=model, legacy=False, add_bos_token=True, add_eos_token=False,
                         pad_token="<unk>")
    tok.add_special_tokens({"additional_special_tokens": ["<|endoftext|>"]})
    tok.add_tokens([AddedToken(t, lstrip=False, rstrip=rstrip and t != "<|endoftext|>", normalized=False, special=True)
                    for t in PHI3_TOKENS], special_tokens=True)
    tok.add_tokens("[SEG]")
    tok.save_pretrained(out)
    # early: the chat tokens are added but not "special" (the ▁ before <|system|> stays), eos
    # <|endoftext|>; late: all of them special, eos <|end|>
    extra, eos = ([], "<|endoftext|>") if rstrip else (PHI3_TOKENS, "<|end|>")
    for fname in ("tokenizer_config.json", "special_tokens_map.json"):
        path = os.path.join(out, fname)
        with open(path) as f:
            cfg = json.load(f)
        cfg["additional_special_tokens"] = extra
        cfg["eos_token"] = eos
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2, ensure_ascii=False)
    fast = LlamaTokenizerFast.from_pretrained(out, from_slow=True, legacy=False)
    fast.save_pretrained(os.path.join(out, "fast"))
    shutil.copy(os.path.join(out, "fast", "tokenizer.json"), os.path.join(out, "tokenizer.json"))
    shutil.rmtree(os.path.join(out, "fast"))
    slow = LlamaTokenizer.from_pretrained(out, use_fast=False)
    return slow, fast


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    model = train(out)
    expected = {}
    for name, rstrip in [("early", True), ("late", False)]:
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        slow, fast = build(model, d, rstrip)
        cases = []
        for t in TEXTS:
            cases.append({"text": t, "slow": slow(t).input_ids, "slow_plain": slow(t, add_special_tokens=False).input_ids,
                          "fast": fast(t).input_ids, "tokens": slow.tokenize(t)})
        prompts = []
        for kind, ins in INSTRUCTIONS:
            p = phi3_prompt(ins)
            prompts.append({"kind": kind, "instruction": ins, "prompt": p,
                            "slow": tokenizer_image_token(slow, p), "fast": tokenizer_image_token(fast, p)})
        seg = slow("[SEG]", add_special_tokens=False).input_ids
        expected[name] = {"len": len(slow), "seg_token_id": seg[-1], "seg_ids": seg, "cases": cases,
                          "prompts": prompts}
        diff = sum(c["slow"] != c["fast"] for c in cases) + sum(p["slow"] != p["fast"] for p in prompts)
        print(f"{name}: len {len(slow)}, [SEG] {seg}, fast differs from slow on {diff} inputs")
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
