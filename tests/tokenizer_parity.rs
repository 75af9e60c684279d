//! Tokenizer parity with transformers 4.41's slow LlamaTokenizer and tokenizers' fast one, on
//! our own SentencePiece model with the Phi-3 added tokens and [SEG] (fixtures from
//! tools/reference/tokenizer_fixtures.py).

mod common;

use serde_json::Value;
use videolisa::tokenizer::{SlowLlama, Tokenizer};

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

#[test]
fn slow_and_fast_match_python_on_every_text_and_prompt() {
    let dir = common::fixture("tokenizer");
    let exp: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let mut checked = 0;
    for variant in ["early", "late"] {
        let e = &exp[variant];
        let d = dir.join(variant);
        let slow = Tokenizer::Slow(Box::new(SlowLlama::open(&d).unwrap()));
        let fast = Tokenizer::open(&d).unwrap();
        assert_eq!(fast.kind(), "tokenizer.json");
        for t in [&slow, &fast] {
            assert_eq!(
                t.len() as u64,
                e["len"].as_u64().unwrap(),
                "{variant} {}",
                t.kind()
            );
            assert_eq!(
                t.seg_token_id().unwrap() as u64,
                e["seg_token_id"].as_u64().unwrap()
            );
        }
        for c in e["cases"].as_array().unwrap() {
            let text = c["text"].as_str().unwrap();
            let got = |t: &Tokenizer, special| -> Vec<i64> {
                t.encode(text, special)
                    .unwrap()
                    .into_iter()
                    .map(i64::from)
                    .collect()
            };
            assert_eq!(got(&slow, true), ids(&c["slow"]), "{variant} slow {text:?}");
            assert_eq!(
                got(&slow, false),
                ids(&c["slow_plain"]),
                "{variant} slow plain {text:?}"
            );
            assert_eq!(got(&fast, true), ids(&c["fast"]), "{variant} fast {text:?}");
            checked += 3;
        }
        for p in e["prompts"].as_array().unwrap() {
            let prompt = p["prompt"].as_str().unwrap();
            assert_eq!(
                videolisa::tokenizer::phi3_prompt(p["instruction"].as_str().unwrap()),
                prompt
            );
            assert_eq!(
                slow.tokenizer_image_token(prompt).unwrap(),
                ids(&p["slow"]),
                "{variant} {prompt:?}"
            );
            assert_eq!(
                fast.tokenizer_image_token(prompt).unwrap(),
                ids(&p["fast"]),
                "{variant} {prompt:?}"
            );
            checked += 2;
        }
    }
    println!("{checked} encodings identical to Python");
}

#[test]
fn missing_tokenizer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = Tokenizer::open(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer.model") && e.contains("tokenizer.json"),
        "{e}"
    );
    std::fs::write(dir.path().join("tokenizer.model"), b"\x0a\x05garbage").unwrap();
    let e = Tokenizer::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("tokenizer.model"), "{e}");
}
