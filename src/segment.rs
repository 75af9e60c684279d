//! `videolisa segment`: one video and one or more sentences in, a mask per frame per sentence
//! out. The frames are decoded once; CLIP and the LLM see the sampled frames, SAM encodes every
//! frame once and decodes it once per prompt.

use crate::error::{Error, Result};
use crate::model::videolisa::{PromptEmbedding, VideoLisa};
use crate::output::{write_atomic, FrameOutputs, OutputFormats};
use crate::preprocess::Planar;
use crate::sampling::Sampling;
use crate::tokenizer::Template;
use crate::video::{Video, VideoInfo};
use candle_core::{DType, Tensor};
use image::{GrayImage, RgbImage};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `segment` does besides computing masks.
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// Sparse frames for CLIP (32).
    pub n_sparse: usize,
    /// Dense frames among them (4).
    pub n_dense: usize,
    /// Files written per prompt.
    pub formats: OutputFormats,
    /// Frames per SAM image-encoder batch.
    pub sam_batch: usize,
    /// Write intermediates (ids, indices, visual tokens, prompt, logits) here as safetensors.
    pub dump: Option<PathBuf>,
    /// Return the per-frame logits of every prompt (memory: frames × H × W × 4 bytes each).
    pub keep_logits: bool,
    /// Write `summary.json` into the output folder.
    pub write_summary: bool,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            n_sparse: crate::sampling::DEFAULT_SPARSE,
            n_dense: crate::sampling::DEFAULT_DENSE,
            formats: OutputFormats::default(),
            sam_batch: 1,
            dump: None,
            keep_logits: false,
            write_summary: true,
        }
    }
}

/// Seconds spent per stage.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StageSeconds {
    /// Reading and decoding frames.
    pub decode: f64,
    /// Preprocessing (CLIP and SAM resizes).
    pub preprocess: f64,
    /// CLIP + projector.
    pub clip: f64,
    /// Phi-3 + `text_hidden_fcs` (all prompts).
    pub llm: f64,
    /// SAM image encoder (all frames).
    pub sam_encode: f64,
    /// SAM mask decoder + post-processing (all frames × prompts).
    pub sam_decode: f64,
    /// Writing outputs.
    pub write: f64,
    /// Wall time of the whole call.
    pub total: f64,
}

/// One prompt: the user's text, how it is worded for the model, where its masks go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSpec {
    /// The user's text.
    pub text: String,
    /// Instruction template.
    pub template: Template,
    /// Output sub-directory (relative to `out`).
    pub dir: String,
}

impl PromptSpec {
    /// `prompt_<k>` specs for `texts` with one template.
    pub fn numbered(texts: &[String], template: Template) -> Vec<PromptSpec> {
        texts
            .iter()
            .enumerate()
            .map(|(k, t)| PromptSpec {
                text: t.clone(),
                template,
                dir: prompt_dir(k),
            })
            .collect()
    }
}

/// The summary of one prompt.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PromptSummary {
    /// The user's text.
    pub text: String,
    /// Template used.
    pub template: Template,
    /// The instruction it became.
    pub instruction: String,
    /// Output directory (relative to `--out`).
    pub dir: String,
    /// Number of prompt tokens (with the image placeholder).
    pub tokens: usize,
    /// LLM sequence length (visual tokens included).
    pub seq_len: usize,
    /// Hidden row used (just before `[SEG]`).
    pub seg_row: usize,
    /// Fraction of foreground pixels over all frames.
    pub foreground: f64,
}

/// What `segment` reports (also written as `summary.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SegmentSummary {
    /// The input video.
    pub video: VideoInfo,
    /// Frames segmented.
    pub frames: usize,
    /// Sparse frame indices (into the video).
    pub sparse: Vec<usize>,
    /// Dense frame indices (into the sparse list).
    pub dense: Vec<usize>,
    /// Device name.
    pub device: String,
    /// Dtype per component.
    pub dtypes: HashMap<String, String>,
    /// `[SEG]` token id.
    pub seg_token_id: u32,
    /// Per prompt.
    pub prompts: Vec<PromptSummary>,
    /// Seconds per stage.
    pub seconds: StageSeconds,
}

/// Everything `segment` computed.
pub struct Segmented {
    /// The summary.
    pub summary: SegmentSummary,
    /// The visual tokens `[S + dense·n, D]`.
    pub visual_tokens: Tensor,
    /// The LLM output per prompt.
    pub prompts: Vec<PromptEmbedding>,
    /// Per prompt `[T, H, W]` f32 logits, when asked for.
    pub logits: Option<Vec<Tensor>>,
}

fn planar_tensor(p: &Planar, dev: &candle_core::Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(&p.data, (p.channels, p.height, p.width), dev)?)
}

fn dtype_name(d: DType) -> String {
    format!("{d:?}").to_lowercase()
}

/// Output sub-directory of prompt `k`.
pub fn prompt_dir(k: usize) -> String {
    format!("prompt_{k}")
}

/// Segments `video` for each of `prompts`; writes outputs under `out` when given.
pub fn segment(
    model: &VideoLisa,
    video: &Video,
    prompts: &[PromptSpec],
    out: Option<&Path>,
    opts: &SegmentOptions,
) -> Result<Segmented> {
    if prompts.is_empty() {
        return Err(Error::Invalid("give at least one prompt".into()));
    }
    let t0 = Instant::now();
    let mut sec = StageSeconds::default();
    let dev = model.options.device.clone();
    let info = video.info().clone();
    let total = info.frames;
    let sampling = Sampling::new(total, opts.n_sparse, opts.n_dense)?;

    // CLIP inputs of the sparse frames (each distinct frame decoded and transformed once)
    let mut unique: Vec<usize> = sampling.sparse.clone();
    unique.dedup();
    let mut clip_inputs: HashMap<usize, Tensor> = HashMap::new();
    let mut last = Instant::now();
    video.visit(&unique, |i, img| {
        sec.decode += last.elapsed().as_secs_f64();
        let t = Instant::now();
        clip_inputs.insert(i, planar_tensor(&model.clip_transform.apply(img), &dev)?);
        sec.preprocess += t.elapsed().as_secs_f64();
        last = Instant::now();
        Ok(())
    })?;
    let pixels: Vec<&Tensor> = sampling.sparse.iter().map(|i| &clip_inputs[i]).collect();
    let pixels = Tensor::stack(&pixels, 0)?;
    let t = Instant::now();
    let visual_tokens = model.visual_tokens(&pixels, &sampling.dense)?;
    sec.clip = t.elapsed().as_secs_f64();
    drop(clip_inputs);

    let t = Instant::now();
    let mut embeddings = Vec::new();
    let mut summaries = Vec::new();
    for spec in prompts {
        let instruction = spec.template.instruction(&spec.text);
        let ids = model.input_ids(&instruction)?;
        let e = model.prompt_embedding(&ids, &visual_tokens)?;
        summaries.push(PromptSummary {
            text: spec.text.clone(),
            template: spec.template,
            instruction,
            dir: spec.dir.clone(),
            tokens: ids.len(),
            seq_len: e.seq_len,
            seg_row: e.seg_row,
            foreground: 0.0,
        });
        embeddings.push(e);
    }
    sec.llm = t.elapsed().as_secs_f64();

    // SAM over every frame
    let sam = &model.visual_model;
    let (w, h) = (info.width, info.height);
    let (rw, rh) = model.sam_transform.resized_size(w, h);
    let mut writers = match out {
        Some(o) => Some(
            (0..prompts.len())
                .map(|k| FrameOutputs::new(&o.join(&prompts[k].dir), w, h, opts.formats.clone()))
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };
    let need_frames = opts.formats.overlay_png || opts.formats.overlay_mp4.is_some();
    let keep = opts.keep_logits || opts.dump.is_some();
    let mut logits: Vec<Vec<Tensor>> = vec![Vec::new(); prompts.len()];
    let mut fg = vec![0u64; prompts.len()];
    let sparse_prompts: Vec<Tensor> = embeddings
        .iter()
        .map(|e| e.embedding.unsqueeze(1))
        .collect::<candle_core::Result<_>>()?;
    let bar = crate::progress::bar(total as u64, "SAM");
    let batch = opts.sam_batch.max(1);
    let mut pending: Vec<(usize, Tensor, Option<RgbImage>)> = Vec::new();
    let mut flush =
        |pending: &mut Vec<(usize, Tensor, Option<RgbImage>)>, sec: &mut StageSeconds| -> Result<()> {
            if pending.is_empty() {
                return Ok(());
            }
            let x = Tensor::stack(&pending.iter().map(|p| &p.1).collect::<Vec<_>>(), 0)?;
            let t = Instant::now();
            let emb = sam.encode(&x)?;
            sec.sam_encode += t.elapsed().as_secs_f64();
            for (k, sp) in sparse_prompts.iter().enumerate() {
                let t = Instant::now();
                let d = sam.decode_embeddings(&emb, sp, false)?;
                let m = sam.postprocess_masks(
                    &d.low_res_masks,
                    (rh as usize, rw as usize),
                    (h as usize, w as usize),
                )?;
                let m = m.squeeze(1)?.to_dtype(DType::F32)?; // [B, H, W]
                let values: Vec<f32> = m.flatten_all()?.to_vec1()?;
                sec.sam_decode += t.elapsed().as_secs_f64();
                let t = Instant::now();
                let plane = (w * h) as usize;
                for (b, (index, _, frame)) in pending.iter().enumerate() {
                    let px = &values[b * plane..(b + 1) * plane];
                    let mask: Vec<u8> = px.iter().map(|&v| u8::from(v > 0.0)).collect();
                    fg[k] += mask.iter().map(|&v| u64::from(v)).sum::<u64>();
                    if let Some(ws) = writers.as_mut() {
                        let ids = GrayImage::from_raw(w, h, mask).expect("mask buffer has the frame size");
                        ws[k].push(&info.frame_names[*index], frame.as_ref(), &ids)?;
                    }
                }
                sec.write += t.elapsed().as_secs_f64();
                if keep {
                    logits[k].push(m);
                }
            }
            bar.inc(pending.len() as u64);
            pending.clear();
            Ok(())
        };
    let mut last = Instant::now();
    for frame in video.frames()? {
        let frame = frame?;
        sec.decode += last.elapsed().as_secs_f64();
        let t = Instant::now();
        let x = planar_tensor(&model.sam_transform.apply(&frame.image), &dev)?;
        sec.preprocess += t.elapsed().as_secs_f64();
        pending.push((frame.index, x, need_frames.then_some(frame.image)));
        if pending.len() == batch {
            flush(&mut pending, &mut sec)?;
        }
        last = Instant::now();
    }
    flush(&mut pending, &mut sec)?;
    bar.finish_and_clear();
    let t = Instant::now();
    if let Some(ws) = writers {
        for wr in ws {
            wr.finish()?;
        }
    }
    sec.write += t.elapsed().as_secs_f64();
    let plane_total = (u64::from(w) * u64::from(h) * total as u64).max(1) as f64;
    for (s, f) in summaries.iter_mut().zip(&fg) {
        s.foreground = *f as f64 / plane_total;
    }
    let logits = if keep {
        Some(
            logits
                .into_iter()
                .map(|l| Tensor::cat(&l, 0))
                .collect::<candle_core::Result<Vec<_>>>()?,
        )
    } else {
        None
    };
    let o = &model.options;
    let summary = SegmentSummary {
        frames: total,
        sparse: sampling.sparse.clone(),
        dense: sampling.dense.clone(),
        device: if o.device.is_cpu() {
            "cpu".into()
        } else {
            "cuda".into()
        },
        dtypes: HashMap::from([
            ("llm".to_string(), dtype_name(o.llm)),
            ("clip".to_string(), dtype_name(o.clip)),
            ("sam".to_string(), dtype_name(o.sam)),
        ]),
        seg_token_id: model.seg_token_id,
        prompts: summaries,
        video: info,
        seconds: sec,
    };
    let mut result = Segmented {
        summary,
        visual_tokens,
        prompts: embeddings,
        logits,
    };
    if let Some(d) = &opts.dump {
        write_dump(d, &result)?;
    }
    result.summary.seconds.total = t0.elapsed().as_secs_f64();
    if let (Some(o), true) = (out, opts.write_summary) {
        let json =
            serde_json::to_vec_pretty(&result.summary).map_err(|e| Error::Runtime(format!("JSON: {e}")))?;
        let path = o.join("summary.json");
        write_atomic(&path, |f| {
            std::io::Write::write_all(f, &json).map_err(|e| Error::io(&path, e))
        })?;
    }
    if !opts.keep_logits {
        result.logits = None;
    }
    Ok(result)
}

/// Writes `dump.safetensors` in `dir`: sampled indices, visual tokens and per prompt the input
/// ids, hidden row, prompt embedding and per-frame logits.
fn write_dump(dir: &Path, r: &Segmented) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let cpu = candle_core::Device::Cpu;
    let idx = |v: &[usize]| Tensor::new(v.iter().map(|&i| i as i64).collect::<Vec<_>>(), &cpu);
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert("sparse_indices".into(), idx(&r.summary.sparse)?);
    t.insert("dense_indices".into(), idx(&r.summary.dense)?);
    t.insert(
        "visual_tokens".into(),
        r.visual_tokens.to_dtype(DType::F32)?.to_device(&cpu)?,
    );
    for (k, p) in r.prompts.iter().enumerate() {
        t.insert(
            format!("prompt_{k}.input_ids"),
            Tensor::new(p.input_ids.as_slice(), &cpu)?,
        );
        t.insert(format!("prompt_{k}.hidden"), p.hidden.to_device(&cpu)?);
        t.insert(format!("prompt_{k}.embedding"), p.embedding.to_device(&cpu)?);
        if let Some(l) = &r.logits {
            t.insert(format!("prompt_{k}.logits"), l[k].to_device(&cpu)?);
        }
    }
    let path = dir.join("dump.safetensors");
    let tmp = dir.join(".dump.safetensors.partial");
    candle_core::safetensors::save(&t, &tmp)?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}
