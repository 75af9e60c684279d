//! VideoLISA's post-optimization as a mask stage (`segment --propagate`): SAM decodes only the
//! dense frames (the frames the LLM saw in full), their masks seed XMem++'s permanent memory,
//! and XMem++ segments every frame in one streaming pass. Each prompt is its own single-object
//! XMem++ run, as the official scripts run each expression separately; a frame's key encoding
//! is shared by all of them.

use crate::error::{Error, Result};
use crate::model::xmem::memory::MemoryConfig;
use crate::model::xmem::run_on_video::{FrameResult, RunOnVideo};
use crate::model::xmem::XMem;
use crate::segment::{
    binary_masks, keeps_frames, sam_batch, sam_frame_logits, MaskSink, MaskStage, PromptSpec,
    PropagationSummary, StageInput, StageSeconds,
};
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
    /// A stage for `prompts` with the loaded network.
    pub fn new(xmem: Arc<XMem>, prompts: &[PromptSpec]) -> Self {
        XMemPropagation {
            xmem,
            texts: prompts.iter().map(|p| p.text.clone()).collect(),
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
    frames: &BTreeMap<usize, RgbImage>,
    sec: &mut StageSeconds,
) -> Result<Vec<BTreeMap<usize, GrayImage>>> {
    let model = input.model;
    let sam = &model.visual_model;
    let dev = model.options.device.clone();
    let info = input.video.info();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut seeds = vec![BTreeMap::new(); input.prompts.len()];
    let order: Vec<usize> = frames.keys().copied().collect();
    for chunk in order.chunks(sam_batch(model, input.opts)) {
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
        for (k, sp) in input.prompts.iter().enumerate() {
            let masks = binary_masks(&sam_frame_logits(model, &emb, sp, info)?)?;
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
            if let Some(t) = &s.readout {
                put(format!("prompt_{k}.xmem.frame_{index}.readout"), t)?;
            }
            if let Some(t) = &s.logits4 {
                put(format!("prompt_{k}.xmem.frame_{index}.logits4"), t)?;
            }
        }
        Ok(())
    }

    fn write(self, dir: &std::path::Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join("xmem.safetensors");
        let tmp = dir.join(".xmem.safetensors.partial");
        candle_core::safetensors::save(&self.tensors, &tmp)?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }
}

impl MaskStage for XMemPropagation {
    fn run(&mut self, input: &StageInput<'_>, sink: &mut MaskSink, sec: &mut StageSeconds) -> Result<()> {
        let seeds_at = seed_frames(input.sampling);
        let t = Instant::now();
        let mut frames = BTreeMap::new();
        input.video.visit(&seeds_at, |i, img| {
            frames.insert(i, img.clone());
            Ok(())
        })?;
        sec.decode += t.elapsed().as_secs_f64();
        let seeds = sam_seeds(input, &frames, sec)?;
        let empty = empty_seeds(&seeds);
        // XMem2 refuses an object without a single non-empty mask ("No valid masks
        // provided!"); such a prompt is not propagated and gets empty masks.
        let active: Vec<usize> = (0..seeds.len())
            .filter(|&k| empty[k].len() < seeds[k].len())
            .collect();
        let mut notes = Vec::new();
        for k in (0..seeds.len()).filter(|k| !active.contains(k)) {
            notes.push(format!(
                "prompt {k} ({:?}): SAM found nothing on any dense frame {seeds_at:?}, so XMem++ has no mask \
                 to propagate; its masks are empty (run without --propagate for SAM's per-frame masks)",
                self.texts[k]
            ));
        }
        let active_seeds: Vec<_> = active.iter().map(|&k| seeds[k].clone()).collect();
        let xmem = self.xmem.clone();
        let t = Instant::now();
        let mut run = RunOnVideo::new(&xmem, MemoryConfig::default(), &active_seeds, &frames)?;
        let mut xmem_s = t.elapsed().as_secs_f64();
        drop(frames);

        let n = input.video.len();
        let keep = keeps_frames(input.opts);
        let mut dump = input.opts.dump.as_ref().map(|_| Dump::new(n, &seeds_at));
        let bar = crate::progress::bar(n as u64, "XMem++");
        let mut last = Instant::now();
        for frame in input.video.frames()? {
            let f = frame?;
            sec.decode += last.elapsed().as_secs_f64();
            let t = Instant::now();
            let r = run.step(f.index, &f.image, f.index + 1 == n)?;
            xmem_s += t.elapsed().as_secs_f64();
            if let Some(d) = dump.as_mut() {
                d.record(f.index, &active, &r)?;
            }
            let t = Instant::now();
            let mut masks = r.masks.into_iter();
            for k in 0..seeds.len() {
                let m = if active.contains(&k) {
                    masks.next().expect("one mask per active prompt")
                } else {
                    vec![0; f.image.width() as usize * f.image.height() as usize]
                };
                sink.push_mask(k, f.index, keep.then_some(&f.image), m)?;
            }
            sec.write += t.elapsed().as_secs_f64();
            bar.inc(1);
            last = Instant::now();
        }
        bar.finish_and_clear();
        sec.xmem = Some(xmem_s);
        if let (Some(d), Some(dir)) = (dump, &input.opts.dump) {
            d.write(dir)?;
        }
        let mut done = run.cores().map(|c| c.memory.consolidations);
        self.summary = Some(PropagationSummary {
            seed_frames: seeds_at,
            empty_seeds: empty,
            consolidations: (0..seeds.len())
                .map(|k| {
                    if active.contains(&k) {
                        done.next().unwrap_or(0)
                    } else {
                        0
                    }
                })
                .collect(),
            notes,
        });
        Ok(())
    }

    fn summary(&self) -> Option<PropagationSummary> {
        self.summary.clone()
    }
}
