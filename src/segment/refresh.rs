//! `--refresh K` of a live run: every K frames after the window, the prompts are recomputed
//! from the last window's worth of frames, sampled exactly as the first window was (an N-frame
//! video's sparse and dense frames), through CLIP and the LLM again. The new prompts segment
//! the frame that completed the period and every later one (SAM); with `--propagate` SAM's
//! masks of the new dense frames join XMem++'s permanent memory beside the earlier seeds.

use super::encode::{encode_sparse_frames, prompt_embeddings, SparseInputs};
use super::prompt::PreparedPrompt;
use super::stage::{PromptRefresh, Refreshed, StageSeconds};
use crate::error::Result;
use crate::model::videolisa::VideoLisa;
use crate::sampling::Sampling;
use image::RgbImage;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

/// Recomputes the prompts of a live run every `every` frames.
pub struct Refresher<'a> {
    model: &'a VideoLisa,
    prompts: &'a [PreparedPrompt],
    sampling: Sampling,
    window: usize,
    every: usize,
    recent: VecDeque<(usize, RgbImage)>,
    seen: usize,
    at: Vec<usize>,
    seconds: StageSeconds,
}

impl<'a> Refresher<'a> {
    /// A refresher for `prompts`, whose first `window` frames were sampled as `sampling`.
    pub fn new(
        model: &'a VideoLisa,
        prompts: &'a [PreparedPrompt],
        sampling: &Sampling,
        window: usize,
        every: usize,
    ) -> Self {
        Refresher {
            model,
            prompts,
            sampling: sampling.clone(),
            window,
            every: every.max(1),
            recent: VecDeque::with_capacity(window + 1),
            seen: 0,
            at: Vec::new(),
            seconds: StageSeconds::default(),
        }
    }

    /// The frames at which prompts were recomputed; adds the CLIP and LLM time to `sec`.
    pub fn finish(self, sec: &mut StageSeconds) -> Vec<usize> {
        sec.decode += self.seconds.decode;
        sec.preprocess += self.seconds.preprocess;
        sec.clip += self.seconds.clip;
        sec.llm += self.seconds.llm;
        self.at
    }

    /// CLIP and the LLM on the last window's frames.
    fn recompute(&mut self) -> Result<Refreshed> {
        let s = &self.sampling;
        let t = Instant::now();
        let frames: HashMap<usize, _> = s
            .sparse
            .iter()
            .map(|&p| (p, self.model.clip_transform.apply(&self.recent[p].1)))
            .collect();
        let inputs = SparseInputs {
            sampling: s.clone(),
            frames,
            decode: 0.0,
            preprocess: t.elapsed().as_secs_f64(),
        };
        let mut sec = StageSeconds::default();
        let tokens = encode_sparse_frames(self.model, inputs, &mut sec)?;
        let embeddings = prompt_embeddings(self.model, self.prompts, &tokens, &mut sec)?;
        self.seconds.preprocess += sec.preprocess;
        self.seconds.clip += sec.clip;
        self.seconds.llm += sec.llm;
        let prompts = embeddings
            .iter()
            .map(|e| e.embedding.unsqueeze(1))
            .collect::<candle_core::Result<_>>()?;
        let dense: BTreeMap<usize, RgbImage> = s
            .dense
            .iter()
            .map(|&d| self.recent[s.sparse[d]].clone())
            .collect();
        Ok(Refreshed { prompts, dense })
    }
}

impl PromptRefresh for Refresher<'_> {
    fn arrived(&mut self, index: usize, frame: &RgbImage) -> Result<Option<Refreshed>> {
        let window = self.window;
        self.recent.push_back((index, frame.clone()));
        if self.recent.len() > window {
            self.recent.pop_front();
        }
        self.seen += 1;
        if self.seen <= window || !(self.seen - window).is_multiple_of(self.every) {
            return Ok(None);
        }
        self.at.push(index);
        self.recompute().map(Some)
    }
}
