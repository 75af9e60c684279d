//! VideoLISA's post-optimization as a mask stage (`segment --propagate`): SAM decodes only the
//! dense frames (the frames the LLM saw in full), their masks seed XMem++'s permanent memory,
//! and XMem++ segments every frame in one streaming pass. Each prompt is its own single-object
//! XMem++ run, as the official scripts run each expression separately; a frame's key encoding
//! is shared by all of them.

use super::sam::frame_logits;
use super::sink::{binary_masks, MaskSink};
use super::stage::{MaskStage, PropagationSummary, SamSeeds, StageInput, StageSeconds};
use crate::error::Result;
use crate::model::xmem::memory::MemoryConfig;
use crate::model::xmem::run_on_video::{FrameResult, RunOnVideo};
use crate::model::xmem::XMem;
use crate::video::FrameSource;
use candle_core::{Device, Tensor};
use image::{GrayImage, RgbImage};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The XMem++ mask stage.
pub struct XMemPropagation {
    xmem: Arc<XMem>,
    texts: Vec<String>,
    annotations: Vec<BTreeMap<usize, GrayImage>>,
    summary: Option<PropagationSummary>,
    sam: Option<SamSeeds>,
}

impl XMemPropagation {
    /// A stage for the prompts `texts` (named in its notes) with the loaded network; the user's
    /// masks `annotations` (per prompt, frame → 0/255 mask) join SAM's seeds.
    pub fn new(xmem: Arc<XMem>, texts: Vec<String>, annotations: Vec<BTreeMap<usize, GrayImage>>) -> Self {
        XMemPropagation {
            xmem,
            texts,
            annotations,
            summary: None,
            sam: None,
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

/// The given masks per prompt (SAM's on the seed frames, the user's corrections), and which
/// prompts have something to propagate.
pub(super) struct Seeds {
    /// The seed frames (video indices, ascending).
    at: Vec<usize>,
    /// The pictures of every frame with a given mask (XMem++ encodes them into permanent memory).
    frames: BTreeMap<usize, RgbImage>,
    /// Per prompt, the 0/255 mask of each given frame.
    masks: Vec<BTreeMap<usize, GrayImage>>,
    /// Per prompt, the frames whose mask the user gave.
    annotated: Vec<Vec<usize>>,
    /// Per prompt, the given frames whose mask is empty.
    empty: Vec<Vec<usize>>,
    /// The prompts with at least one non-empty given mask.
    active: Vec<usize>,
}

impl Seeds {
    /// Decodes the dense frames and segments them with SAM.
    fn read(input: &StageInput<'_>, sec: &mut StageSeconds) -> Result<Self> {
        let at = seed_frames(input.sampling);
        let mut seeds = Seeds::of(at, Vec::new());
        seeds.read_frames(input.video, sec)?;
        seeds.masks = sam_seeds(input, input.prompts, &seeds.frames, sec)?;
        seeds.update();
        Ok(seeds)
    }

    /// SAM's masks `masks` of the seed frames `at` (the frames are read by [`Seeds::annotate`]).
    pub(super) fn of(at: Vec<usize>, masks: Vec<BTreeMap<usize, GrayImage>>) -> Self {
        let n = masks.len();
        let mut seeds = Seeds {
            at,
            frames: BTreeMap::new(),
            masks,
            annotated: vec![Vec::new(); n],
            empty: Vec::new(),
            active: Vec::new(),
        };
        seeds.update();
        seeds
    }

    /// Reads the pictures of the given frames not read yet.
    fn read_frames(&mut self, video: &dyn FrameSource, sec: &mut StageSeconds) -> Result<()> {
        let t = Instant::now();
        let mut wanted: BTreeSet<usize> = self.at.iter().copied().collect();
        wanted.extend(self.masks.iter().flat_map(|m| m.keys().copied()));
        let missing: Vec<usize> = wanted
            .into_iter()
            .filter(|i| !self.frames.contains_key(i))
            .collect();
        let frames = &mut self.frames;
        video.visit(&missing, &mut |i, img| {
            frames.insert(i, img.clone());
            Ok(())
        })?;
        sec.decode += t.elapsed().as_secs_f64();
        Ok(())
    }

    /// Adds the user's masks (per prompt, frame → 0/255 mask), replacing SAM's on seed frames,
    /// and reads their frames.
    pub(super) fn annotate(
        &mut self,
        annotations: &[BTreeMap<usize, GrayImage>],
        video: &dyn FrameSource,
        sec: &mut StageSeconds,
    ) -> Result<()> {
        self.annotated = vec![Vec::new(); self.masks.len()];
        for (k, given) in annotations.iter().enumerate().take(self.masks.len()) {
            for (&i, mask) in given {
                self.masks[k].insert(i, mask.clone());
                self.annotated[k].push(i);
            }
        }
        self.read_frames(video, sec)?;
        self.update();
        Ok(())
    }

    /// Recomputes the empty masks and the prompts with something to propagate.
    fn update(&mut self) {
        self.empty = empty_seeds(&self.masks);
        // XMem2 refuses an object without a single non-empty mask ("No valid masks
        // provided!"); such a prompt is not propagated and gets empty masks.
        self.active = (0..self.masks.len())
            .filter(|&k| self.empty[k].len() < self.masks[k].len())
            .collect();
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

/// What one XMem++ pass reads and where its intermediates go.
pub(super) struct Pass<'a> {
    /// The video.
    pub video: &'a dyn FrameSource,
    /// Whether the sink needs the frames (overlays).
    pub keep_frames: bool,
    /// `--dump` folder.
    pub dump: Option<&'a Path>,
}

/// Called before each frame is stepped (`--refresh` adds permanent memory there).
type BeforeStep<'f> = dyn FnMut(&mut RunOnVideo<'_>, usize, &RgbImage, &mut StageSeconds) -> Result<()> + 'f;

/// Runs XMem++ over every frame into the sink (an empty mask for prompts it does not
/// propagate); returns the seconds XMem++ took.
fn propagate(
    run: &mut RunOnVideo<'_>,
    pass: &Pass<'_>,
    seeds: &Seeds,
    sink: &mut MaskSink,
    sec: &mut StageSeconds,
    before: &mut BeforeStep<'_>,
) -> Result<f64> {
    // a live stream has no known last frame; the last frame's only difference (its memory is
    // not updated) changes no mask
    let video = pass.video;
    let n = video.info().frames;
    let is_last = |i: usize| !video.is_live() && i + 1 == n;
    let given: Vec<usize> = seeds.masks.iter().flat_map(|m| m.keys().copied()).collect();
    let mut dump = pass.dump.map(|_| Dump::new(n, &given));
    let bar = super::stage::frames_bar(video, "XMem++");
    let mut xmem_s = 0.0;
    let mut last = Instant::now();
    for frame in video.frames()? {
        let f = frame?;
        sec.decode += last.elapsed().as_secs_f64();
        before(run, f.index, &f.image, sec)?;
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
            sink.push_mask(k, f.index, pass.keep_frames.then_some(&f.image), m)?;
        }
        sec.write += t.elapsed().as_secs_f64();
        bar.inc(1);
        last = Instant::now();
    }
    bar.finish_and_clear();
    if let (Some(d), Some(dir)) = (dump, pass.dump) {
        d.write(dir)?;
    }
    Ok(xmem_s)
}

/// One XMem++ pass of `seeds` through the video into the sink; what it did, for the summary
/// (`texts`: the prompts, for its notes).
pub(super) fn run_pass(
    xmem: &XMem,
    pass: &Pass<'_>,
    mut seeds: Seeds,
    texts: &[String],
    sink: &mut MaskSink,
    sec: &mut StageSeconds,
    before: &mut BeforeStep<'_>,
) -> Result<PropagationSummary> {
    let t = Instant::now();
    let frames = std::mem::take(&mut seeds.frames);
    let mut run = RunOnVideo::new(xmem, MemoryConfig::default(), &seeds.active_masks(), &frames)?;
    let setup = t.elapsed().as_secs_f64();
    drop(frames);
    let stepped = propagate(&mut run, pass, &seeds, sink, sec, before)?;
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
    let annotated = if seeds.annotated.iter().any(|a| !a.is_empty()) {
        seeds.annotated.clone()
    } else {
        Vec::new()
    };
    Ok(PropagationSummary {
        notes: seeds.notes(texts),
        seed_frames: seeds.at,
        empty_seeds: seeds.empty,
        consolidations,
        annotated,
    })
}

/// With `--refresh`: when frame `index` completes a period, SAM segments the new dense frames
/// with the new prompts and their masks join each propagated object's permanent memory.
fn refresh_seeds(
    run: &mut RunOnVideo<'_>,
    input: &StageInput<'_>,
    active: &[usize],
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
    let active: Vec<_> = active.iter().map(|&k| masks[k].clone()).collect();
    let t = Instant::now();
    run.add_permanent(&active, &new.dense)?;
    *sec.xmem.get_or_insert(0.0) += t.elapsed().as_secs_f64();
    Ok(())
}

impl MaskStage for XMemPropagation {
    fn run(&mut self, input: &StageInput<'_>, sink: &mut MaskSink, sec: &mut StageSeconds) -> Result<()> {
        let mut seeds = Seeds::read(input, sec)?;
        self.sam = Some((seeds.at.clone(), seeds.masks.clone()));
        seeds.annotate(&self.annotations, input.video, sec)?;
        let pass = Pass {
            video: input.video,
            keep_frames: input.keep_frames,
            dump: input.dump,
        };
        let active = seeds.active.clone();
        let mut before = |run: &mut RunOnVideo<'_>, i: usize, img: &RgbImage, sec: &mut StageSeconds| {
            refresh_seeds(run, input, &active, i, img, sec)
        };
        let xmem = self.xmem.clone();
        self.summary = Some(run_pass(
            &xmem,
            &pass,
            seeds,
            &self.texts,
            sink,
            sec,
            &mut before,
        )?);
        Ok(())
    }

    fn summary(&self) -> Option<PropagationSummary> {
        self.summary.clone()
    }

    fn sam_seeds(&mut self) -> Option<SamSeeds> {
        self.sam.take()
    }
}
