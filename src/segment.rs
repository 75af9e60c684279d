//! `videolisa segment`: one video and one or more sentences in, a mask per frame per sentence
//! out. Every prompt is tokenized and checked against the model's context before any frame is
//! decoded; then CLIP and the LLM see the sampled frames, and SAM encodes every frame once and
//! decodes it once per prompt.

use crate::error::{Error, Result};
use crate::model::videolisa::{PromptEmbedding, VideoLisa};
use crate::model::xmem::XMem;
use crate::output::{write_atomic, FrameOutputs, OutputFormats};
use crate::preprocess::{ClipTransform, Planar, SamTransform};
use crate::sampling::Sampling;
use crate::tokenizer::{check_instruction, Template};
use crate::video::{Frame, Video, VideoInfo};
use candle_core::{DType, Tensor};
use image::{GrayImage, RgbImage};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    /// Frames per SAM image-encoder batch; `None`: chosen from the device's free memory
    /// ([`crate::model::sam::Sam::auto_batch`]).
    pub sam_batch: Option<usize>,
    /// Write intermediates (ids, indices, visual tokens, prompt, logits) here as safetensors.
    pub dump: Option<PathBuf>,
    /// Return the per-frame logits of every prompt (memory: frames × H × W × 4 bytes each).
    pub keep_logits: bool,
    /// Write `summary.json` into the output folder.
    pub write_summary: bool,
    /// Post-optimization: XMem++ propagates SAM's masks of the dense frames through the video
    /// instead of SAM decoding every frame.
    pub propagate: Option<Arc<XMem>>,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            n_sparse: crate::sampling::DEFAULT_SPARSE,
            n_dense: crate::sampling::DEFAULT_DENSE,
            formats: OutputFormats::default(),
            sam_batch: None,
            dump: None,
            keep_logits: false,
            write_summary: true,
            propagate: None,
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
    /// XMem++ over every frame (`--propagate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xmem: Option<f64>,
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
    pub dtypes: BTreeMap<String, String>,
    /// Frames per SAM image-encoder batch (given, or chosen from free GPU memory).
    pub sam_batch: usize,
    /// The attention window the LLM used (`config.json`'s `sliding_window`; null = none).
    pub sliding_window: Option<usize>,
    /// The LLM's context (`max_position_embeddings`).
    pub max_position_embeddings: usize,
    /// `[SEG]` token id.
    pub seg_token_id: u32,
    /// Per prompt.
    pub prompts: Vec<PromptSummary>,
    /// Outputs that could not be written (an overlay video), each with its cause; the masks
    /// are complete regardless.
    pub warnings: Vec<String>,
    /// What XMem++ did (`--propagate` runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation: Option<PropagationSummary>,
    /// Seconds per stage.
    pub seconds: StageSeconds,
}

/// What the XMem++ stage reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PropagationSummary {
    /// The frames whose SAM masks seeded XMem++'s permanent memory (the dense frames).
    pub seed_frames: Vec<usize>,
    /// Per prompt: seed frames whose SAM mask was empty.
    pub empty_seeds: Vec<Vec<usize>>,
    /// Per prompt: working-memory consolidations into long-term memory.
    pub consolidations: Vec<usize>,
    /// Prompts the stage could not propagate (no non-empty seed mask): their masks are empty.
    pub notes: Vec<String>,
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

/// A preprocessed frame as a `[C, H, W]` tensor on `dev`.
pub(crate) fn planar_tensor(p: &Planar, dev: &candle_core::Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(&p.data, (p.channels, p.height, p.width), dev)?)
}

fn dtype_name(d: DType) -> String {
    format!("{d:?}").to_lowercase()
}

/// Output sub-directory of prompt `k`.
pub fn prompt_dir(k: usize) -> String {
    format!("prompt_{k}")
}

/// A prompt tokenized and checked, before any model work.
struct Prepared {
    instruction: String,
    ids: Vec<i64>,
}

/// Words, tokenizes and checks every prompt: no typed `<image>`/`[SEG]`, and the whole
/// sequence within the model's context.
fn prepare_prompts(model: &VideoLisa, prompts: &[PromptSpec], sampling: &Sampling) -> Result<Vec<Prepared>> {
    if prompts.is_empty() {
        return Err(Error::Invalid("give at least one prompt".into()));
    }
    let n_visual = model.visual_token_count(sampling.sparse.len(), sampling.dense.len());
    prompts
        .iter()
        .map(|spec| {
            let instruction = spec.template.instruction(&spec.text);
            check_instruction(&instruction)?;
            let ids = model.input_ids(&instruction)?;
            model.check_sequence(&ids, n_visual)?;
            Ok(Prepared { instruction, ids })
        })
        .collect()
}

/// The CLIP inputs of a video's sparse frames, decoded and preprocessed (no model needed, so
/// a batch prepares the next video's while the current one is on the model).
pub struct SparseInputs {
    /// The sampling they were made for.
    pub sampling: Sampling,
    /// Preprocessed CLIP input of each distinct sparse frame, by frame index.
    pub frames: HashMap<usize, Planar>,
    /// Seconds spent decoding and preprocessing.
    pub decode: f64,
    /// Seconds spent preprocessing.
    pub preprocess: f64,
}

impl SparseInputs {
    /// Samples `video` and decodes and preprocesses each distinct sparse frame once.
    pub fn read(transform: &ClipTransform, video: &Video, n_sparse: usize, n_dense: usize) -> Result<Self> {
        let sampling = Sampling::new(video.len(), n_sparse, n_dense)?;
        let (mut decode, mut preprocess) = (0.0, 0.0);
        let mut frames = HashMap::new();
        let mut last = Instant::now();
        video.visit(&sampling.sparse, |i, img| {
            decode += last.elapsed().as_secs_f64();
            let t = Instant::now();
            frames.insert(i, transform.apply(img));
            preprocess += t.elapsed().as_secs_f64();
            last = Instant::now();
            Ok(())
        })?;
        Ok(SparseInputs {
            sampling,
            frames,
            decode,
            preprocess,
        })
    }
}

/// The visual tokens of a video's sparse frames (CLIP + projector).
fn encode_sparse_frames(model: &VideoLisa, inputs: &SparseInputs, sec: &mut StageSeconds) -> Result<Tensor> {
    let dev = model.options.device.clone();
    let pixels = inputs
        .sampling
        .sparse
        .iter()
        .map(|i| planar_tensor(&inputs.frames[i], &dev))
        .collect::<Result<Vec<_>>>()?;
    let pixels = Tensor::stack(&pixels, 0)?;
    let t = Instant::now();
    let tokens = model.visual_tokens(&pixels, &inputs.sampling.dense)?;
    dev.synchronize()?; // GPU work is asynchronous: charge it to this stage
    sec.clip = t.elapsed().as_secs_f64();
    Ok(tokens)
}

/// What a [`MaskSink`] hands back: write failures, foreground pixels per prompt, kept logits.
type SinkTotals = (Vec<String>, Vec<u64>, Option<Vec<Tensor>>);

/// Where every frame's masks go: the writers of each prompt, foreground counts, and the logits
/// kept for dumps. Mask stages push into it; it knows nothing of how masks were made.
pub struct MaskSink {
    writers: Option<Vec<FrameOutputs>>,
    frame_names: Vec<String>,
    width: u32,
    height: u32,
    keep_logits: bool,
    logits: Vec<Vec<Tensor>>,
    foreground: Vec<u64>,
}

impl MaskSink {
    fn new(
        out: Option<&Path>,
        prompts: &[PromptSpec],
        info: &VideoInfo,
        opts: &SegmentOptions,
    ) -> Result<Self> {
        let writers = match out {
            Some(o) => Some(
                prompts
                    .iter()
                    .map(|p| {
                        FrameOutputs::new(&o.join(&p.dir), info.width, info.height, opts.formats.clone())
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            None => None,
        };
        Ok(MaskSink {
            writers,
            frame_names: info.frame_names.clone(),
            width: info.width,
            height: info.height,
            keep_logits: opts.keep_logits || opts.dump.is_some(),
            logits: vec![Vec::new(); prompts.len()],
            foreground: vec![0; prompts.len()],
        })
    }

    /// Thresholds prompt `k`'s logits `[B, H, W]` (on the model's device) of the frames `batch`
    /// and writes them; only the 0/1 masks leave the device, unless the logits are kept.
    fn push(&mut self, k: usize, logits: Tensor, batch: &[(usize, Option<RgbImage>)]) -> Result<()> {
        let masks = binary_masks(&logits)?;
        for ((index, frame), mask) in batch.iter().zip(masks) {
            self.push_mask(k, *index, frame.as_ref(), mask)?;
        }
        if self.keep_logits {
            self.logits[k].push(logits.to_device(&candle_core::Device::Cpu)?);
        }
        Ok(())
    }

    /// Writes prompt `k`'s 0/1 mask (frame size, row-major) of frame `index`; `frame` is the
    /// picture when overlays are written.
    pub fn push_mask(
        &mut self,
        k: usize,
        index: usize,
        frame: Option<&RgbImage>,
        mask: Vec<u8>,
    ) -> Result<()> {
        self.foreground[k] += mask.iter().map(|&v| u64::from(v)).sum::<u64>();
        if let Some(ws) = self.writers.as_mut() {
            let ids = GrayImage::from_raw(self.width, self.height, mask).ok_or_else(|| {
                Error::Runtime(format!("a mask of frame {index} does not have the frame size"))
            })?;
            ws[k].push(&self.frame_names[index], frame, &ids)?;
        }
        Ok(())
    }

    /// Closes the writers; returns what could not be written, the foreground pixel counts and
    /// the kept logits.
    fn finish(self) -> Result<SinkTotals> {
        let mut warnings = Vec::new();
        for w in self.writers.into_iter().flatten() {
            warnings.extend(w.finish()?);
        }
        // A stage that makes masks without logits (XMem++) leaves nothing to keep.
        let logits = if self.keep_logits && self.logits.iter().all(|l| !l.is_empty()) {
            Some(
                self.logits
                    .into_iter()
                    .map(|l| Tensor::cat(&l, 0))
                    .collect::<candle_core::Result<Vec<_>>>()?,
            )
        } else {
            None
        };
        Ok((warnings, self.foreground, logits))
    }
}

/// A frame read ahead for SAM: its index, the frame resized for SAM (normalized and padded on
/// the model's device), the frame itself when overlays need it.
type SamFrame = (usize, RgbImage, Option<RgbImage>);

/// Decodes every frame for SAM on this thread and preprocesses them, handing them over in
/// order through `tx` (bounded, so memory stays flat); returns (decode, preprocess) seconds.
/// With a GPU on the other end, frames are preprocessed in chunks on all CPU threads, so the
/// reader keeps up with the GPU; on the CPU one at a time (the model needs the cores).
fn read_sam_frames(
    model: &VideoLisa,
    video: &Video,
    keep_frames: bool,
    tx: std::sync::mpsc::SyncSender<Result<SamFrame>>,
) -> (f64, f64) {
    let (mut decode, mut preprocess) = (0.0, 0.0);
    let chunk = if model.options.device.is_cpu() {
        1
    } else {
        rayon::current_num_threads().max(1)
    };
    let mut pending: Vec<Frame> = Vec::with_capacity(chunk);
    let send = |pending: &mut Vec<Frame>, preprocess: &mut f64| -> bool {
        let t = Instant::now();
        let ready = sam_inputs(&model.sam_transform, std::mem::take(pending), keep_frames);
        *preprocess += t.elapsed().as_secs_f64();
        ready.into_iter().all(|f| tx.send(Ok(f)).is_ok())
    };
    let frames = match video.frames() {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.send(Err(e));
            return (decode, preprocess);
        }
    };
    let mut last = Instant::now();
    for frame in frames {
        decode += last.elapsed().as_secs_f64();
        match frame {
            Ok(f) => pending.push(f),
            Err(e) => {
                if send(&mut pending, &mut preprocess) {
                    let _ = tx.send(Err(e));
                }
                return (decode, preprocess);
            }
        }
        if pending.len() == chunk && !send(&mut pending, &mut preprocess) {
            return (decode, preprocess);
        }
        last = Instant::now();
    }
    send(&mut pending, &mut preprocess);
    (decode, preprocess)
}

/// SAM's inputs of decoded frames, in their order (in parallel when there are several).
fn sam_inputs(transform: &SamTransform, frames: Vec<Frame>, keep_frames: bool) -> Vec<SamFrame> {
    use rayon::prelude::*;
    let one = |f: Frame| {
        let p = transform.resize(&f.image);
        (f.index, p, keep_frames.then_some(f.image))
    };
    if frames.len() > 1 {
        frames.into_par_iter().map(one).collect()
    } else {
        frames.into_iter().map(one).collect()
    }
}

/// What a mask stage works from: the model, the video, its sampling, and each prompt's SAM
/// prompt embedding `[1, 1, D]` from the LLM.
pub struct StageInput<'a> {
    /// The loaded model (SAM is `model.visual_model`).
    pub model: &'a VideoLisa,
    /// The video.
    pub video: &'a Video,
    /// Its sparse and dense frames.
    pub sampling: &'a Sampling,
    /// Per prompt, SAM's sparse prompt embedding.
    pub prompts: &'a [Tensor],
    /// The run's options.
    pub opts: &'a SegmentOptions,
}

/// The per-frame mask producer, the stage after the LLM: it hands every frame's mask of every
/// prompt to the sink, in frame order, and keeps whatever state it needs per prompt.
pub trait MaskStage {
    /// Produces the masks; adds its time to `sec`.
    fn run(&mut self, input: &StageInput<'_>, sink: &mut MaskSink, sec: &mut StageSeconds) -> Result<()>;
    /// What the stage reports in the summary, if anything.
    fn summary(&self) -> Option<PropagationSummary> {
        None
    }
}

/// VideoLISA's default: SAM decodes every frame with the prompt (One-Token-Seg-All).
pub struct SamEveryFrame;

impl MaskStage for SamEveryFrame {
    fn run(&mut self, input: &StageInput<'_>, sink: &mut MaskSink, sec: &mut StageSeconds) -> Result<()> {
        sam_every_frame(input.model, input.video, input.prompts, sink, input.opts, sec)
    }
}

/// Whether the outputs need the frames themselves (overlays).
pub fn keeps_frames(opts: &SegmentOptions) -> bool {
    opts.formats.overlay_png || opts.formats.overlay_mp4.is_some()
}

/// SAM over every frame: frames are decoded on a second thread while SAM encodes them in
/// batches and decodes each batch once per prompt; masks go to `sink`.
fn sam_every_frame(
    model: &VideoLisa,
    video: &Video,
    sparse_prompts: &[Tensor],
    sink: &mut MaskSink,
    opts: &SegmentOptions,
    sec: &mut StageSeconds,
) -> Result<()> {
    let batch = sam_batch(model, opts);
    let keep_frames = keeps_frames(opts);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<SamFrame>>(2 * batch);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || read_sam_frames(model, video, keep_frames, tx));
        let encoded = encode_batches(model, video, sparse_prompts, sink, batch, &rx, sec);
        drop(rx);
        let (decode, preprocess) = reader.join().expect("the frame reader does not panic");
        sec.decode += decode;
        sec.preprocess += preprocess;
        encoded
    })
}

/// SAM's decoding of encoded frames `emb` with one prompt: f32 logits `[B, H, W]` at the frame
/// size, on the model's device (masks are `logit > 0`).
pub(crate) fn sam_frame_logits(
    model: &VideoLisa,
    emb: &Tensor,
    prompt: &Tensor,
    info: &VideoInfo,
) -> Result<Tensor> {
    let sam = &model.visual_model;
    let (rw, rh) = model.sam_transform.resized_size(info.width, info.height);
    let d = sam.decode_embeddings(emb, prompt, false)?;
    let original = (info.height as usize, info.width as usize);
    let m = sam.postprocess_masks(&d.low_res_masks, (rh as usize, rw as usize), original)?;
    Ok(m.squeeze(1)?.to_dtype(DType::F32)?)
}

/// The 0/1 masks (`logit > 0`, row-major) of logits `[B, H, W]`, one per frame: thresholded
/// where the logits are, so a GPU hands over one byte per pixel.
pub(crate) fn binary_masks(logits: &Tensor) -> Result<Vec<Vec<u8>>> {
    let (_, h, w) = logits.dims3()?;
    let flat: Vec<u8> = logits
        .gt(0f32)?
        .flatten_all()?
        .to_device(&candle_core::Device::Cpu)?
        .to_vec1()?;
    Ok(flat.chunks(h * w).map(<[u8]>::to_vec).collect())
}

/// Frames per SAM image-encoder batch: the user's, else what the device's free memory allows.
pub(crate) fn sam_batch(model: &VideoLisa, opts: &SegmentOptions) -> usize {
    opts.sam_batch
        .unwrap_or_else(|| {
            model
                .visual_model
                .auto_batch(&model.options.device, model.options.sam)
        })
        .max(1)
}

/// The consumer side of [`sam_every_frame`].
fn encode_batches(
    model: &VideoLisa,
    video: &Video,
    sparse_prompts: &[Tensor],
    sink: &mut MaskSink,
    batch: usize,
    rx: &std::sync::mpsc::Receiver<Result<SamFrame>>,
    sec: &mut StageSeconds,
) -> Result<()> {
    let sam = &model.visual_model;
    let dev = model.options.device.clone();
    let info = video.info();
    let bar = crate::progress::bar(info.frames as u64, "SAM");
    let mut pixels: Vec<Tensor> = Vec::new();
    let mut frames: Vec<(usize, Option<RgbImage>)> = Vec::new();
    let mut flush = |pixels: &mut Vec<Tensor>,
                     frames: &mut Vec<(usize, Option<RgbImage>)>,
                     sec: &mut StageSeconds|
     -> Result<()> {
        if pixels.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        let emb = sam.encode(&Tensor::stack(pixels, 0)?)?;
        dev.synchronize()?;
        sec.sam_encode += t.elapsed().as_secs_f64();
        for (k, sp) in sparse_prompts.iter().enumerate() {
            let t = Instant::now();
            let m = sam_frame_logits(model, &emb, sp, info)?;
            dev.synchronize()?;
            sec.sam_decode += t.elapsed().as_secs_f64();
            let t = Instant::now();
            sink.push(k, m, frames)?;
            sec.write += t.elapsed().as_secs_f64();
        }
        bar.inc(pixels.len() as u64);
        pixels.clear();
        frames.clear();
        Ok(())
    };
    for item in rx {
        let (index, resized, frame) = item?;
        pixels.push(model.sam_transform.to_tensor(&resized, &dev)?);
        frames.push((index, frame));
        if pixels.len() == batch {
            flush(&mut pixels, &mut frames, sec)?;
        }
    }
    flush(&mut pixels, &mut frames, sec)?;
    bar.finish_and_clear();
    Ok(())
}

/// Segments `video` for each of `prompts`; writes outputs under `out` when given.
pub fn segment(
    model: &VideoLisa,
    video: &Video,
    prompts: &[PromptSpec],
    out: Option<&Path>,
    opts: &SegmentOptions,
) -> Result<Segmented> {
    segment_prepared(model, video, None, prompts, out, opts)
}

/// [`segment`] with the sparse frames' CLIP inputs already read (by [`SparseInputs::read`],
/// e.g. on another thread while the previous video was on the model).
pub fn segment_prepared(
    model: &VideoLisa,
    video: &Video,
    sparse: Option<SparseInputs>,
    prompts: &[PromptSpec],
    out: Option<&Path>,
    opts: &SegmentOptions,
) -> Result<Segmented> {
    let t0 = Instant::now();
    // the SAM batch is chosen once, before any model work, and reported as used
    let opts = &SegmentOptions {
        sam_batch: Some(sam_batch(model, opts)),
        ..opts.clone()
    };
    let mut sec = StageSeconds::default();
    let info = video.info().clone();
    let sampling = Sampling::new(info.frames, opts.n_sparse, opts.n_dense)?;
    let prepared = prepare_prompts(model, prompts, &sampling)?;
    let sparse = match sparse {
        Some(s) if s.sampling == sampling => s,
        _ => SparseInputs::read(&model.clip_transform, video, opts.n_sparse, opts.n_dense)?,
    };
    sec.decode += sparse.decode;
    sec.preprocess += sparse.preprocess;
    let visual_tokens = encode_sparse_frames(model, &sparse, &mut sec)?;
    drop(sparse);

    let t = Instant::now();
    let embeddings = prepared
        .iter()
        .map(|p| model.prompt_embedding(&p.ids, &visual_tokens))
        .collect::<Result<Vec<_>>>()?;
    model.options.device.synchronize()?;
    sec.llm = t.elapsed().as_secs_f64();

    let sparse_prompts: Vec<Tensor> = embeddings
        .iter()
        .map(|e| e.embedding.unsqueeze(1))
        .collect::<candle_core::Result<_>>()?;
    let mut sink = MaskSink::new(out, prompts, &info, opts)?;
    let mut stage: Box<dyn MaskStage> = match &opts.propagate {
        None => Box::new(SamEveryFrame),
        Some(xmem) => Box::new(crate::propagate::XMemPropagation::new(xmem.clone(), prompts)),
    };
    let input = StageInput {
        model,
        video,
        sampling: &sampling,
        prompts: &sparse_prompts,
        opts,
    };
    stage.run(&input, &mut sink, &mut sec)?;
    let t = Instant::now();
    let (warnings, foreground, logits) = sink.finish()?;
    let propagation = stage.summary();
    sec.write += t.elapsed().as_secs_f64();

    let plane_total = (u64::from(info.width) * u64::from(info.height) * info.frames as u64).max(1) as f64;
    let summaries = prompts
        .iter()
        .zip(&prepared)
        .zip(&embeddings)
        .zip(&foreground)
        .map(|(((spec, p), e), fg)| PromptSummary {
            text: spec.text.clone(),
            template: spec.template,
            instruction: p.instruction.clone(),
            dir: spec.dir.clone(),
            tokens: p.ids.len(),
            seq_len: e.seq_len,
            seg_row: e.seg_row,
            foreground: *fg as f64 / plane_total,
        })
        .collect();
    let o = &model.options;
    let summary = SegmentSummary {
        frames: info.frames,
        sparse: sampling.sparse.clone(),
        dense: sampling.dense.clone(),
        device: if o.device.is_cpu() { "cpu" } else { "cuda" }.into(),
        dtypes: BTreeMap::from([
            ("clip".to_string(), dtype_name(o.clip)),
            ("llm".to_string(), dtype_name(o.llm)),
            ("sam".to_string(), dtype_name(o.sam)),
        ]),
        sam_batch: sam_batch(model, opts),
        sliding_window: model.config.phi3.sliding_window,
        max_position_embeddings: model.config.phi3.max_position_embeddings,
        seg_token_id: model.seg_token_id,
        prompts: summaries,
        warnings,
        video: info,
        propagation,
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
        write_summary(o, &result.summary)?;
    }
    if !opts.keep_logits {
        result.logits = None;
    }
    Ok(result)
}

fn write_summary(out: &Path, summary: &SegmentSummary) -> Result<()> {
    let json = serde_json::to_vec_pretty(summary).map_err(|e| Error::Runtime(format!("JSON: {e}")))?;
    let path = out.join("summary.json");
    write_atomic(&path, |f| {
        std::io::Write::write_all(f, &json).map_err(|e| Error::io(&path, e))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_preprocessed_in_parallel_keep_their_order_and_values() {
        let t = SamTransform {
            target: 64,
            ..SamTransform::default()
        };
        let frames = |n: usize| -> Vec<Frame> {
            (0..n)
                .map(|i| Frame {
                    index: 10 + i,
                    image: RgbImage::from_fn(40 + i as u32, 30, |x, y| {
                        image::Rgb([(x * 7 + i as u32 * 31) as u8, (y * 5) as u8, (x ^ y) as u8])
                    }),
                })
                .collect()
        };
        let together = sam_inputs(&t, frames(9), true);
        let alone: Vec<SamFrame> = frames(9)
            .into_iter()
            .flat_map(|f| sam_inputs(&t, vec![f], false))
            .collect();
        assert_eq!(together.len(), 9);
        for (a, b) in together.iter().zip(&alone) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1, b.1, "frame {}", a.0);
            assert_eq!(a.2.as_ref().map(|i| i.width()), Some(40 + (a.0 - 10) as u32));
            assert!(b.2.is_none());
        }
    }
}
