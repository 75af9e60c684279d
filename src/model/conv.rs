//! 2-D convolution on the CPU in f32 as matrix products: the patches of a band of output
//! pixels are laid out `[kh·kw·C_in, cols]` (kernel row, column, then channel: the order of
//! candle's own im2col, so each output sums its products in the order it did) by all threads, and
//! `weight · patches` runs through the `gemm` crate on all threads straight into the NCHW
//! output. candle's CPU path converts the input to NHWC on one thread,
//! divides per element while gathering and multiplies 512-pixel tiles, which left XMem's
//! ResNets and SAM's neck far from the GEMM peak.

use crate::model::{matmul_into, Strided};
use candle_core::{DType, Device, Storage, Tensor};
use rayon::prelude::*;

/// Patch-matrix elements of one band of output pixels (256 MB of f32): one band per image at
/// XMem's and SAM's sizes. Bands of 16 MB (under glibc's `mmap` threshold) made a 100-frame
/// full-size XMem++ run 2× slower: the GEMM runs far better on whole images.
const BAND_ELEMENTS: usize = 1 << 26;

/// The output buffer, written by tasks in disjoint column bands.
struct OutPtr(*mut f32);
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// `conv2d(x, weight, padding, stride)` (no dilation, one group) for f32 CPU tensors `x`
/// `[B, C_in, H, W]` and `weight` `[C_out, C_in, kh, kw]`; `None` for other dtypes or devices.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    padding: usize,
    stride: usize,
) -> candle_core::Result<Option<Tensor>> {
    let cpu_f32 = |t: &Tensor| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32;
    if !cpu_f32(x) || !cpu_f32(weight) || stride == 0 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    // [C_out, kh, kw, C_in]: the patch rows' order (see `patches`)
    let weight = weight.permute((0, 2, 3, 1))?.contiguous()?;
    let (b, c, h, w) = x.dims4()?;
    let (co, kh, kw, ci) = weight.dims4()?;
    if ci != c || h + 2 * padding < kh || w + 2 * padding < kw {
        candle_core::bail!(
            "conv2d: input {:?} does not fit weight {:?} (padding {padding})",
            x.dims(),
            weight.dims()
        );
    }
    let g = Geometry {
        c,
        h,
        w,
        kh,
        kw,
        padding,
        stride,
        oh: (h + 2 * padding - kh) / stride + 1,
        ow: (w + 2 * padding - kw) / stride + 1,
    };
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = weight.storage_and_layout();
    let (xd, wd) = (f32_slice(&xs)?, f32_slice(&ws)?);
    let (xd, wd) = (&xd[xl.start_offset()..], &wd[wl.start_offset()..]);
    let p = g.oh * g.ow;
    let k = c * kh * kw;
    let mut out = vec![0f32; b * co * p];
    let out_ptr = OutPtr(out.as_mut_ptr());
    let gemm_into = |bi: usize, p0: usize, cols: usize, rhs: *const f32, rhs_rs: usize, par| {
        // out[bi, :, p0..p0+cols] = weight [C_out, K] · patches [K, cols]
        let dst = out_ptr.at(bi * co * p + p0);
        unsafe {
            matmul_into(
                (co, cols, k),
                Strided {
                    ptr: dst,
                    row: p,
                    col: 1,
                },
                Strided {
                    ptr: wd.as_ptr(),
                    row: k,
                    col: 1,
                },
                Strided {
                    ptr: rhs,
                    row: rhs_rs,
                    col: 1,
                },
                par,
            );
        }
    };
    if kh == 1 && kw == 1 && stride == 1 && padding == 0 {
        // the image is its own patch matrix
        for bi in 0..b {
            gemm_into(
                bi,
                0,
                p,
                xd[bi * c * h * w..].as_ptr(),
                p,
                gemm::Parallelism::Rayon(0),
            );
        }
    } else {
        // bands of output pixels, one after the other, each built and multiplied on all threads
        let band = (BAND_ELEMENTS / k).max(16).min(p);
        for bi in 0..b {
            let img = &xd[bi * c * h * w..(bi + 1) * c * h * w];
            for p0 in (0..p).step_by(band) {
                let cols = band.min(p - p0);
                let m = g.patches(img, p0, cols);
                gemm_into(bi, p0, cols, m.as_ptr(), cols, gemm::Parallelism::Rayon(0));
            }
        }
    }
    drop((xs, ws));
    Ok(Some(Tensor::from_vec(out, (b, co, g.oh, g.ow), &Device::Cpu)?))
}

fn f32_slice(s: &Storage) -> candle_core::Result<&[f32]> {
    match s {
        Storage::Cpu(c) => c.as_slice::<f32>(),
        _ => candle_core::bail!("conv2d: CPU storage expected"),
    }
}

struct Geometry {
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    padding: usize,
    stride: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    /// Patch rows (ky, kx, channel) of output pixels `p0..p0 + cols` of one image `[C, H, W]`:
    /// `[kh·kw·C, cols]`, zero where the kernel reaches into the padding.
    fn patches(&self, img: &[f32], p0: usize, cols: usize) -> Vec<f32> {
        let mut m = vec![0f32; self.c * self.kh * self.kw * cols];
        let rows = RowsPtr(m.as_mut_ptr());
        // one task per channel: its kh·kw rows read the same plane while it is in cache
        (0..self.c).into_par_iter().for_each(|ch| {
            let plane = &img[ch * self.h * self.w..(ch + 1) * self.h * self.w];
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let r = (ky * self.kw + kx) * self.c + ch;
                    // SAFETY: row r belongs to channel ch's task alone
                    let row = unsafe { std::slice::from_raw_parts_mut(rows.row(r, cols), cols) };
                    self.fill_row(plane, ky, kx, p0, row);
                }
            }
        });
        m
    }

    /// One patch row: input pixel (ky, kx) of the kernel for output pixels `p0..`, from the
    /// channel's `plane`; the valid run of columns of each output row is one copy at stride 1,
    /// one strided gather otherwise.
    fn fill_row(&self, plane: &[f32], ky: usize, kx: usize, p0: usize, row: &mut [f32]) {
        // output columns whose input column kx + ox·s − pad lies inside the image
        let ox_lo = self.padding.saturating_sub(kx).div_ceil(self.stride);
        let ox_hi = ((self.w + self.padding).saturating_sub(kx))
            .div_ceil(self.stride)
            .min(self.ow);
        let (p1, mut p) = (p0 + row.len(), p0);
        while p < p1 {
            let (oy, ox0) = (p / self.ow, p % self.ow);
            let end = (p + self.ow - ox0).min(p1); // the rest of this output row
            let iy = (oy * self.stride + ky).wrapping_sub(self.padding);
            if iy < self.h {
                let (a, b) = (ox0.max(ox_lo), (end - p + ox0).min(ox_hi));
                if a < b {
                    let dst = &mut row[p - p0 + a - ox0..p - p0 + b - ox0];
                    let src0 = iy * self.w + a * self.stride + kx - self.padding;
                    if self.stride == 1 {
                        dst.copy_from_slice(&plane[src0..src0 + (b - a)]);
                    } else {
                        for (j, v) in dst.iter_mut().enumerate() {
                            *v = plane[src0 + j * self.stride];
                        }
                    }
                }
            }
            p = end;
        }
    }
}

/// The patch matrix, its rows filled by per-channel tasks.
struct RowsPtr(*mut f32);
unsafe impl Send for RowsPtr {}
unsafe impl Sync for RowsPtr {}

impl RowsPtr {
    fn row(&self, r: usize, cols: usize) -> *mut f32 {
        self.0.wrapping_add(r * cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_candle_conv2d_for_every_kind_the_models_use() {
        let dev = Device::Cpu;
        // (C_in, C_out, k, padding, stride, H, W): 1×1, 3×3 same, 7×7 s2 (ResNet stem),
        // 16×16 s16 (patch embedding), 2×2 s2, odd sizes
        let cases = [
            (5, 7, 1, 0, 1, 9, 11),
            (6, 4, 3, 1, 1, 13, 10),
            (3, 8, 7, 3, 2, 21, 17),
            (3, 5, 16, 0, 16, 32, 48),
            (4, 6, 2, 0, 2, 12, 14),
            (4, 6, 3, 1, 2, 15, 9),
            (2, 3, 1, 0, 2, 7, 8),
            (3, 4, 3, 2, 3, 11, 13),
            (2, 3, 5, 1, 1, 4, 6),
        ];
        for (ci, co, k, pad, s, h, w) in cases {
            let x = Tensor::randn(0f32, 1.0, (2, ci, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (co, ci, k, k), &dev).unwrap();
            let ours = conv2d(&x, &wt, pad, s).unwrap().unwrap();
            let theirs = x.conv2d(&wt, pad, s, 1, 1).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let m = (ours - theirs)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap();
            let m = m.to_scalar::<f32>().unwrap();
            assert!(m < 1e-4, "case {:?}: {m}", (ci, co, k, pad, s, h, w));
        }
    }

    #[test]
    fn a_band_of_columns_equals_that_part_of_the_whole_patch_matrix() {
        let g = Geometry {
            c: 2,
            h: 7,
            w: 9,
            kh: 3,
            kw: 3,
            padding: 1,
            stride: 2,
            oh: 4,
            ow: 5,
        };
        let img: Vec<f32> = (0..2 * 7 * 9).map(|v| v as f32).collect();
        let whole = g.patches(&img, 0, 20);
        let band = g.patches(&img, 3, 11);
        for r in 0..18 {
            assert_eq!(
                &band[r * 11..(r + 1) * 11],
                &whole[r * 20 + 3..r * 20 + 14],
                "row {r}"
            );
        }
    }
}
