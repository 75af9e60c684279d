//! Frame preprocessing for the two vision towers, bit-exact with the reference on u8 input:
//! CLIP (HF `CLIPImageProcessor`: PIL bicubic short side, center crop, rescale, normalize) and
//! SAM (`ResizeLongestSide` with PIL bilinear, normalize in 0–255 space, zero-pad after).

pub mod resample;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
pub use resample::{resize, Filter};

/// A float image in channel-major (C, H, W) layout, ready to become a model input tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Planar {
    /// Number of channels (3).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `channels * height * width` values, channel-major.
    pub data: Vec<f32>,
}

impl Planar {
    /// Shape as `[C, H, W]`.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }
}

/// Resizes an RGB image like PIL `Image.resize((w, h), filter)`.
pub fn resize_rgb(img: &RgbImage, out_w: u32, out_h: u32, filter: Filter) -> RgbImage {
    let (w, h) = img.dimensions();
    let data = resize(
        img.as_raw(),
        w as usize,
        h as usize,
        3,
        out_w as usize,
        out_h as usize,
        filter,
    );
    RgbImage::from_raw(out_w, out_h, data).expect("resize returns a full buffer")
}

/// The CLIP image transform of `openai/clip-vit-large-patch14-336` (values from its
/// `preprocessor_config.json`; see [`ClipTransform::default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipTransform {
    /// Target of the short side (`size.shortest_edge`).
    pub shortest_edge: u32,
    /// Side of the square center crop (`crop_size`).
    pub crop: u32,
    /// Per-channel mean (`image_mean`), in 0–1 units.
    pub mean: [f32; 3],
    /// Per-channel standard deviation (`image_std`), in 0–1 units.
    pub std: [f32; 3],
}

impl Default for ClipTransform {
    fn default() -> Self {
        ClipTransform {
            shortest_edge: 336,
            crop: 336,
            // config values are Python floats; numpy casts them to f32 (decimal → f64 → f32)
            mean: [0.48145466f64 as f32, 0.4578275f64 as f32, 0.40821073f64 as f32],
            std: [0.26862954f64 as f32, 0.26130258f64 as f32, 0.27577711f64 as f32],
        }
    }
}

impl ClipTransform {
    /// Size (w, h) after the short-side resize: short → `shortest_edge`, long →
    /// `int(shortest_edge * long / short)` (truncation, as transformers does).
    pub fn resized_size(&self, w: u32, h: u32) -> (u32, u32) {
        let s = f64::from(self.shortest_edge);
        if w <= h {
            (self.shortest_edge, (s * f64::from(h) / f64::from(w)) as u32)
        } else {
            ((s * f64::from(w) / f64::from(h)) as u32, self.shortest_edge)
        }
    }

    /// The bicubic short-side resize (u8, before the crop).
    pub fn resize(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = self.resized_size(img.width(), img.height());
        resize_rgb(img, w, h, Filter::Bicubic)
    }

    /// Full transform: resize, center crop, `x * (1/255)` in f64 then f32, `(x - mean) / std` in f32.
    pub fn apply(&self, img: &RgbImage) -> Planar {
        let resized = self.resize(img);
        let (rw, rh) = resized.dimensions();
        let c = self.crop;
        // The short side equals `shortest_edge` >= `crop`, so the crop always fits
        // (transformers' zero-padding branch is never taken).
        let top = (i64::from(rh) - i64::from(c)).div_euclid(2);
        let left = (i64::from(rw) - i64::from(c)).div_euclid(2);
        let n = (c * c) as usize;
        let mut data = vec![0f32; 3 * n];
        let raw = resized.as_raw();
        for y in 0..c as i64 {
            let sy = y + top;
            for x in 0..c as i64 {
                let sx = x + left;
                let inside = sy >= 0 && sx >= 0 && sy < i64::from(rh) && sx < i64::from(rw);
                for ch in 0..3 {
                    let v = if inside {
                        raw[((sy as usize) * rw as usize + sx as usize) * 3 + ch]
                    } else {
                        0
                    };
                    let scaled = (f64::from(v) * (1.0 / 255.0)) as f32;
                    data[ch * n + (y as usize) * c as usize + x as usize] =
                        (scaled - self.mean[ch]) / self.std[ch];
                }
            }
        }
        Planar {
            channels: 3,
            height: c as usize,
            width: c as usize,
            data,
        }
    }
}

/// SAM's `ResizeLongestSide` + `preprocess` (pixel mean/std in 0–255 units, pad after normalizing).
#[derive(Debug, Clone, PartialEq)]
pub struct SamTransform {
    /// Target of the long side and side of the padded square (`img_size`, 1024).
    pub target: u32,
    /// Per-channel pixel mean (0–255 units).
    pub mean: [f32; 3],
    /// Per-channel pixel std (0–255 units).
    pub std: [f32; 3],
}

impl Default for SamTransform {
    fn default() -> Self {
        SamTransform {
            target: 1024,
            mean: [123.675, 116.28, 103.53],
            std: [58.395, 57.12, 57.375],
        }
    }
}

impl SamTransform {
    /// Size (w, h) after the long-side resize: `int(side * target / long + 0.5)` in f64.
    pub fn resized_size(&self, w: u32, h: u32) -> (u32, u32) {
        let scale = f64::from(self.target) / f64::from(w.max(h));
        let nw = (f64::from(w) * scale + 0.5) as u32;
        let nh = (f64::from(h) * scale + 0.5) as u32;
        (nw.max(1), nh.max(1))
    }

    /// The bilinear long-side resize (u8, before normalization and padding).
    pub fn resize(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = self.resized_size(img.width(), img.height());
        resize_rgb(img, w, h, Filter::Bilinear)
    }

    /// [`Self::apply`]'s normalization and padding on `device`, from the resized frame
    /// ([`Self::resize`]): a byte per value crosses to a GPU instead of four. Bit-identical
    /// to `apply` (the same f32 subtraction and division, IEEE on either device).
    pub fn to_tensor(&self, resized: &RgbImage, device: &Device) -> candle_core::Result<Tensor> {
        let (w, h) = (resized.width() as usize, resized.height() as usize);
        let t = self.target as usize;
        let stat = |v: [f32; 3]| Tensor::from_slice(&v, (3, 1, 1), device);
        Tensor::from_slice(resized.as_raw(), (h, w, 3), device)?
            .to_dtype(DType::F32)?
            .permute((2, 0, 1))?
            .broadcast_sub(&stat(self.mean)?)?
            .broadcast_div(&stat(self.std)?)?
            .pad_with_zeros(1, 0, t - h)?
            .pad_with_zeros(2, 0, t - w)
    }

    /// Full transform to a `[3, target, target]` input; padded pixels are 0.
    pub fn apply(&self, img: &RgbImage) -> Planar {
        let resized = self.resize(img);
        let (rw, rh) = resized.dimensions();
        let t = self.target as usize;
        let n = t * t;
        let mut data = vec![0f32; 3 * n];
        for (x, y, p) in resized.enumerate_pixels() {
            for ch in 0..3 {
                data[ch * n + y as usize * t + x as usize] =
                    (f32::from(p.0[ch]) - self.mean[ch]) / self.std[ch];
            }
        }
        debug_assert!(rw as usize <= t && rh as usize <= t);
        Planar {
            channels: 3,
            height: t,
            width: t,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_sizes() {
        let t = ClipTransform::default();
        assert_eq!(t.resized_size(640, 480), (448, 336));
        assert_eq!(t.resized_size(480, 640), (336, 448));
        assert_eq!(t.resized_size(1, 1), (336, 336));
        assert_eq!(t.resized_size(1280, 720), (597, 336));
    }

    #[test]
    fn sam_sizes() {
        let t = SamTransform::default();
        assert_eq!(t.resized_size(1280, 720), (1024, 576));
        assert_eq!(t.resized_size(854, 480), (1024, 576));
        assert_eq!(t.resized_size(480, 854), (576, 1024));
        assert_eq!(t.resized_size(1, 1), (1024, 1024));
    }

    #[test]
    fn sam_normalization_on_a_device_equals_apply_bit_for_bit() {
        let t = SamTransform {
            target: 96,
            ..SamTransform::default()
        };
        for (w, h) in [(160, 90), (45, 80), (96, 96), (1, 1)] {
            let img = RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x * 37 + y) as u8, (y * 11) as u8, (x ^ (y * 3)) as u8])
            });
            let want = t.apply(&img);
            let got = t.to_tensor(&t.resize(&img), &Device::Cpu).unwrap();
            assert_eq!(got.dims(), want.shape());
            let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            let same = got
                .iter()
                .zip(&want.data)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{w}x{h}");
        }
    }

    #[test]
    fn sam_padding_is_zero() {
        let img = RgbImage::from_pixel(20, 10, image::Rgb([200, 100, 50]));
        let p = SamTransform::default().apply(&img);
        assert_eq!(p.shape(), [3, 1024, 1024]);
        assert_eq!(p.data[1023 * 1024], 0.0);
        assert!((p.data[0] - (200.0 - 123.675) / 58.395).abs() < 1e-6);
    }
}
