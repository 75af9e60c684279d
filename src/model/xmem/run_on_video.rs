//! XMem2's `run_on_video` for one or more runs that share a video: each run holds the objects of
//! its given index masks in one memory (XMem2's multi-object mode: one key per frame, one value
//! per object, soft aggregation across objects), and a frame's key encoding is computed once for
//! all runs. VideoLISA's prompts are separate single-object runs (the official scripts run each
//! expression separately); `propagate` is one run with every object.

use super::inference_core::{python_set_copy_order, python_set_order, InferenceCore, StepOutput};
use super::memory::MemoryConfig;
use super::video_reader::{frame_tensor, mask_planes, post_process};
use super::{FrameKey, XMem};
use crate::error::{Error, Result};
use image::{GrayImage, RgbImage};
use std::collections::BTreeMap;

/// One run: its state, the labels of its objects, and its given index masks.
struct ObjectRun {
    core: InferenceCore,
    labels: Vec<u8>,
    given: BTreeMap<usize, GrayImage>,
}

/// What one frame produced.
pub struct FrameResult {
    /// Per run: the most probable channel per pixel at the frame's size (0 = background,
    /// `o + 1` = the run's object `o`, whose label is `labels(run)[o]`).
    pub masks: Vec<Vec<u8>>,
    /// Per run: the gap between the two most probable channels per pixel (small = a near tie).
    pub gaps: Vec<Vec<f32>>,
    /// The frame's key encoding.
    pub key: FrameKey,
    /// Per run: the step's intermediates.
    pub steps: Vec<StepOutput>,
}

/// Propagation of given masks through a video, frame by frame.
pub struct RunOnVideo<'a> {
    net: &'a XMem,
    runs: Vec<ObjectRun>,
}

/// Error text of a run whose given masks are all empty (XMem2's `ValueError`).
pub const NO_VALID_MASKS: &str = "No valid masks provided!";

/// The labels of `mask` that are not in `known`, in the order XMem2's `MaskMapper` numbers them:
/// CPython's iteration order of `set(labels) - set(known)` (0 excluded), which copies the set
/// and discards `known` when the set has more than four times as many labels, and otherwise
/// adds the labels not in `known` to a new set one by one.
pub fn new_labels(mask: &GrayImage, known: &[u8]) -> Vec<u8> {
    let mut present = [false; 256];
    for &v in mask.as_raw() {
        present[v as usize] = true;
    }
    let unique: Vec<usize> = (1..256).filter(|&v| present[v]).collect();
    let set = python_set_order(&unique);
    let is_new = |v: &usize| !known.contains(&(*v as u8));
    let order = if set.len() >> 2 > known.len() {
        python_set_copy_order(&set).into_iter().filter(is_new).collect()
    } else {
        python_set_order(&set.into_iter().filter(is_new).collect::<Vec<_>>())
    };
    order.into_iter().map(|v| v as u8).collect()
}

impl<'a> RunOnVideo<'a> {
    /// Preloads each run's given index masks (`given[r]`: frame index → mask, value = object
    /// label, 0 = background) into its permanent memory, in the order XMem2 does (a Python
    /// `set` of the frame indices); `frames` holds the given frames. A mask is skipped while no
    /// label has been seen; a run with no label in any mask is an error naming it.
    pub fn new(
        net: &'a XMem,
        config: MemoryConfig,
        given: &[BTreeMap<usize, GrayImage>],
        frames: &BTreeMap<usize, RgbImage>,
    ) -> Result<Self> {
        let mut keys: BTreeMap<usize, FrameKey> = BTreeMap::new();
        let mut runs = Vec::with_capacity(given.len());
        for (k, masks) in given.iter().enumerate() {
            let mut run = ObjectRun {
                core: InferenceCore::new(net, config),
                labels: Vec::new(),
                given: masks.clone(),
            };
            preload(net, &mut run, masks, frames, &mut keys)?;
            if run.labels.is_empty() {
                return Err(Error::Usage(format!(
                    "XMem++ run {k}: every given mask is empty ({NO_VALID_MASKS})"
                )));
            }
            runs.push(run);
        }
        Ok(RunOnVideo { net, runs })
    }

    /// Adds masks of frames already stepped past (`given[r]` for run `r`, holding only labels
    /// the run has, so an empty mask is kept as an all-background example) to permanent
    /// memory, in XMem2's preload order; they change later frames only.
    pub fn add_permanent(
        &mut self,
        given: &[BTreeMap<usize, GrayImage>],
        frames: &BTreeMap<usize, RgbImage>,
    ) -> Result<()> {
        let mut keys = BTreeMap::new();
        for (run, masks) in self.runs.iter_mut().zip(given) {
            preload(self.net, run, masks, frames, &mut keys)?;
        }
        Ok(())
    }

    /// Steps every run through frame `index` (frames must come in order, all of them); `last`
    /// marks the video's last frame.
    pub fn step(&mut self, index: usize, img: &RgbImage, last: bool) -> Result<FrameResult> {
        let dev = &self.net.device;
        let (tensor, pad) = frame_tensor(img, dev)?;
        let key = self.net.encode_key(&tensor)?;
        let (h, w) = (img.height() as usize, img.width() as usize);
        let mut out = FrameResult {
            masks: Vec::new(),
            gaps: Vec::new(),
            key,
            steps: Vec::new(),
        };
        for run in &mut self.runs {
            let given = match run.given.get(&index) {
                Some(m) => Some(mask_planes(m, &run.labels, dev)?),
                None => None,
            };
            let s = run.core.step(self.net, &out.key, given.as_ref(), last)?;
            let (mask, gap) = post_process(&s.prob, pad, h, w)?;
            out.masks.push(mask);
            out.gaps.push(gap);
            out.steps.push(s);
        }
        Ok(out)
    }

    /// Run `r`'s object labels: object `o` (channel `o + 1`) is label `labels(r)[o]`.
    pub fn labels(&self, r: usize) -> &[u8] {
        &self.runs[r].labels
    }

    /// The run states (memory sizes, consolidations, hidden states) for dumps and tests.
    pub fn cores(&self) -> impl Iterator<Item = &InferenceCore> {
        self.runs.iter().map(|o| &o.core)
    }
}

/// Writes `masks` (frame index → index mask) into the run's permanent memory in the order XMem2
/// preloads them (a Python `set` of the frame indices): each mask's new labels become new
/// objects, and a mask is skipped while the run has no label yet; keys are computed once per
/// frame across runs (`keys`).
fn preload(
    net: &XMem,
    run: &mut ObjectRun,
    masks: &BTreeMap<usize, GrayImage>,
    frames: &BTreeMap<usize, RgbImage>,
    keys: &mut BTreeMap<usize, FrameKey>,
) -> Result<()> {
    let order: Vec<usize> = python_set_order(&masks.keys().copied().collect::<Vec<_>>());
    for t in order {
        let mask = &masks[&t];
        let fresh = new_labels(mask, &run.labels);
        run.labels.extend(fresh);
        if run.labels.is_empty() {
            continue;
        }
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
        let planes = mask_planes(mask, &run.labels, &net.device)?;
        run.core.put_to_permanent_memory(net, &fk, &planes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_numbered_as_the_mask_mapper_does() {
        let mask = GrayImage::from_raw(4, 1, vec![0, 9, 2, 2]).unwrap();
        // set([2, 9]) iterates 9 (slot 1) before 2 (slot 2)
        assert_eq!(new_labels(&mask, &[]), vec![9, 2]);
        assert_eq!(new_labels(&mask, &[9]), vec![2]);
        let davis = GrayImage::from_raw(4, 1, vec![3, 1, 0, 2]).unwrap();
        assert_eq!(new_labels(&davis, &[]), vec![1, 2, 3]);
        assert_eq!(new_labels(&davis, &[1, 2, 3]), Vec::<u8>::new());
        // colliding labels, measured with CPython 3.11: set-difference order
        let spread = GrayImage::from_raw(6, 1, vec![0, 1, 9, 17, 25, 33]).unwrap();
        assert_eq!(new_labels(&spread, &[]), vec![1, 33, 17, 9, 25]);
        assert_eq!(new_labels(&spread, &[1]), vec![33, 25, 9, 17]);
        let cases: [(&[u8], &[u8], &[u8]); 5] = [
            (&[146, 206, 217], &[], &[217, 146, 206]),
            (&[3, 6, 7, 8, 139, 167], &[6, 8, 167], &[3, 139, 7]),
            (
                &[1, 59, 69, 115, 152, 179, 185, 196, 197, 206],
                &[],
                &[1, 196, 69, 197, 206, 115, 179, 152, 185, 59],
            ),
            (
                &[8, 57, 60, 89, 113, 127, 136, 142, 174, 195, 196, 241],
                &[8, 113, 136],
                &[195, 196, 127, 174, 142, 241, 89, 60, 57],
            ),
            (
                &[86, 109, 129, 130, 183, 185, 213, 230, 234, 240, 248, 250],
                &[183],
                &[129, 130, 230, 234, 109, 240, 213, 86, 248, 185, 250],
            ),
        ];
        for (labels, known, want) in cases {
            let mask = GrayImage::from_raw(labels.len() as u32, 1, labels.to_vec()).unwrap();
            assert_eq!(new_labels(&mask, known), want, "{labels:?} - {known:?}");
        }
        let binary = GrayImage::from_raw(2, 1, vec![0, 255]).unwrap();
        assert_eq!(new_labels(&binary, &[]), vec![255]);
    }
}
