//! Resampling on the CPU with all threads and the reference's arithmetic: bilinear resizes
//! (candle's and PyTorch's `align_corners=False` formula in f64, so the same bits) and the
//! ResNet stem's 3×3 stride-2 max pool. candle runs both on one thread.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

/// `upsample_bilinear2d(h, w, align_corners=false)`, on all threads for f32 CPU tensors.
pub fn upsample_bilinear(x: &Tensor, h: usize, w: usize) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 4 {
        upsample_bilinear_cropped(x, (h, w), (h, w))
    } else {
        x.upsample_bilinear2d(h, w, false)
    }
}

/// One axis of a bilinear resize (`align_corners=False`, no scale factor) as candle and
/// PyTorch compute it: per output position the two source indices and the weight of the
/// second, in f64.
pub(crate) fn bilinear_taps(size_in: usize, size_out: usize, keep: usize) -> Vec<(usize, usize, f64)> {
    let scale = size_in as f64 / size_out as f64;
    (0..keep)
        .map(|o| {
            let src = (scale * (o as f64 + 0.5) - 0.5).max(0.0);
            let i0 = src.floor() as usize;
            (i0, (i0 + 1).min(size_in - 1), (src - i0 as f64).clamp(0.0, 1.0))
        })
        .collect()
}

/// f32 `[B, C, h, w]` resized bilinearly to `size` and cropped to its top-left `keep` (rows,
/// columns): only the kept pixels are computed, each with candle's `upsample_bilinear2d`
/// arithmetic (f64, the same operations in the same order, so the same bits), planes and rows
/// on all threads.
pub fn upsample_bilinear_cropped(
    x: &Tensor,
    size: (usize, usize),
    keep: (usize, usize),
) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if h == 0 || w == 0 || keep.0 == 0 || keep.1 == 0 {
        let m = x.upsample_bilinear2d(size.0, size.1, false)?;
        return m.narrow(2, 0, keep.0)?.narrow(3, 0, keep.1)?.contiguous();
    }
    let (rows, cols) = (bilinear_taps(h, size.0, keep.0), bilinear_taps(w, size.1, keep.1));
    let mut out = vec![0f32; b * c * keep.0 * keep.1];
    // the input is read in place (a copy of it before)
    crate::model::with_host_slice(&x.contiguous()?, |src| {
        out.par_chunks_mut(keep.1).enumerate().for_each(|(r, dst)| {
            let (plane, y) = (r / keep.0, r % keep.0);
            let p = &src[plane * h * w..(plane + 1) * h * w];
            let (y0, y1, wy) = rows[y];
            let (top, bottom) = (&p[y0 * w..(y0 + 1) * w], &p[y1 * w..(y1 + 1) * w]);
            for (d, &(x0, x1, wx)) in dst.iter_mut().zip(&cols) {
                let t = top[x0] as f64 * (1.0 - wx) + top[x1] as f64 * wx;
                let u = bottom[x0] as f64 * (1.0 - wx) + bottom[x1] as f64 * wx;
                *d = (t * (1.0 - wy) + u * wy) as f32;
            }
        });
    })?;
    Tensor::from_vec(out, (b, c, keep.0, keep.1), x.device())
}

/// `nn.MaxPool2d(3, stride=2, padding=1)` of `[B, C, H, W]`: every output is the largest of
/// the window's pixels inside the image (the padding never wins); output rows on all threads
/// for f32 CPU tensors, candle's pool over an explicitly padded copy otherwise.
pub fn max_pool_3x3_s2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if !x.device().is_cpu() || x.dtype() != DType::F32 || h == 0 || w == 0 {
        let row = Tensor::full(f32::NEG_INFINITY, (b, c, 1, w), x.device())?.to_dtype(x.dtype())?;
        let x = Tensor::cat(&[&row, x, &row], 2)?;
        let col = Tensor::full(f32::NEG_INFINITY, (b, c, h + 2, 1), x.device())?.to_dtype(x.dtype())?;
        let x = Tensor::cat(&[&col, &x, &col], 3)?;
        return x.max_pool2d_with_stride(3, 2);
    }
    let (oh, ow) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
    let src = x.contiguous()?;
    let mut out = vec![0f32; b * c * oh * ow];
    crate::model::with_host_slice(&src, |src| {
        out.par_chunks_mut(ow).enumerate().for_each(|(r, dst)| {
            let (plane, oy) = (r / oh, r % oh);
            let p = &src[plane * h * w..(plane + 1) * h * w];
            let rows = (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h);
            for (ox, d) in dst.iter_mut().enumerate() {
                let cols = (2 * ox).saturating_sub(1)..(2 * ox + 2).min(w);
                // candle's scan over the padded window: from its first pixel (padding: −∞),
                // replaced by each larger one
                let mut m = if 2 * oy >= 1 && 2 * ox >= 1 {
                    p[(2 * oy - 1) * w + 2 * ox - 1]
                } else {
                    f32::NEG_INFINITY
                };
                for y in rows.clone() {
                    for &v in &p[y * w + cols.start..y * w + cols.end] {
                        if m < v {
                            m = v;
                        }
                    }
                }
                *d = m;
            }
        });
    })?;
    Tensor::from_vec(out, (b, c, oh, ow), x.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The cropped resize equals candle's resize then crop bit for bit: up (the 256² → 1024²
    /// step), down (→ the frame), identity, and sizes that do not divide.
    #[test]
    fn cropped_bilinear_equals_resize_then_crop() {
        let x = Tensor::randn(0f32, 3.0, (2, 3, 17, 23), &Device::Cpu).unwrap();
        for (size, keep) in [
            ((64, 80), (40, 80)),
            ((9, 11), (9, 11)),
            ((17, 23), (17, 20)),
            ((50, 7), (3, 7)),
        ] {
            let ours = upsample_bilinear_cropped(&x, size, keep).unwrap();
            let theirs = x.upsample_bilinear2d(size.0, size.1, false).unwrap();
            let theirs = theirs.narrow(2, 0, keep.0).unwrap().narrow(3, 0, keep.1).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert_eq!(crate::model::max_diff(&ours, &theirs), 0.0, "{size:?} {keep:?}");
        }
    }

    #[test]
    fn max_pool_equals_candles_on_a_padded_copy() {
        for (h, w) in [(9, 11), (8, 8), (1, 1), (2, 5), (16, 7)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &Device::Cpu).unwrap();
            let row = Tensor::full(f32::NEG_INFINITY, (2, 3, 1, w), &Device::Cpu).unwrap();
            let p = Tensor::cat(&[&row, &x, &row], 2).unwrap();
            let col = Tensor::full(f32::NEG_INFINITY, (2, 3, h + 2, 1), &Device::Cpu).unwrap();
            let p = Tensor::cat(&[&col, &p, &col], 3).unwrap();
            let theirs = p.max_pool2d_with_stride(3, 2).unwrap();
            let ours = max_pool_3x3_s2(&x).unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "{h}x{w}");
            assert_eq!(crate::model::max_diff(&ours, &theirs), 0.0, "{h}x{w}");
        }
    }
}
