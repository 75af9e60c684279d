//! XMem2's `run_on_video` for VideoLISA's post-optimization, for several objects at once
//! that never meet: each object has its own memory (as the official scripts run each
//! expression separately), while a frame's key encoding is computed once for all of them.

use super::inference_core::{python_set_order, InferenceCore, StepOutput};
use super::memory::MemoryConfig;
use super::video_reader::{frame_tensor, mask_tensor, post_process};
use super::{FrameKey, XMem};
use crate::error::{Error, Result};
use image::{GrayImage, RgbImage};
use std::collections::BTreeMap;

/// One object's run: its state and its given (padded, working-resolution) masks.
struct ObjectRun {
    core: InferenceCore,
    given: BTreeMap<usize, candle_core::Tensor>,
}

/// What one frame produced.
pub struct FrameResult {
    /// Per object: 0/1 per pixel at the frame's size.
    pub masks: Vec<Vec<u8>>,
    /// Per object: |p(object) − p(background)| per pixel (small = a near tie).
    pub gaps: Vec<Vec<f32>>,
    /// The frame's key encoding.
    pub key: FrameKey,
    /// Per object: the step's intermediates.
    pub steps: Vec<StepOutput>,
}

/// Propagation of given masks through a video, frame by frame.
pub struct RunOnVideo<'a> {
    net: &'a XMem,
    objects: Vec<ObjectRun>,
}

/// Error text of an object whose given masks are all empty (XMem2's `ValueError`).
pub const NO_VALID_MASKS: &str = "No valid masks provided!";

impl<'a> RunOnVideo<'a> {
    /// Preloads each object's given masks (`seeds[k]`: frame index → mask, non-zero = object)
    /// into its permanent memory, in the order XMem2 does (a Python `set` of the frame indices);
    /// `frames` holds the given frames. An empty mask is skipped until the object has been
    /// seen; an object with no non-empty mask is an error naming it.
    pub fn new(
        net: &'a XMem,
        config: MemoryConfig,
        seeds: &[BTreeMap<usize, GrayImage>],
        frames: &BTreeMap<usize, RgbImage>,
    ) -> Result<Self> {
        let mut keys: BTreeMap<usize, FrameKey> = BTreeMap::new();
        let mut objects = Vec::with_capacity(seeds.len());
        for (k, seed) in seeds.iter().enumerate() {
            let mut run = ObjectRun {
                core: InferenceCore::new(net, config),
                given: BTreeMap::new(),
            };
            for (&t, mask) in seed {
                run.given.insert(t, mask_tensor(mask, &net.device)?);
            }
            if !preload(net, &mut run.core, seed, frames, &mut keys, false)? {
                return Err(Error::Usage(format!(
                    "XMem++ object {k}: every given mask is empty ({NO_VALID_MASKS})"
                )));
            }
            objects.push(run);
        }
        Ok(RunOnVideo { net, objects })
    }

    /// Adds masks of frames already stepped past (`seeds[k]` for object `k`, each object seen
    /// before, so an empty mask is kept as an all-background example) to permanent memory, in
    /// XMem2's preload order; they change later frames only.
    pub fn add_permanent(
        &mut self,
        seeds: &[BTreeMap<usize, GrayImage>],
        frames: &BTreeMap<usize, RgbImage>,
    ) -> Result<()> {
        let mut keys = BTreeMap::new();
        for (run, seed) in self.objects.iter_mut().zip(seeds) {
            preload(self.net, &mut run.core, seed, frames, &mut keys, true)?;
        }
        Ok(())
    }

    /// Steps every object through frame `index` (frames must come in order, all of them);
    /// `last` marks the video's last frame.
    pub fn step(&mut self, index: usize, img: &RgbImage, last: bool) -> Result<FrameResult> {
        let (tensor, pad) = frame_tensor(img, &self.net.device)?;
        let key = self.net.encode_key(&tensor)?;
        let (h, w) = (img.height() as usize, img.width() as usize);
        let mut out = FrameResult {
            masks: Vec::new(),
            gaps: Vec::new(),
            key,
            steps: Vec::new(),
        };
        for run in &mut self.objects {
            let given = run.given.get(&index);
            let s = run.core.step(self.net, &out.key, given, last)?;
            let (mask, gap) = post_process(&s.prob, pad, h, w)?;
            out.masks.push(mask);
            out.gaps.push(gap);
            out.steps.push(s);
        }
        Ok(out)
    }

    /// The object states (memory sizes, consolidations, hidden states) for dumps and tests.
    pub fn cores(&self) -> impl Iterator<Item = &InferenceCore> {
        self.objects.iter().map(|o| &o.core)
    }
}

/// Writes `seed`'s masks (frame index → mask) into `core`'s permanent memory in the order XMem2
/// preloads them (a Python `set` of the frame indices), skipping empty masks until the object
/// has been `seen`; keys are computed once per frame across objects (`keys`). Returns whether
/// the object has been seen.
fn preload(
    net: &XMem,
    core: &mut InferenceCore,
    seed: &BTreeMap<usize, GrayImage>,
    frames: &BTreeMap<usize, RgbImage>,
    keys: &mut BTreeMap<usize, FrameKey>,
    mut seen: bool,
) -> Result<bool> {
    let order: Vec<usize> = python_set_order(&seed.keys().copied().collect::<Vec<_>>());
    for t in order {
        let mask = &seed[&t];
        if !seen && !mask.pixels().any(|p| p[0] > 0) {
            continue;
        }
        seen = true;
        let fk = match keys.get(&t) {
            Some(fk) => fk.clone(),
            None => {
                let img = frames.get(&t).ok_or_else(|| {
                    Error::Internal(format!("XMem++: frame {t} has a given mask but was not read"))
                })?;
                let fk = net.encode_key(&frame_tensor(img, &net.device)?.0)?;
                keys.insert(t, fk.clone());
                fk
            }
        };
        core.put_to_permanent_memory(net, &fk, &mask_tensor(mask, &net.device)?)?;
    }
    Ok(seen)
}
