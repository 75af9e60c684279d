//! Where every frame's masks go: thresholding of logits, the output writers of each prompt,
//! foreground counts, and the logits kept for dumps. Mask stages push into a [`MaskSink`]; it
//! knows nothing of how the masks were made.

use crate::error::{Error, Result};
use crate::output::{FrameOutputs, OutputFormats};
use crate::video::VideoInfo;
use candle_core::{Device, Tensor};
use image::{GrayImage, RgbImage};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Told about each frame once every prompt's mask of it is written (live outputs, latency).
pub trait FrameObserver: Send + std::fmt::Debug {
    /// Whether [`FrameObserver::frame_done`] needs the frame itself.
    fn needs_frames(&self) -> bool;
    /// Frame `index` is done: each prompt's 0/1 mask, and the frame when asked for.
    fn frame_done(&mut self, index: usize, masks: &[GrayImage], frame: Option<&RgbImage>) -> Result<()>;
}

/// A [`FrameObserver`] shared between the run and whoever reads what it gathered.
pub type SharedObserver = Arc<Mutex<dyn FrameObserver>>;

/// A frame some of whose prompts' masks are written.
struct Pending {
    masks: Vec<Option<GrayImage>>,
    frame: Option<RgbImage>,
}

/// What a [`MaskSink`] hands back when closed.
pub struct SinkTotals {
    /// Outputs that could not be written (an overlay video), each with its cause.
    pub warnings: Vec<String>,
    /// Foreground pixels per prompt over all frames.
    pub foreground: Vec<u64>,
    /// Per prompt `[T, H, W]` f32 logits, when kept and the stage made logits.
    pub logits: Option<Vec<Tensor>>,
    /// Frames whose masks were written.
    pub frames: usize,
}

/// The masks of every prompt, frame by frame, on their way to disk.
pub struct MaskSink {
    writers: Option<Vec<FrameOutputs>>,
    info: VideoInfo,
    observer: Option<SharedObserver>,
    observer_frames: bool,
    pending: BTreeMap<usize, Pending>,
    frames: usize,
    width: u32,
    height: u32,
    keep_logits: bool,
    logits: Vec<Vec<Tensor>>,
    foreground: Vec<u64>,
}

impl MaskSink {
    /// A sink for the prompts whose outputs go to `<out>/<dir>` (nothing is written without
    /// `out`); `keep_logits` keeps the per-frame logits for dumps.
    pub fn new(
        out: Option<&Path>,
        dirs: &[&str],
        info: &VideoInfo,
        formats: &OutputFormats,
        keep_logits: bool,
    ) -> Result<Self> {
        let writers = out
            .map(|o| {
                dirs.iter()
                    .map(|d| FrameOutputs::new(&o.join(d), info.width, info.height, formats.clone()))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        Ok(MaskSink {
            writers,
            info: info.clone(),
            observer: None,
            observer_frames: false,
            pending: BTreeMap::new(),
            frames: 0,
            width: info.width,
            height: info.height,
            keep_logits,
            logits: vec![Vec::new(); dirs.len()],
            foreground: vec![0; dirs.len()],
        })
    }

    /// Tells `observer` about every frame once all its masks are written.
    pub fn observe(&mut self, observer: SharedObserver) -> Result<()> {
        self.observer_frames = observer
            .lock()
            .map_err(|_| Error::Internal("a frame observer panicked".into()))?
            .needs_frames();
        self.observer = Some(observer);
        Ok(())
    }

    /// Thresholds prompt `k`'s logits `[B, H, W]` (on the model's device) of the frames `batch`
    /// and writes them; only the 0/1 masks leave the device, unless the logits are kept.
    pub fn push(&mut self, k: usize, logits: Tensor, batch: &[(usize, Option<RgbImage>)]) -> Result<()> {
        let masks = binary_masks(&logits)?;
        for ((index, frame), mask) in batch.iter().zip(masks) {
            self.push_mask(k, *index, frame.as_ref(), mask)?;
        }
        if self.keep_logits {
            self.logits[k].push(logits.to_device(&Device::Cpu)?);
        }
        Ok(())
    }

    /// Writes prompt `k`'s 0/1 mask (frame size, row-major) of frame `index`; `frame` is the
    /// picture when overlays are written.
    pub fn push_mask(
        &mut self,
        k: usize,
        index: usize,
        frame: Option<&RgbImage>,
        mask: Vec<u8>,
    ) -> Result<()> {
        self.foreground[k] += mask.iter().map(|&v| u64::from(v)).sum::<u64>();
        self.frames += usize::from(k == 0);
        let ids = GrayImage::from_raw(self.width, self.height, mask).ok_or_else(|| {
            Error::Internal(format!("a mask of frame {index} does not have the frame size"))
        })?;
        if let Some(ws) = self.writers.as_mut() {
            ws[k].push(&self.info.frame_name(index), frame, &ids)?;
        }
        if self.observer.is_some() {
            self.observed(k, index, frame, ids)?;
        }
        Ok(())
    }

    /// Keeps prompt `k`'s mask of frame `index` until every prompt's is there, then tells the
    /// observer.
    fn observed(&mut self, k: usize, index: usize, frame: Option<&RgbImage>, mask: GrayImage) -> Result<()> {
        let n = self.foreground.len();
        let p = self.pending.entry(index).or_insert_with(|| Pending {
            masks: vec![None; n],
            frame: None,
        });
        p.masks[k] = Some(mask);
        if p.frame.is_none() && self.observer_frames {
            p.frame = frame.cloned();
        }
        if p.masks.iter().any(Option::is_none) {
            return Ok(());
        }
        let p = self.pending.remove(&index).expect("the entry was just filled");
        let masks: Vec<GrayImage> = p.masks.into_iter().flatten().collect();
        let observer = self.observer.as_ref().expect("only observed with an observer");
        let mut o = observer
            .lock()
            .map_err(|_| Error::Internal("a frame observer panicked".into()))?;
        o.frame_done(index, &masks, p.frame.as_ref())
    }

    /// Closes the writers; returns what could not be written, the foreground pixel counts and
    /// the kept logits.
    pub fn finish(self) -> Result<SinkTotals> {
        let mut warnings = Vec::new();
        for w in self.writers.into_iter().flatten() {
            warnings.extend(w.finish()?);
        }
        // A stage that makes masks without logits (XMem++) leaves nothing to keep.
        let logits = if self.keep_logits && self.logits.iter().all(|l| !l.is_empty()) {
            Some(
                self.logits
                    .into_iter()
                    .map(|l| Tensor::cat(&l, 0))
                    .collect::<candle_core::Result<Vec<_>>>()?,
            )
        } else {
            None
        };
        Ok(SinkTotals {
            warnings,
            foreground: self.foreground,
            logits,
            frames: self.frames,
        })
    }
}

/// The 0/1 masks (`logit > 0`, row-major) of logits `[B, H, W]`, one per frame: thresholded
/// where the logits are, so a GPU hands over one byte per pixel.
pub fn binary_masks(logits: &Tensor) -> Result<Vec<Vec<u8>>> {
    let (_, h, w) = logits.dims3()?;
    let flat: Vec<u8> = logits
        .gt(0f32)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1()?;
    Ok(flat.chunks(h * w).map(<[u8]>::to_vec).collect())
}
