//! VideoLISA's post-optimization as a mask stage (`segment --propagate`): SAM decodes only the
//! dense frames (the frames the LLM saw in full), their masks seed XMem++'s permanent memory,
//! and XMem++ segments every frame in one streaming pass. Each prompt is its own single-object
//! XMem++ run, as the official scripts run each expression separately; a frame's key encoding
//! is shared by all of them.

use super::sam::frame_logits;
use super::sink::{binary_masks, MaskSink};
use super::stage::{MaskStage, PropagationSummary, StageInput, StageSeconds};
use crate::error::Result;
use crate::model::xmem::memory::MemoryConfig;
use crate::model::xmem::run_on_video::{FrameResult, RunOnVideo};
use crate::model::xmem::XMem;
use candle_core::{Device, Tensor};
use image::{GrayImage, RgbImage};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// The XMem++ mask stage.
pub struct XMemPropagation {
    xmem: Arc<XMem>,
    texts: Vec<String>,
    summary: Option<PropagationSummary>,
}

impl XMemPropagation {
    /// A stage for the prompts `texts` (named in its notes) with the loaded network.
    pub fn new(xmem: Arc<XMem>, texts: Vec<String>) -> Self {
        XMemPropagation {
            xmem,
            texts,
            summary: None,
        }
    }
}

/// The frames whose masks seed XMem++: the dense frames (`sparse[d]` for each dense `d`).
pub fn seed_frames(sampling: &crate::sampling::Sampling) -> Vec<usize> {
    let set: BTreeSet<usize> = sampling.dense.iter().map(|&d| sampling.sparse[d]).collect();
    set.into_iter().collect()
}

/// SAM's 0/255 masks of `frames` for every prompt (as `segment` would write them).
fn sam_seeds(
    input: &StageInput<'_>,
    prompts: &[Tensor],
    frames: &BTreeMap<usize, RgbImage>,
    sec: &mut StageSeconds,
) -> Result<Vec<BTreeMap<usize, GrayImage>>> {
    let model = input.model;
    let sam = &model.visual_model;
    let dev = model.options.device.clone();
    let info = input.video.info();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut seeds = vec![BTreeMap::new(); prompts.len()];
    let order: Vec<usize> = frames.keys().copied().collect();
    for chunk in order.chunks(input.sam_batch) {
        let t = Instant::now();
        let pixels = chunk
            .iter()
            .map(|i| {
                let t = &model.sam_transform;
                Ok(t.to_tensor(&t.resize(&frames[i]), &dev)?)
            })
            .collect::<Result<Vec<_>>>()?;
        sec.preprocess += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let emb = sam.encode(&Tensor::stack(&pixels, 0)?)?;
        dev.synchronize()?;
        sec.sam_encode += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (k, sp) in prompts.iter().enumerate() {
            let masks = binary_masks(&frame_logits(model, &emb, sp, info)?)?;
            for (i, mut mask) in chunk.iter().zip(masks) {
                mask.iter_mut().for_each(|v| *v *= 255);
                let img =
                    GrayImage::from_raw(w as u32, h as u32, mask).expect("mask buffer has the frame size");
                seeds[k].insert(*i, img);
            }
        }
        sec.sam_decode += t.elapsed().as_secs_f64();
    }
    Ok(seeds)
}

/// Per prompt, the seed frames whose SAM mask is empty.
fn empty_seeds(seeds: &[BTreeMap<usize, GrayImage>]) -> Vec<Vec<usize>> {
    seeds
        .iter()
        .map(|s| {
            s.iter()
                .filter(|(_, m)| !m.pixels().any(|p| p[0] > 0))
                .map(|(i, _)| *i)
                .collect()
        })
        .collect()
}

/// Intermediates of a few frames for `--dump`: the first frame that is not a seed and the last.
struct Dump {
    frames: BTreeSet<usize>,
    tensors: HashMap<String, Tensor>,
}

impl Dump {
    fn new(n: usize, seeds: &[usize]) -> Self {
        let first = (0..n).find(|i| !seeds.contains(i));
        Dump {
            frames: first.into_iter().chain([n - 1]).collect(),
            tensors: HashMap::new(),
        }
    }

    fn record(&mut self, index: usize, active: &[usize], r: &FrameResult) -> Result<()> {
        if !self.frames.contains(&index) {
            return Ok(());
        }
        let cpu = Device::Cpu;
        let mut put = |name: String, t: &Tensor| -> Result<()> {
            self.tensors.insert(name, t.to_device(&cpu)?.contiguous()?);
            Ok(())
        };
        put(format!("xmem.frame_{index}.key"), &r.key.key)?;
        put(format!("xmem.frame_{index}.shrinkage"), &r.key.shrinkage)?;
        put(format!("xmem.frame_{index}.selection"), &r.key.selection)?;
        for (&k, s) in active.iter().zip(&r.steps) {
            put(format!("prompt_{k}.xmem.frame_{index}.prob"), &s.prob)?;
            if let Some(t) = s.readout.first() {
                put(format!("prompt_{k}.xmem.frame_{index}.readout"), t)?;
            }
            if let Some(t) = s.logits4.first() {
                put(format!("prompt_{k}.xmem.frame_{index}.logits4"), t)?;
            }
        }
        Ok(())
    }

    fn write(self, dir: &std::path::Path) -> Result<()> {
        crate::output::write_safetensors(&dir.join("xmem.safetensors"), &self.tensors)
    }
}

/// SAM's masks on the seed frames, and which prompts have something to propagate.
struct Seeds {
    /// The seed frames (video indices, ascending).
    at: Vec<usize>,
    /// Their pictures (XMem++ encodes them into permanent memory).
    frames: BTreeMap<usize, RgbImage>,
    /// Per prompt, SAM's 0/255 mask of each seed frame.
    masks: Vec<BTreeMap<usize, GrayImage>>,
    /// Per prompt, the seed frames whose mask is empty.
    empty: Vec<Vec<usize>>,
    /// The prompts with at least one non-empty seed mask.
    active: Vec<usize>,
}

impl Seeds {
    /// Decodes the dense frames and segments them with SAM.
    fn read(input: &StageInput<'_>, sec: &mut StageSeconds) -> Result<Self> {
        let at = seed_frames(input.sampling);
        let t = Instant::now();
        let mut frames = BTreeMap::new();
        input.video.visit(&at, &mut |i, img| {
            frames.insert(i, img.clone());
            Ok(())
        })?;
        sec.decode += t.elapsed().as_secs_f64();
        let masks = sam_seeds(input, input.prompts, &frames, sec)?;
        let empty = empty_seeds(&masks);
        // XMem2 refuses an object without a single non-empty mask ("No valid masks
        // provided!"); such a prompt is not propagated and gets empty masks.
        let active = (0..masks.len())
            .filter(|&k| empty[k].len() < masks[k].len())
            .collect();
        Ok(Seeds {
            at,
            frames,
            masks,
            empty,
            active,
        })
    }

    /// The masks of the prompts XMem++ propagates.
    fn active_masks(&self) -> Vec<BTreeMap<usize, GrayImage>> {
        self.active.iter().map(|&k| self.masks[k].clone()).collect()
    }

    /// A note for each prompt that is not propagated.
    fn notes(&self, texts: &[String]) -> Vec<String> {
        (0..self.masks.len())
            .filter(|k| !self.active.contains(k))
            .map(|k| {
                format!(
                    "prompt {k} ({:?}): SAM found nothing on any dense frame {:?}, so XMem++ has no mask \
                     to propagate; its masks are empty (run without --propagate for SAM's per-frame masks)",
                    texts[k], self.at
                )
            })
            .collect()
    }
}

/// Runs XMem++ over every frame into the sink (an empty mask for prompts it does not
/// propagate); returns the seconds XMem++ took.
fn propagate(
    run: &mut RunOnVideo<'_>,
    input: &StageInput<'_>,
    seeds: &Seeds,
    sink: &mut MaskSink,
    sec: &mut StageSeconds,
) -> Result<f64> {
    // a live stream has no known last frame; the last frame's only difference (its memory is
    // not updated) changes no mask
    let n = input.video.info().frames;
    let is_last = |i: usize| !input.video.is_live() && i + 1 == n;
    let mut dump = input.dump.map(|_| Dump::new(n, &seeds.at));
    let bar = super::stage::frames_bar(input.video, "XMem++");
    let mut xmem_s = 0.0;
    let mut last = Instant::now();
    for frame in input.video.frames()? {
        let f = frame?;
        sec.decode += last.elapsed().as_secs_f64();
        refresh_seeds(run, input, seeds, f.index, &f.image, sec)?;
        let t = Instant::now();
        let r = run.step(f.index, &f.image, is_last(f.index))?;
        xmem_s += t.elapsed().as_secs_f64();
        if let Some(d) = dump.as_mut() {
            d.record(f.index, &seeds.active, &r)?;
        }
        let t = Instant::now();
        let mut masks = r.masks.into_iter();
        for k in 0..seeds.masks.len() {
            let m = if seeds.active.contains(&k) {
                masks.next().expect("one mask per active prompt")
            } else {
                vec![0; f.image.width() as usize * f.image.height() as usize]
            };
            sink.push_mask(k, f.index, input.keep_frames.then_some(&f.image), m)?;
        }
        sec.write += t.elapsed().as_secs_f64();
        bar.inc(1);
        last = Instant::now();
    }
    bar.finish_and_clear();
    if let (Some(d), Some(dir)) = (dump, input.dump) {
        d.write(dir)?;
    }
    Ok(xmem_s)
}

/// With `--refresh`: when frame `index` completes a period, SAM segments the new dense frames
/// with the new prompts and their masks join each propagated object's permanent memory.
fn refresh_seeds(
    run: &mut RunOnVideo<'_>,
    input: &StageInput<'_>,
    seeds: &Seeds,
    index: usize,
    frame: &RgbImage,
    sec: &mut StageSeconds,
) -> Result<()> {
    let Some(r) = input.refresh else {
        return Ok(());
    };
    let Some(new) = r.borrow_mut().arrived(index, frame)? else {
        return Ok(());
    };
    let masks = sam_seeds(input, &new.prompts, &new.dense, sec)?;
    let active: Vec<_> = seeds.active.iter().map(|&k| masks[k].clone()).collect();
    let t = Instant::now();
    run.add_permanent(&active, &new.dense)?;
    *sec.xmem.get_or_insert(0.0) += t.elapsed().as_secs_f64();
    Ok(())
}

impl MaskStage for XMemPropagation {
    fn run(&mut self, input: &StageInput<'_>, sink: &mut MaskSink, sec: &mut StageSeconds) -> Result<()> {
        let mut seeds = Seeds::read(input, sec)?;
        let xmem = self.xmem.clone();
        let t = Instant::now();
        let frames = std::mem::take(&mut seeds.frames);
        let mut run = RunOnVideo::new(&xmem, MemoryConfig::default(), &seeds.active_masks(), &frames)?;
        let setup = t.elapsed().as_secs_f64();
        drop(frames);
        let stepped = propagate(&mut run, input, &seeds, sink, sec)?;
        *sec.xmem.get_or_insert(0.0) += setup + stepped;
        let mut done = run.cores().map(|c| c.memory.consolidations);
        let consolidations = (0..seeds.masks.len())
            .map(|k| {
                if seeds.active.contains(&k) {
                    done.next().unwrap_or(0)
                } else {
                    0
                }
            })
            .collect();
        self.summary = Some(PropagationSummary {
            notes: seeds.notes(&self.texts),
            seed_frames: seeds.at,
            empty_seeds: seeds.empty,
            consolidations,
        });
        Ok(())
    }

    fn summary(&self) -> Option<PropagationSummary> {
        self.summary.clone()
    }
}
