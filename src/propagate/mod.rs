//! `propagate`: XMem++ on its own, as XMem2's `run_on_video` runs it. The user's masks of some
//! frames seed one memory holding every object; every frame is segmented and written as XMem2
//! saves it (the labels, coloured with the first mask's palette), optionally also as one 0/255
//! mask per object, overlays and COCO RLE.

pub mod given;

use crate::error::{Error, Result};
use crate::model::xmem::memory::MemoryConfig;
use crate::model::xmem::run_on_video::RunOnVideo;
use crate::model::xmem::XMem;
use crate::output::{write_palette_png, FrameOutputs, OutputFormats};
use crate::video::FrameSource;
use given::GivenMasks;
use image::{GrayImage, RgbImage};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `propagate` writes besides the palette masks.
#[derive(Debug, Clone, Default)]
pub struct PropagateOptions {
    /// XMem2's memory settings.
    pub config: MemoryConfig,
    /// `object_<label>/<frame>.png`, 0/255 per object.
    pub binary: bool,
    /// Overlay PNGs and video (all objects), COCO RLE per object.
    pub formats: OutputFormats,
}

/// Seconds per part of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PropagateSeconds {
    /// Reading frames.
    pub decode: f64,
    /// Preloading the given masks and stepping every frame.
    pub xmem: f64,
    /// Writing the outputs.
    pub write: f64,
    /// Everything.
    pub total: f64,
}

/// What a run did (`summary.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PropagateSummary {
    /// The input as given.
    pub video: String,
    /// Frames segmented.
    pub frames: usize,
    /// Frame size.
    pub width: u32,
    /// Frame size.
    pub height: u32,
    /// Frames with a given mask (video indices).
    pub given_frames: Vec<usize>,
    /// The objects' labels, in the order XMem2 numbers them.
    pub objects: Vec<u8>,
    /// The memory settings.
    pub config: MemoryConfig,
    /// Working-memory consolidations into long-term memory.
    pub consolidations: usize,
    /// Removals of obsolete long-term elements.
    pub removals: usize,
    /// Seconds per part.
    pub seconds: PropagateSeconds,
    /// Outputs that could not be written (the overlay video), each with its cause.
    pub warnings: Vec<String>,
}

/// The folder of object `label`'s own files.
pub fn object_dir(label: u8) -> String {
    format!("object_{label}")
}

/// The files of one run, frame by frame.
struct Writer {
    masks: PathBuf,
    palette: Vec<u8>,
    labels: Vec<u8>,
    objects: Vec<FrameOutputs>,
    overlay: Option<FrameOutputs>,
}

impl Writer {
    fn new(
        out: &Path,
        w: u32,
        h: u32,
        labels: &[u8],
        given: &GivenMasks,
        opts: &PropagateOptions,
    ) -> Result<Self> {
        let masks = out.join("masks");
        std::fs::create_dir_all(&masks).map_err(|e| Error::io(&masks, e))?;
        let f = &opts.formats;
        let per_object = OutputFormats {
            mask_png: opts.binary,
            mask_value: 255,
            rle: f.rle,
            ..OutputFormats::default()
        };
        let objects = if opts.binary || f.rle {
            labels
                .iter()
                .map(|&l| FrameOutputs::new(&out.join(object_dir(l)), w, h, per_object.clone()))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let overlay = f
            .needs_frames()
            .then(|| {
                let all = OutputFormats {
                    mask_png: false,
                    rle: false,
                    ..f.clone()
                };
                FrameOutputs::new(out, w, h, all)
            })
            .transpose()?;
        Ok(Writer {
            masks,
            palette: given.palette.iter().flatten().copied().collect(),
            labels: labels.to_vec(),
            objects,
            overlay,
        })
    }

    /// Writes frame `name`'s outputs from its channel mask (0 = background, `o + 1` = object `o`).
    fn push(&mut self, name: &str, frame: &RgbImage, channels: Vec<u8>) -> Result<()> {
        let (w, h) = frame.dimensions();
        let ids: Vec<u8> = channels
            .iter()
            .map(|&c| if c == 0 { 0 } else { self.labels[c as usize - 1] })
            .collect();
        let ids = GrayImage::from_raw(w, h, ids).expect("one label per pixel");
        write_palette_png(&self.masks.join(format!("{name}.png")), &ids, &self.palette)?;
        for (o, outputs) in self.objects.iter_mut().enumerate() {
            let one = channels.iter().map(|&c| u8::from(c as usize == o + 1)).collect();
            let one = GrayImage::from_raw(w, h, one).expect("one value per pixel");
            outputs.push(name, None, &one)?;
        }
        if let Some(o) = &mut self.overlay {
            o.push(name, Some(frame), &ids)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        for o in self.objects.into_iter().chain(self.overlay) {
            warnings.extend(o.finish()?);
        }
        Ok(warnings)
    }
}

/// Propagates `given` through `video` with `net` into `out` (masks/, object_*/, overlay/,
/// masks.rle.json; the caller writes summary.json). All given masks empty is a usage error
/// (XMem2's "No valid masks provided!").
pub fn propagate(
    net: &XMem,
    video: &dyn FrameSource,
    given: &GivenMasks,
    out: &Path,
    opts: &PropagateOptions,
) -> Result<PropagateSummary> {
    let start = Instant::now();
    let info = video.info().clone();
    let mut sec = PropagateSeconds::default();
    let at: Vec<usize> = given.masks.keys().copied().collect();
    let mut frames = BTreeMap::new();
    let t = Instant::now();
    video.visit(&at, &mut |i, img| {
        frames.insert(i, img.clone());
        Ok(())
    })?;
    sec.decode += t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut run = RunOnVideo::new(net, opts.config, std::slice::from_ref(&given.masks), &frames).map_err(
        |e| match e {
            Error::Usage(_) => Error::Usage(format!(
                "every given mask is empty ({}); XMem++ needs at least one object",
                crate::model::xmem::run_on_video::NO_VALID_MASKS
            )),
            e => e,
        },
    )?;
    sec.xmem += t.elapsed().as_secs_f64();
    drop(frames);
    let labels = run.labels(0).to_vec();
    let mut writer = Writer::new(out, info.width, info.height, &labels, given, opts)?;
    let bar = crate::progress::bar_or_count(Some(info.frames as u64), "XMem++");
    let mut last = Instant::now();
    for frame in video.frames()? {
        let f = frame?;
        sec.decode += last.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut r = run.step(f.index, &f.image, f.index + 1 == info.frames)?;
        sec.xmem += t.elapsed().as_secs_f64();
        let t = Instant::now();
        writer.push(&info.frame_name(f.index), &f.image, r.masks.swap_remove(0))?;
        sec.write += t.elapsed().as_secs_f64();
        bar.inc(1);
        last = Instant::now();
    }
    bar.finish_and_clear();
    let t = Instant::now();
    let warnings = writer.finish()?;
    sec.write += t.elapsed().as_secs_f64();
    sec.total = start.elapsed().as_secs_f64();
    let core = run.cores().next().expect("one run");
    Ok(PropagateSummary {
        video: info.path.display().to_string(),
        frames: info.frames,
        width: info.width,
        height: info.height,
        given_frames: at,
        objects: labels,
        config: opts.config,
        consolidations: core.memory.consolidations,
        removals: core.memory.removals,
        seconds: sec,
        warnings,
    })
}
