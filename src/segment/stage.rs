//! The seam after the LLM: a mask stage turns each prompt's SAM prompt embedding into a mask
//! per frame (SAM on every frame, or XMem++ propagating SAM's dense-frame masks), pushing them
//! into a [`MaskSink`] in frame order. What a stage works from and what it reports are here;
//! the stages themselves are in [`super::sam`] and [`super::xmem`].

use super::sink::MaskSink;
use crate::error::Result;
use crate::model::videolisa::VideoLisa;
use crate::sampling::Sampling;
use crate::video::FrameSource;
use candle_core::Tensor;
use image::RgbImage;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

/// Seconds spent per stage.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
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

/// What the XMem++ stage reports.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PropagationSummary {
    /// The frames whose SAM masks seeded XMem++'s permanent memory (the dense frames).
    pub seed_frames: Vec<usize>,
    /// Per prompt: seed frames whose SAM mask was empty.
    pub empty_seeds: Vec<Vec<usize>>,
    /// Per prompt: working-memory consolidations into long-term memory.
    pub consolidations: Vec<usize>,
    /// Prompts the stage could not propagate (no non-empty seed mask): their masks are empty.
    pub notes: Vec<String>,
    /// Per prompt: frames whose mask the user gave (`--annotate`), in permanent memory with
    /// the seeds (replacing SAM's mask on a seed frame).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotated: Vec<Vec<usize>>,
}

/// SAM's masks of the seed frames: the frames, and per prompt frame → 0/255 mask.
pub type SamSeeds = (
    Vec<usize>,
    Vec<std::collections::BTreeMap<usize, image::GrayImage>>,
);

/// What a mask stage works from: the model, the video, its sampling, and each prompt's SAM
/// prompt embedding `[1, 1, D]` from the LLM.
pub struct StageInput<'a> {
    /// The loaded model (SAM is `model.visual_model`).
    pub model: &'a VideoLisa,
    /// The video (a file, or a live stream whose frames arrive while earlier ones are segmented).
    pub video: &'a dyn FrameSource,
    /// Its sparse and dense frames.
    pub sampling: &'a Sampling,
    /// Per prompt, SAM's sparse prompt embedding.
    pub prompts: &'a [Tensor],
    /// Frames per SAM image-encoder batch (chosen once per run).
    pub sam_batch: usize,
    /// Whether the sink needs the frames themselves (overlays).
    pub keep_frames: bool,
    /// Where stage intermediates go (`--dump`).
    pub dump: Option<&'a Path>,
    /// A live run's prompt refresh (`--refresh`): shown every frame before it is segmented.
    pub refresh: Option<&'a RefCell<dyn PromptRefresh + 'a>>,
}

/// New prompts computed mid-stream from the latest frames (`--online --refresh K`).
pub struct Refreshed {
    /// Per prompt, SAM's new sparse prompt embedding `[1, 1, D]`.
    pub prompts: Vec<Tensor>,
    /// The new dense frames (index → picture): XMem++ adds their masks to permanent memory.
    pub dense: BTreeMap<usize, RgbImage>,
}

/// Recomputes the prompts every so many frames of a live stream.
pub trait PromptRefresh {
    /// Frame `index` arrived and is about to be segmented; new prompts (for it and the frames
    /// after it) when it completes a refresh period.
    fn arrived(&mut self, index: usize, frame: &RgbImage) -> Result<Option<Refreshed>>;
}

/// A progress bar over the frames of `video` (a running count for a live stream).
pub fn frames_bar(video: &dyn FrameSource, what: &str) -> indicatif::ProgressBar {
    let len = (!video.is_live()).then_some(video.info().frames as u64);
    crate::progress::bar_or_count(len, what)
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
    /// SAM's masks of the seed frames per prompt, when the stage made them (for the prompt
    /// stage's cache).
    fn sam_seeds(&mut self) -> Option<SamSeeds> {
        None
    }
}
