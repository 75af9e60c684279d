//! What `segment` reports (and writes as `summary.json`): the video, its sampling, the model's
//! facts that decided the masks, each prompt's tokens and foreground, what the mask stage did,
//! and the seconds per stage.

use super::prompt::{PreparedPrompt, PromptSpec};
use super::stage::{PropagationSummary, StageSeconds};
use crate::model::videolisa::{PromptEmbedding, VideoLisa};
use crate::sampling::Sampling;
use crate::tokenizer::Template;
use crate::video::VideoInfo;
use candle_core::DType;
use std::collections::BTreeMap;

/// The summary of one prompt.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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

impl PromptSummary {
    /// The summary of `spec`, prepared as `prepared`, answered by `e`, with `foreground` of
    /// the video's pixels in its masks.
    pub fn new(spec: &PromptSpec, prepared: &PreparedPrompt, e: &PromptEmbedding, foreground: f64) -> Self {
        PromptSummary {
            text: spec.text.clone(),
            template: spec.template,
            instruction: prepared.instruction.clone(),
            dir: spec.dir.clone(),
            tokens: prepared.ids.len(),
            seq_len: e.seq_len,
            seg_row: e.seg_row,
            foreground,
        }
    }
}

/// What `segment` reports (also written as `summary.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<PropagationSummary>,
    /// Frames at which a live run recomputed its prompts (`--refresh`), each segmented with
    /// the new prompts from then on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refreshes: Vec<usize>,
    /// How a live run went (`--online` runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<OnlineSummary>,
    /// Whether CLIP, the LLM and SAM ran, or an earlier run's results were reused, and why
    /// (`--propagate` runs into a folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_stage: Option<String>,
    /// Seconds per stage.
    pub seconds: StageSeconds,
}

/// What the mask stage and the sink left to report.
pub struct StageReport {
    /// Outputs that could not be written.
    pub warnings: Vec<String>,
    /// What XMem++ did, when it ran.
    pub propagation: Option<PropagationSummary>,
    /// Frames at which a live run recomputed its prompts.
    pub refreshes: Vec<usize>,
    /// Seconds per stage so far.
    pub seconds: StageSeconds,
}

impl SegmentSummary {
    /// The summary of a run of `model` over `video` sampled as `sampling`.
    pub fn new(
        model: &VideoLisa,
        video: VideoInfo,
        sampling: &Sampling,
        sam_batch: usize,
        prompts: Vec<PromptSummary>,
        report: StageReport,
    ) -> Self {
        let o = &model.options;
        let name = |d: DType| format!("{d:?}").to_lowercase();
        SegmentSummary {
            frames: video.frames,
            sparse: sampling.sparse.clone(),
            dense: sampling.dense.clone(),
            device: crate::device::kind_name(&o.device).into(),
            dtypes: BTreeMap::from([
                ("clip".to_string(), name(o.clip)),
                ("llm".to_string(), name(o.llm)),
                ("sam".to_string(), name(o.sam)),
            ]),
            sam_batch,
            sliding_window: model.config.phi3.sliding_window(),
            max_position_embeddings: model.config.phi3.max_position_embeddings,
            seg_token_id: model.seg_token_id,
            prompts,
            warnings: report.warnings,
            video,
            propagation: report.propagation,
            online: None,
            prompt_stage: None,
            refreshes: report.refreshes,
            seconds: report.seconds,
        }
    }
}

/// How a live (`--online`) run went.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct OnlineSummary {
    /// `complete` (the input ended), `interrupted` (Ctrl-C) or `input_error`.
    pub status: String,
    /// The input error, naming the frame and byte offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Frames the prompt stage sampled (the first `--window` frames, fewer if the input ended).
    pub window: usize,
    /// Frames read from the input.
    pub received: usize,
    /// Frames whose masks were written.
    pub segmented: usize,
    /// Frames skipped because the queue was full (`--drop`).
    pub dropped: Vec<usize>,
    /// Frames read but neither segmented nor dropped (the run was interrupted).
    pub unprocessed: usize,
    /// Seconds from the start of reading to the first written mask.
    pub first_mask_s: Option<f64>,
    /// Arrival → written, every frame (milliseconds).
    pub latency_ms: Option<Latency>,
    /// Arrival → written, frames after the window (the steady state).
    pub latency_after_window_ms: Option<Latency>,
    /// Frames written per second from the first to the last.
    pub frames_per_second: Option<f64>,
}

/// A latency distribution in milliseconds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    /// The distribution of `seconds` (nearest-rank percentiles); `None` when empty.
    pub fn of(seconds: &[f64]) -> Option<Latency> {
        if seconds.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = seconds.iter().map(|s| s * 1000.0).collect();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Latency {
            p50: rank(0.5),
            p95: rank(0.95),
            max: v[v.len() - 1],
        })
    }
}
