//! The demo clip: moving shapes over a textured background, with their exact masks. Generated
//! by our own code so the README, the tests and benchmarks have a video whose truth is known.

use crate::error::Result;
use crate::output::{write_indexed_png, Mp4VideoWriter};
use image::{GrayImage, Luma, Rgb, RgbImage};
use std::path::Path;

/// Parameters of a synthetic clip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemoClip {
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Number of frames.
    pub frames: usize,
    /// Frames per second of the mp4.
    pub fps: f64,
}

impl Default for DemoClip {
    /// The committed demo: 40 frames of 320×240 at 10 fps.
    fn default() -> Self {
        DemoClip {
            width: 320,
            height: 240,
            frames: 40,
            fps: 10.0,
        }
    }
}

impl DemoClip {
    /// Frame `i` and its object-id mask (0 background, 1 the red disc, 2 the blue square;
    /// the square passes in front of the disc).
    pub fn render(&self, i: usize) -> (RgbImage, GrayImage) {
        let (w, h) = (self.width as f64, self.height as f64);
        let t = if self.frames > 1 {
            i as f64 / (self.frames - 1) as f64
        } else {
            0.0
        };
        let r = 0.12 * h;
        let (cx, cy) = (
            w * (0.15 + 0.7 * t),
            h * (0.5 + 0.25 * (t * std::f64::consts::TAU).sin()),
        );
        let side = 0.25 * h;
        let (sx, sy) = (w * (0.8 - 0.6 * t) - side / 2.0, h * (0.15 + 0.55 * t));
        let mut img = RgbImage::new(self.width, self.height);
        let mut ids = GrayImage::new(self.width, self.height);
        for y in 0..self.height {
            for x in 0..self.width {
                let (fx, fy) = (x as f64 + 0.5, y as f64 + 0.5);
                let check = ((x / 16 + y / 16) % 2) as u8 * 18;
                let mut px = [
                    (40.0 + 80.0 * fx / w) as u8 + check,
                    (60.0 + 70.0 * fy / h) as u8 + check,
                    (90.0 + 40.0 * (1.0 - fx / w)) as u8 + check,
                ];
                let mut id = 0u8;
                if (fx - cx).powi(2) + (fy - cy).powi(2) <= r * r {
                    px = [220, 40, 30];
                    id = 1;
                }
                if fx >= sx && fx < sx + side && fy >= sy && fy < sy + side {
                    px = [30, 60, 210];
                    id = 2;
                }
                img.put_pixel(x, y, Rgb(px));
                ids.put_pixel(x, y, Luma([id]));
            }
        }
        (img, ids)
    }

    /// Writes `dir/demo.mp4`, and unless `mp4_only`, `dir/frames/NNNNN.jpg` (quality 95) and
    /// `dir/masks/NNNNN.png` (DAVIS-palette object ids). `progress` is called after each frame.
    pub fn write(&self, dir: &Path, mp4_only: bool, mut progress: impl FnMut(usize)) -> Result<()> {
        let mut mp4 = Mp4VideoWriter::create(&dir.join("demo.mp4"), self.width, self.height, self.fps)?;
        for i in 0..self.frames {
            let (img, ids) = self.render(i);
            mp4.push(&img)?;
            if !mp4_only {
                let name = format!("{i:05}");
                crate::output::write_atomic(&dir.join("frames").join(format!("{name}.jpg")), |w| {
                    image::codecs::jpeg::JpegEncoder::new_with_quality(w, 95)
                        .encode_image(&img)
                        .map_err(|e| crate::Error::Runtime(format!("jpeg encoding failed: {e}")))
                })?;
                write_indexed_png(&dir.join("masks").join(format!("{name}.png")), &ids)?;
            }
            progress(i);
        }
        mp4.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_match_colours() {
        let clip = DemoClip::default();
        for i in [0, 20, 39] {
            let (img, ids) = clip.render(i);
            let mut seen = [0usize; 3];
            for (p, m) in img.pixels().zip(ids.pixels()) {
                seen[m.0[0] as usize] += 1;
                match m.0[0] {
                    1 => assert_eq!(p.0, [220, 40, 30]),
                    2 => assert_eq!(p.0, [30, 60, 210]),
                    _ => assert!(p.0 != [220, 40, 30] && p.0 != [30, 60, 210]),
                }
            }
            assert!(seen[1] > 100 && seen[2] > 100, "{seen:?}");
        }
    }
}
