//! `segment`: one video and one or more sentences in, a mask per frame per sentence out.
//! Every prompt is tokenized and checked against the model's context before any frame is
//! decoded; then CLIP and the LLM see the sampled frames, and a mask stage (SAM on every frame,
//! or XMem++ propagating SAM's dense-frame masks) segments every frame into the sink.
//!
//! The parts: [`prompt`] (what is asked), [`stage`] (the mask-stage interface), [`sam`] and
//! [`xmem`] (the two stages), [`sink`] (where masks go), [`summary`] and [`dump`] (what is
//! reported), [`cache`] and [`rerun`] (a `--propagate` run's prompt stage kept for
//! corrections); this module only chains them.

pub mod annotation;
pub mod cache;
pub mod dump;
pub mod encode;
pub mod prompt;
pub mod refresh;
pub mod rerun;
pub mod sam;
pub mod sink;
pub mod stage;
pub mod summary;
pub mod xmem;

pub use encode::SparseInputs;
pub use prompt::{prompt_dir, PromptSpec};
pub use stage::{MaskStage, PropagationSummary, StageInput, StageSeconds};
pub use summary::{PromptSummary, SegmentSummary};

use crate::error::Result;
use crate::model::videolisa::{PromptEmbedding, VideoLisa};
use crate::model::xmem::XMem;
use crate::output::OutputFormats;
use crate::sampling::Sampling;
use crate::video::{FrameSource, Video};
use candle_core::Tensor;
use encode::{encode_sparse_frames, prompt_embeddings};
use image::GrayImage;
use prompt::prepare_prompts;
use refresh::Refresher;
use sink::{MaskSink, SharedObserver, SinkTotals};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use summary::StageReport;

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
    /// Told about each frame as soon as its masks are written (live outputs).
    pub observer: Option<SharedObserver>,
    /// A live stream's prompts are recomputed every this many frames from the last window's
    /// frames (`--refresh`; the window is the source's known frames).
    pub refresh: Option<usize>,
    /// With `propagate`: the user's masks per prompt (frame → 0/255 mask), added to the seeds
    /// in XMem++'s permanent memory (`--annotate`).
    pub annotations: Vec<BTreeMap<usize, GrayImage>>,
    /// With `propagate` and an output folder: keep the prompt stage's results there under
    /// this key ([`cache::PromptStageCache`]), so a rerun with other corrections reuses them,
    /// and say in the summary why they were computed (the note).
    pub prompt_stage_key: Option<(String, String)>,
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
            observer: None,
            refresh: None,
            annotations: Vec::new(),
            prompt_stage_key: None,
        }
    }
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
/// e.g. on another thread while the previous video was on the model), over any frame source: a
/// live stream's prompt stage samples the frames it knows (its window), and its mask stage
/// goes on as later frames arrive.
pub fn segment_prepared(
    model: &VideoLisa,
    video: &dyn FrameSource,
    sparse: Option<SparseInputs>,
    prompts: &[PromptSpec],
    out: Option<&Path>,
    opts: &SegmentOptions,
) -> Result<Segmented> {
    let t0 = Instant::now();
    // the SAM batch is chosen once, before any model work, and reported as used
    let sam_batch = sam::choose_batch(model, opts.sam_batch);
    let mut sec = StageSeconds::default();
    let sampling = Sampling::new(video.info().frames, opts.n_sparse, opts.n_dense)?;
    let prepared = prepare_prompts(model, prompts, &sampling)?;
    let sparse = match sparse {
        Some(s) if s.sampling == sampling => s,
        _ => SparseInputs::read(&model.clip_transform, video, opts.n_sparse, opts.n_dense)?,
    };
    let visual_tokens = encode_sparse_frames(model, sparse, &mut sec)?;
    let embeddings = prompt_embeddings(model, &prepared, &visual_tokens, &mut sec)?;
    let sparse_prompts: Vec<Tensor> = embeddings
        .iter()
        .map(|e| e.embedding.unsqueeze(1))
        .collect::<candle_core::Result<_>>()?;
    let refresher = match (opts.refresh, video.is_live()) {
        (Some(every), true) => {
            let window = video.info().frames;
            Some(RefCell::new(Refresher::new(
                model, &prepared, &sampling, window, every,
            )))
        }
        _ => None,
    };
    let input = StageInput {
        model,
        video,
        sampling: &sampling,
        prompts: &sparse_prompts,
        sam_batch,
        keep_frames: opts.formats.needs_frames() || observer_needs_frames(opts)? || refresher.is_some(),
        dump: opts.dump.as_deref(),
        refresh: refresher
            .as_ref()
            .map(|r| r as &RefCell<dyn stage::PromptRefresh>),
    };
    let (totals, propagation, sam_seeds) = run_mask_stage(&input, prompts, out, opts, &mut sec)?;
    let refreshes = refresher
        .map(|r| r.into_inner().finish(&mut sec))
        .unwrap_or_default();
    let mut info = video.info().clone();
    info.frames = totals.frames;
    let plane_total = (u64::from(info.width) * u64::from(info.height) * info.frames as u64).max(1) as f64;
    let summaries = prompts
        .iter()
        .zip(&prepared)
        .zip(&embeddings)
        .zip(&totals.foreground)
        .map(|(((spec, p), e), fg)| PromptSummary::new(spec, p, e, *fg as f64 / plane_total))
        .collect();
    let report = StageReport {
        warnings: totals.warnings,
        propagation,
        refreshes,
        seconds: sec,
    };
    let mut result = Segmented {
        summary: SegmentSummary::new(model, info, &sampling, sam_batch, summaries, report),
        visual_tokens,
        prompts: embeddings,
        logits: totals.logits,
    };
    if let (Some((key, note)), Some(dir), Some((at, seeds))) = (&opts.prompt_stage_key, out, sam_seeds) {
        result.summary.prompt_stage = Some(note.clone());
        let mut summary = result.summary.clone();
        summary.seconds.total = t0.elapsed().as_secs_f64();
        let cache = cache::PromptStageCache {
            key: key.clone(),
            seed_frames: at,
            embeddings: sparse_prompts,
            seeds,
            summary,
        };
        cache.write(dir)?;
    }
    finish(result, &sampling, out, opts, t0)
}

/// Whether the options' frame observer needs the frames themselves.
fn observer_needs_frames(opts: &SegmentOptions) -> Result<bool> {
    match &opts.observer {
        None => Ok(false),
        Some(o) => Ok(o
            .lock()
            .map_err(|_| crate::error::Error::Internal("a frame observer panicked".into()))?
            .needs_frames()),
    }
}

/// The stage the options ask for: XMem++ propagation with `--propagate`, else SAM on every
/// frame.
fn mask_stage(opts: &SegmentOptions, prompts: &[PromptSpec]) -> Box<dyn MaskStage> {
    match &opts.propagate {
        None => Box::new(sam::SamEveryFrame),
        Some(x) => {
            let texts = prompts.iter().map(|p| p.text.clone()).collect();
            Box::new(xmem::XMemPropagation::new(
                x.clone(),
                texts,
                opts.annotations.clone(),
            ))
        }
    }
}

/// Runs the mask stage into a sink for `prompts`' folders under `out`; returns the sink's
/// totals, what the stage reports and SAM's seed masks when it made them.
fn run_mask_stage(
    input: &StageInput<'_>,
    prompts: &[PromptSpec],
    out: Option<&Path>,
    opts: &SegmentOptions,
    sec: &mut StageSeconds,
) -> Result<(SinkTotals, Option<PropagationSummary>, Option<stage::SamSeeds>)> {
    let dirs: Vec<&str> = prompts.iter().map(|p| p.dir.as_str()).collect();
    let keep_logits = opts.keep_logits || opts.dump.is_some();
    let mut sink = MaskSink::new(out, &dirs, input.video.info(), &opts.formats, keep_logits)?;
    if let Some(o) = &opts.observer {
        sink.observe(o.clone())?;
    }
    let mut stage = mask_stage(opts, prompts);
    stage.run(input, &mut sink, sec)?;
    let t = Instant::now();
    let totals = sink.finish()?;
    sec.write += t.elapsed().as_secs_f64();
    Ok((totals, stage.summary(), stage.sam_seeds()))
}

/// Writes the dump and `summary.json` (when asked), and drops logits kept only for the dump.
fn finish(
    mut result: Segmented,
    sampling: &Sampling,
    out: Option<&Path>,
    opts: &SegmentOptions,
    t0: Instant,
) -> Result<Segmented> {
    if let Some(d) = &opts.dump {
        let logits = result.logits.as_deref();
        dump::write_dump(d, sampling, &result.visual_tokens, &result.prompts, logits)?;
    }
    result.summary.seconds.total = t0.elapsed().as_secs_f64();
    if let (Some(o), true) = (out, opts.write_summary) {
        crate::json::write_json(&o.join("summary.json"), &result.summary)?;
    }
    if !opts.keep_logits {
        result.logits = None;
    }
    Ok(result)
}
