//! End-to-end parity on the tiny random VideoLISA checkpoint (tests/fixtures/videolisa_tiny,
//! from tools/reference/videolisa_fixtures.py): T = 1, 20, 100 frames, two prompts; input ids
//! and sampled indices identical, visual tokens / [SEG] hidden row / prompt embedding / per-frame
//! logits within 1e-4 relative in f32, masks identical except where |logit| < 1e-3. The LLM's
//! sliding window (40) is shorter than the sequences (136/142 tokens).

mod common;

use candle_core::DType;
use serde_json::Value;
use videolisa::model::videolisa::{LoadOptions, ModelPaths, VideoLisa};
use videolisa::segment::{segment, PromptSpec, SegmentOptions};
use videolisa::tokenizer::Template;
use videolisa::video::Video;

fn tiny_paths() -> ModelPaths {
    let d = common::fixture("videolisa_tiny");
    ModelPaths {
        model: d.join("model"),
        clip: d.join("clip"),
    }
}

fn f32_options() -> LoadOptions {
    LoadOptions {
        llm: DType::F32,
        clip: DType::F32,
        sam: DType::F32,
        device: common::device(),
    }
}

#[test]
fn tiny_checkpoint_matches_the_python_reference() {
    let dir = common::fixture("videolisa_tiny");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let exp = common::load_tensors(&dir.join("expected.safetensors"));
    let model = VideoLisa::load(&tiny_paths(), f32_options()).unwrap();
    let (w, h) = (
        meta["frame_size"][0].as_u64().unwrap() as u32,
        meta["frame_size"][1].as_u64().unwrap() as u32,
    );
    let mut worst = [0f64; 4];
    for case in meta["cases"].as_array().unwrap() {
        let total = case["frames"].as_u64().unwrap() as usize;
        let frames = tempfile::tempdir().unwrap();
        for t in 0..total {
            common::test_image(w, h, 100 + t as u64)
                .save(frames.path().join(format!("{t:05}.png")))
                .unwrap();
        }
        let video = Video::open(frames.path()).unwrap();
        let prompts: Vec<&Value> = case["prompts"].as_array().unwrap().iter().collect();
        // the fixture's prompts use two templates: run each with its own
        for (j, p) in prompts.iter().enumerate() {
            let template = match p["kind"].as_str().unwrap() {
                "referring" => Template::Referring,
                "reason_sentence" => Template::ReasonSentence,
                k => panic!("unknown template {k}"),
            };
            let opts = SegmentOptions {
                keep_logits: true,
                ..SegmentOptions::default()
            };
            let spec = PromptSpec::numbered(&[p["text"].as_str().unwrap().to_string()], template);
            let r = segment(&model, &video, &spec, None, &opts).unwrap();
            let c = format!("T{total}");
            let ids: Vec<i64> = p["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            assert_eq!(r.prompts[0].input_ids, ids, "{c} p{j} input ids");
            let idx = |v: &Value| -> Vec<usize> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as usize)
                    .collect()
            };
            assert_eq!(r.summary.sparse, idx(&case["sparse"]), "{c} sparse");
            assert_eq!(r.summary.dense, idx(&case["dense"]), "{c} dense");
            assert_eq!(r.prompts[0].seg_row as u64, p["seg_row"].as_u64().unwrap());
            assert_eq!(r.prompts[0].seq_len as u64, p["seq_len"].as_u64().unwrap());
            let checks = [
                (
                    "visual tokens",
                    r.visual_tokens.to_dtype(DType::F32).unwrap(),
                    exp[&format!("{c}.visual_tokens")].clone(),
                ),
                (
                    "[SEG] hidden row",
                    r.prompts[0].hidden.clone(),
                    exp[&format!("{c}.p{j}.hidden")].clone(),
                ),
                (
                    "prompt embedding",
                    r.prompts[0].embedding.clone(),
                    exp[&format!("{c}.p{j}.embedding")].clone(),
                ),
                (
                    "logits",
                    r.logits.as_ref().unwrap()[0].clone(),
                    exp[&format!("{c}.p{j}.logits")].clone(),
                ),
            ];
            for (k, (name, got, want)) in checks.iter().enumerate() {
                assert_eq!(got.dims(), want.dims(), "{c} p{j} {name}");
                let (rel, abs) = common::rel_err(got, want);
                // The tiny random mask decoder is ill-conditioned: the reference's own f32
                // logits differ from its f64 decoder by `floor`; allow 1e-4 or 5× that floor.
                let bound = if *name == "logits" {
                    let f64dec = &exp[&format!("{c}.p{j}.logits_f64dec")];
                    let floor = common::rel_err(want, f64dec).0;
                    let vs64 = common::rel_err(got, f64dec).0;
                    println!("{c} prompt {j} logits: reference f32 vs f64 decoder {floor:.2e}, ours vs f64 decoder {vs64:.2e}");
                    1e-4f64.max(5.0 * floor)
                } else {
                    1e-4
                };
                println!("{c} prompt {j} {name}: relative {rel:.2e} (max abs {abs:.2e}, bound {bound:.1e})");
                assert!(
                    rel <= bound,
                    "{c} p{j} {name}: relative error {rel:.2e} > {bound:.1e}"
                );
                worst[k] = worst[k].max(rel);
            }
            let got: Vec<f32> = r.logits.as_ref().unwrap()[0]
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let want: Vec<f32> = exp[&format!("{c}.p{j}.logits")]
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let flips = got
                .iter()
                .zip(&want)
                .filter(|(g, w)| (**g > 0.0) != (**w > 0.0) && w.abs() >= 1e-3)
                .count();
            assert_eq!(flips, 0, "{c} p{j}: mask pixels differ where |logit| >= 1e-3");
        }
    }
    println!(
        "worst relative errors: visual {:.2e}, hidden {:.2e}, prompt {:.2e}, logits {:.2e}",
        worst[0], worst[1], worst[2], worst[3]
    );
}

/// `openai/clip-vit-large-patch14-336` ships only a `pytorch_model.bin` written by `torch.save`
/// (float32, with `position_ids` buffers): the tiny tower saved that way
/// (tools/reference/clip_bin_fixture.py) gives exactly the visual tokens of its safetensors copy.
#[test]
fn clip_from_a_torch_save_pytorch_model_bin() {
    let d = common::fixture("videolisa_tiny");
    let from_bin = ModelPaths {
        model: d.join("model"),
        clip: d.join("clip_bin"),
    };
    assert!(!from_bin.clip.join("model.safetensors").exists());
    let a = VideoLisa::load(&tiny_paths(), f32_options()).unwrap();
    let b = VideoLisa::load(&from_bin, f32_options()).unwrap();
    let frames = tempfile::tempdir().unwrap();
    for t in 0..3 {
        common::test_image(64, 48, 7 + t)
            .save(frames.path().join(format!("{t}.png")))
            .unwrap();
    }
    let video = Video::open(frames.path()).unwrap();
    let prompts = PromptSpec::numbered(&["the thing".to_string()], Template::Referring);
    let opts = SegmentOptions::default();
    let ra = segment(&a, &video, &prompts, None, &opts).unwrap();
    let rb = segment(&b, &video, &prompts, None, &opts).unwrap();
    let (rel, abs) = common::rel_err(&rb.visual_tokens, &ra.visual_tokens);
    println!("visual tokens, pytorch_model.bin vs model.safetensors: max |diff| {abs} (relative {rel})");
    assert_eq!(abs, 0.0);
}

/// bf16 everywhere against our own f32 on the tiny checkpoint (100 frames, the fixture's
/// frames and first prompt): per-frame mask IoU and the prompt embedding's cosine, reported,
/// not asserted — random weights amplify bf16 rounding. tools/gpu/check.sh runs it on CUDA
/// (on the CPU, candle has no bf16 convolution).
#[test]
#[ignore = "reports numbers for tools/gpu/check.sh"]
fn bf16_masks_against_f32_are_reported() {
    let dir = common::fixture("videolisa_tiny");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let (w, h) = (
        meta["frame_size"][0].as_u64().unwrap() as u32,
        meta["frame_size"][1].as_u64().unwrap() as u32,
    );
    let frames = tempfile::tempdir().unwrap();
    for t in 0..100 {
        common::test_image(w, h, 100 + t as u64)
            .save(frames.path().join(format!("{t:05}.png")))
            .unwrap();
    }
    let video = Video::open(frames.path()).unwrap();
    let text = meta["cases"][0]["prompts"][0]["text"].as_str().unwrap();
    let prompts = PromptSpec::numbered(&[text.to_string()], Template::Referring);
    let opts = SegmentOptions {
        keep_logits: true,
        ..SegmentOptions::default()
    };
    let bf16 = LoadOptions {
        llm: DType::BF16,
        clip: DType::BF16,
        sam: DType::BF16,
        device: common::device(),
    };
    let run = |o: LoadOptions| {
        let model = VideoLisa::load(&tiny_paths(), o).unwrap();
        segment(&model, &video, &prompts, None, &opts).unwrap()
    };
    let (a, b) = (run(f32_options()), run(bf16));
    let masks = |r: &videolisa::segment::Segmented| -> Vec<Vec<bool>> {
        let l = &r.logits.as_ref().unwrap()[0];
        (0..l.dim(0).unwrap())
            .map(|t| {
                let v: Vec<f32> = l.get(t).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                v.iter().map(|&x| x > 0.0).collect()
            })
            .collect()
    };
    let ious: Vec<f64> = masks(&a)
        .iter()
        .zip(masks(&b))
        .map(|(x, y)| {
            let inter = x.iter().zip(&y).filter(|(p, q)| **p && **q).count();
            let union = x.iter().zip(&y).filter(|(p, q)| **p || **q).count();
            if union == 0 {
                1.0
            } else {
                inter as f64 / union as f64
            }
        })
        .collect();
    let e = |r: &videolisa::segment::Segmented| -> Vec<f64> {
        let t = r.prompts[0].embedding.to_dtype(DType::F64).unwrap();
        t.flatten_all().unwrap().to_vec1().unwrap()
    };
    let (x, y) = (e(&a), e(&b));
    let dot: f64 = x.iter().zip(&y).map(|(p, q)| p * q).sum();
    let norm = |v: &[f64]| v.iter().map(|p| p * p).sum::<f64>().sqrt();
    let min = ious.iter().cloned().fold(1.0, f64::min);
    let mean = ious.iter().sum::<f64>() / ious.len() as f64;
    let below = ious.iter().filter(|&&v| v < 0.99).count();
    println!(
        "bf16 vs f32 on {:?}: prompt cosine {:.6}, per-frame mask IoU min {min:.4} mean {mean:.4}, \
         {below} of {} frames below 0.99",
        common::device(),
        dot / (norm(&x) * norm(&y)),
        ious.len()
    );
}
