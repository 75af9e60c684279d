//! Per-video output sets: for each frame, the mask PNG named after the input frame, and
//! optionally indexed PNGs, overlay PNGs, an overlay mp4 and one COCO RLE JSON for the video.

use super::{overlay, write_indexed_png, write_mask_png, write_rgb_png, Mp4VideoWriter, Rle};
use crate::error::{Error, Result};
use image::{GrayImage, RgbImage};
use std::path::{Path, PathBuf};

/// Which files a [`FrameOutputs`] writes.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputFormats {
    /// `<dir>/<frame>.png`, 8-bit grayscale: 0 background, `mask_value` foreground.
    pub mask_png: bool,
    /// Foreground value of the mask PNGs (255; the Ref-DAVIS raw layout uses 100).
    pub mask_value: u8,
    /// `<dir>/indexed/<frame>.png` with the DAVIS palette (value = object id).
    pub indexed_png: bool,
    /// `<dir>/overlay/<frame>.png`: the frame with the mask blended in.
    pub overlay_png: bool,
    /// `<dir>/overlay.mp4` at this frame rate (H.264).
    pub overlay_mp4: Option<f64>,
    /// `<dir>/masks.rle.json`: COCO RLE of every frame.
    pub rle: bool,
}

impl Default for OutputFormats {
    fn default() -> Self {
        OutputFormats {
            mask_png: true,
            mask_value: 255,
            indexed_png: false,
            overlay_png: false,
            overlay_mp4: None,
            rle: false,
        }
    }
}

impl OutputFormats {
    /// Whether writing these needs the frames themselves (overlays), not only the masks.
    pub fn needs_frames(&self) -> bool {
        self.overlay_png || self.overlay_mp4.is_some()
    }
}

/// The overlay video's frame rate: the input's, or 10 when it has none.
pub fn overlay_fps(fps: Option<f64>) -> f64 {
    fps.filter(|f| *f > 0.0).unwrap_or(10.0)
}

#[derive(serde::Serialize)]
struct RleEntry {
    frame: String,
    #[serde(flatten)]
    rle: Rle,
}

/// Writes the outputs of one video (one prompt) frame by frame; nothing is half-written. The
/// overlay video is an extra: when it cannot be encoded, the masks go on and the failure is
/// reported by [`FrameOutputs::finish`].
pub struct FrameOutputs {
    dir: PathBuf,
    formats: OutputFormats,
    mp4: Option<Mp4VideoWriter>,
    rles: Vec<RleEntry>,
    failures: Vec<String>,
}

impl FrameOutputs {
    /// Prepares `dir` for a video of `width`×`height`.
    pub fn new(dir: &Path, width: u32, height: u32, formats: OutputFormats) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut failures = Vec::new();
        let mp4 = match formats.overlay_mp4 {
            Some(fps) => Mp4VideoWriter::create(&dir.join("overlay.mp4"), width, height, fps)
                .map_err(|e| failures.push(e.to_string()))
                .ok(),
            None => None,
        };
        Ok(FrameOutputs {
            dir: dir.to_path_buf(),
            formats,
            mp4,
            rles: Vec::new(),
            failures,
        })
    }

    /// Path of the mask PNG of frame `name`.
    pub fn mask_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.png"))
    }

    /// Writes the outputs of one frame. `ids` holds object ids (0 = background); `frame` is
    /// needed only for overlays.
    pub fn push(&mut self, name: &str, frame: Option<&RgbImage>, ids: &GrayImage) -> Result<()> {
        let f = &self.formats;
        if f.mask_png {
            write_mask_png(&self.mask_path(name), ids, f.mask_value)?;
        }
        if f.indexed_png {
            write_indexed_png(&self.dir.join("indexed").join(format!("{name}.png")), ids)?;
        }
        if f.overlay_png || self.mp4.is_some() {
            let frame = frame.ok_or_else(|| Error::Internal("overlays need the video frame".into()))?;
            let over = overlay(frame, ids);
            if f.overlay_png {
                write_rgb_png(&self.dir.join("overlay").join(format!("{name}.png")), &over)?;
            }
            if let Some(mp4) = &mut self.mp4 {
                if let Err(e) = mp4.push(&over) {
                    self.failures.push(e.to_string());
                    self.mp4 = None;
                }
            }
        }
        if f.rle {
            self.rles.push(RleEntry {
                frame: name.to_string(),
                rle: Rle::encode(ids),
            });
        }
        Ok(())
    }

    /// Finishes the mp4 and writes the RLE JSON. Returns what could not be written (the
    /// overlay video), each with its cause.
    pub fn finish(mut self) -> Result<Vec<String>> {
        if let Some(mp4) = self.mp4.take() {
            if let Err(e) = mp4.finish() {
                self.failures.push(e.to_string());
            }
        }
        if self.formats.rle {
            let path = self.dir.join("masks.rle.json");
            let json = serde_json::to_vec(&serde_json::json!({ "frames": self.rles }))
                .map_err(|e| Error::Internal(format!("JSON: {e}")))?;
            super::write_atomic(&path, |w| {
                std::io::Write::write_all(w, &json).map_err(|e| Error::io(&path, e))
            })?;
        }
        Ok(self.failures)
    }
}
