//! 2-D convolution on the CPU in f32 as matrix products: the patches of a band of output
//! pixels are laid out `[kh·kw·C_in, cols]` (kernel row, column, then channel: the order of
//! candle's own im2col, so each output sums its products in the order it did) by all threads, and
//! `weight · patches` runs through the `gemm` crate on all threads straight into the NCHW
//! output. candle's CPU path converts the input to NHWC on one thread,
//! divides per element while gathering and multiplies 512-pixel tiles, which left XMem's
//! ResNets and SAM's neck far from the GEMM peak. Nothing is zeroed on one thread: the patch
//! rows write their own padding, the GEMM writes every output, the bias is added by all threads;
//! convolutions to one or two planes (XMem's logit and shrinkage) skip the patch matrix.

mod winograd;

use crate::model::{matmul_into, with_host_slice, Strided};
use candle_core::{DType, Device, Storage, Tensor};
use rayon::prelude::*;

/// Patch-matrix elements of one band of output pixels (256 MB of f32): one band per image at
/// XMem's and SAM's sizes. Bands of 16 MB (under glibc's `mmap` threshold) made a 100-frame
/// full-size XMem++ run 2× slower: the GEMM runs far better on whole images.
const BAND_ELEMENTS: usize = 1 << 26;

/// Output planes up to which a stride-1 convolution skips the patch matrix ([`Geometry::direct`]).
const DIRECT_MAX_OUT: usize = 2;

/// The output buffer, written by tasks in disjoint rows or column bands.
struct OutPtr(*mut f32);
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// A weight `[C_out, C_in, kh, kw]` stored in the patch rows' order `[C_out, kh, kw, C_in]`
/// and seen through a permuted view of the same shape as before, so that [`conv2d`] uses it
/// without a copy per call; other devices and dtypes keep it as it is.
pub fn patch_layout(weight: &Tensor) -> candle_core::Result<Tensor> {
    if !weight.device().is_cpu() || weight.dtype() != DType::F32 || weight.rank() != 4 {
        return Ok(weight.clone());
    }
    weight.permute((0, 2, 3, 1))?.contiguous()?.permute((0, 3, 1, 2))
}

/// The Winograd transform `[16, C_out, C_in]` of a 3×3 f32 CPU weight `[C_out, C_in, 3, 3]`
/// for [`conv2d_with`], made once per weight (it is used on every frame); `None` for other
/// kernels, dtypes or devices.
pub fn winograd_filters(weight: &Tensor) -> candle_core::Result<Option<Tensor>> {
    let dims = weight.dims();
    if !cpu_f32(weight) || dims.len() != 4 || dims[2..] != [3, 3] {
        return Ok(None);
    }
    let (co, ci) = (dims[0], dims[1]);
    let patch_order = weight.permute((0, 2, 3, 1))?.contiguous()?;
    let u = with_host_slice(&patch_order, |wd| winograd::filters(wd, co, ci))?;
    Ok(Some(Tensor::from_vec(u, (16, co, ci), &Device::Cpu)?))
}

/// `conv2d(x, weight, padding, stride)` plus `bias` per output channel (no dilation, one
/// group) for f32 CPU tensors `x` `[B, C_in, H, W]` and `weight` `[C_out, C_in, kh, kw]`;
/// `None` for other dtypes or devices.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    padding: usize,
    stride: usize,
) -> candle_core::Result<Option<Tensor>> {
    conv2d_with(x, weight, None, bias, padding, stride)
}

/// [`conv2d`], by Winograd's F(2×2, 3×3) when given the weight's [`winograd_filters`] (3×3
/// kernels at stride 1 and padding 1; 2.25× fewer products, rounded in another order): XMem
/// opts in, SAM's neck keeps the patch-matrix arithmetic.
pub fn conv2d_with(
    x: &Tensor,
    weight: &Tensor,
    filters: Option<&Tensor>,
    bias: Option<&Tensor>,
    padding: usize,
    stride: usize,
) -> candle_core::Result<Option<Tensor>> {
    if !cpu_f32(x) || !cpu_f32(weight) || !bias.is_none_or(cpu_f32) || stride == 0 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    // [C_out, kh, kw, C_in]: the patch rows' order (see `patches`); free for weights stored
    // by `patch_layout`
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
    // checked before any work: a wrong bias is the caller's error, said once
    let bias = bias.map(|b| b.to_vec1::<f32>()).transpose()?;
    if let Some(n) = bias.as_ref().map(Vec::len).filter(|&n| n != co) {
        candle_core::bail!("conv2d: bias of {n} for {co} output channels");
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
    let filters = match filters {
        Some(_) if (kh, kw, stride, padding) != (3, 3, 1, 1) => candle_core::bail!(
            "conv2d: Winograd filters are for 3×3 kernels at stride 1 and padding 1, not {kh}×{kw} at stride \
             {stride} and padding {padding}"
        ),
        Some(u) if u.dims() == [16, co, c] => Some(u.contiguous()?),
        Some(u) => candle_core::bail!(
            "conv2d: Winograd filters {:?} for a weight of {co} outputs and {c} inputs (expected [16, {co}, {c}])",
            u.dims()
        ),
        None => None,
    };
    let us = filters.as_ref().map(|u| u.storage_and_layout());
    let ud = match &us {
        Some((s, l)) => Some(&f32_slice(s)?[l.start_offset()..]),
        None => None,
    };
    let mut out: Vec<f32> = Vec::with_capacity(b * co * p);
    let out_ptr = OutPtr(out.as_mut_ptr());
    for bi in 0..b {
        let img = &xd[bi * c * h * w..(bi + 1) * c * h * w];
        // SAFETY: image bi's outputs are `co·p` elements of `out`'s capacity from `bi·co·p`
        unsafe { g.image(img, wd, ud, co, out_ptr.at(bi * co * p)) };
    }
    drop((xs, ws, us));
    // SAFETY: every output element was written above
    unsafe { out.set_len(b * co * p) };
    if let Some(bias) = &bias {
        out.par_chunks_mut(p)
            .enumerate()
            .for_each(|(r, row)| row.iter_mut().for_each(|v| *v += bias[r % co]));
    }
    Ok(Some(Tensor::from_vec(out, (b, co, g.oh, g.ow), &Device::Cpu)?))
}

fn cpu_f32(t: &Tensor) -> bool {
    matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32
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
    /// The `co` output planes of one image `[C, H, W]` from the weight `[co, kh, kw, C]` into
    /// `dst` (`co · oh · ow` elements, written once each).
    ///
    /// # Safety
    /// `dst` must be valid for those writes and not be accessed by anyone else meanwhile.
    unsafe fn image(&self, img: &[f32], wd: &[f32], filters: Option<&[f32]>, co: usize, dst: *mut f32) {
        let p = self.oh * self.ow;
        let k = self.c * self.kh * self.kw;
        let gemm_into = |p0: usize, cols: usize, rhs: *const f32| {
            // dst[:, p0..p0+cols] = weight [co, K] · patches [K, cols]
            let (dst, w) = (dst.wrapping_add(p0), wd.as_ptr());
            let (dst, lhs) = (
                Strided {
                    ptr: dst,
                    row: p,
                    col: 1,
                },
                Strided {
                    ptr: w,
                    row: k,
                    col: 1,
                },
            );
            let rhs = Strided {
                ptr: rhs,
                row: cols,
                col: 1,
            };
            matmul_into((co, cols, k), dst, lhs, rhs, gemm::Parallelism::Rayon(0));
        };
        if self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0 {
            // the image is its own patch matrix
            gemm_into(0, p, img.as_ptr());
        } else if co <= DIRECT_MAX_OUT && self.stride == 1 {
            self.direct(img, wd, co, &OutPtr(dst));
        } else if let Some(u) = filters {
            winograd::conv3x3(img, (self.c, self.h, self.w), u, co, dst);
        } else {
            // bands of output pixels, one after the other, each built and multiplied on all threads
            let band = (BAND_ELEMENTS / k).max(16).min(p);
            for p0 in (0..p).step_by(band) {
                let cols = band.min(p - p0);
                gemm_into(p0, cols, self.patches(img, p0, cols).as_ptr());
            }
        }
    }

    /// Stride-1 convolution to a few output planes without a patch matrix (a product with one
    /// or two rows is bound by building the patches, not by arithmetic): each output row
    /// accumulates the kernel taps' shifted input rows, rows on all threads.
    fn direct(&self, img: &[f32], wd: &[f32], co: usize, dst: &OutPtr) {
        let (k, ow) = (self.c * self.kh * self.kw, self.ow);
        (0..co * self.oh).into_par_iter().for_each(|r| {
            let (o, oy) = (r / self.oh, r % self.oh);
            // SAFETY: output row r is this task's alone; zeroed before it is read
            let acc = unsafe {
                std::ptr::write_bytes(dst.at(r * ow), 0, ow);
                std::slice::from_raw_parts_mut(dst.at(r * ow), ow)
            };
            let taps = &wd[o * k..(o + 1) * k];
            for ky in 0..self.kh {
                let iy = (oy + ky).wrapping_sub(self.padding);
                if iy >= self.h {
                    continue;
                }
                for kx in 0..self.kw {
                    // output columns whose input column ox + kx − pad lies inside the image
                    let lo = self.padding.saturating_sub(kx);
                    let hi = (self.w + self.padding).saturating_sub(kx).min(ow);
                    if lo >= hi {
                        continue;
                    }
                    let src0 = iy * self.w + lo + kx - self.padding;
                    for ch in 0..self.c {
                        let wv = taps[(ky * self.kw + kx) * self.c + ch];
                        let src = &img[ch * self.h * self.w + src0..][..hi - lo];
                        for (a, &v) in acc[lo..hi].iter_mut().zip(src) {
                            *a += wv * v;
                        }
                    }
                }
            }
        });
    }

    /// Patch rows (ky, kx, channel) of output pixels `p0..p0 + cols` of one image `[C, H, W]`:
    /// `[kh·kw·C, cols]`, zero where the kernel reaches into the padding.
    fn patches(&self, img: &[f32], p0: usize, cols: usize) -> Vec<f32> {
        let n = self.c * self.kh * self.kw * cols;
        let mut m: Vec<f32> = Vec::with_capacity(n);
        let rows = RowsPtr(m.as_mut_ptr());
        // one task per channel: its kh·kw rows read the same plane while it is in cache
        (0..self.c).into_par_iter().for_each(|ch| {
            let plane = &img[ch * self.h * self.w..(ch + 1) * self.h * self.w];
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let r = (ky * self.kw + kx) * self.c + ch;
                    // SAFETY: row r of the capacity belongs to channel ch's task alone
                    unsafe { self.fill_row(plane, ky, kx, p0, rows.row(r, cols), cols) };
                }
            }
        });
        // SAFETY: every row was written above
        unsafe { m.set_len(n) };
        m
    }

    /// One patch row of `len` elements at `row`: input pixel (ky, kx) of the kernel for output
    /// pixels `p0..`, from the channel's `plane`, zero in the padding; the valid run of columns
    /// of each output row is one copy at stride 1, one strided gather otherwise.
    ///
    /// # Safety
    /// `row` must be valid for `len` writes (it may be uninitialized) and only written here.
    unsafe fn fill_row(&self, plane: &[f32], ky: usize, kx: usize, p0: usize, row: *mut f32, len: usize) {
        // output columns whose input column kx + ox·s − pad lies inside the image
        let ox_lo = self.padding.saturating_sub(kx).div_ceil(self.stride);
        let ox_hi = ((self.w + self.padding).saturating_sub(kx))
            .div_ceil(self.stride)
            .min(self.ow);
        let (p1, mut p) = (p0 + len, p0);
        while p < p1 {
            let (oy, ox0) = (p / self.ow, p % self.ow);
            let end = (p + self.ow - ox0).min(p1); // the rest of this output row
            let (seg, n) = (row.add(p - p0), end - p);
            let iy = (oy * self.stride + ky).wrapping_sub(self.padding);
            // the segment's elements [a, b) read the image, the others are padding
            let (a, b) = if iy < self.h {
                let a = ox0.max(ox_lo).min(ox0 + n) - ox0;
                (a, ((ox0 + n).min(ox_hi).max(ox0 + a)) - ox0)
            } else {
                (0, 0)
            };
            std::ptr::write_bytes(seg, 0, a);
            std::ptr::write_bytes(seg.add(b), 0, n - b);
            let src0 = (iy * self.w + (a + ox0) * self.stride + kx).wrapping_sub(self.padding);
            if a < b && self.stride == 1 {
                let src = &plane[src0..src0 + (b - a)];
                std::ptr::copy_nonoverlapping(src.as_ptr(), seg.add(a), b - a);
            } else if a < b {
                for j in 0..b - a {
                    seg.add(a + j).write(plane[src0 + j * self.stride]);
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
            // 3×3 stride 1 padding 1: Winograd F(2×2, 3×3)
            (8, 5, 3, 1, 1, 1, 1),
            (3, 4, 3, 1, 1, 2, 7),
            (16, 9, 3, 1, 1, 17, 15),
            // a few output planes: no patch matrix
            (6, 1, 3, 1, 1, 13, 10),
            (5, 2, 3, 1, 1, 9, 7),
            (4, 1, 7, 3, 1, 8, 12),
            (3, 2, 3, 0, 1, 6, 5),
        ];
        for (ci, co, k, pad, s, h, w) in cases {
            let x = Tensor::randn(0f32, 1.0, (2, ci, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (co, ci, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, co, &dev).unwrap();
            let filters = match (k, pad, s) {
                (3, 1, 1) => winograd_filters(&wt).unwrap(),
                _ => None,
            };
            let wt = patch_layout(&wt).unwrap();
            let ours = conv2d(&x, &wt, Some(&b), pad, s).unwrap().unwrap();
            let theirs = x.conv2d(&wt, pad, s, 1, 1).unwrap();
            let theirs = theirs.broadcast_add(&b.reshape((1, co, 1, 1)).unwrap()).unwrap();
            let worst = |ours: &Tensor| {
                assert_eq!(ours.dims(), theirs.dims());
                let d = (ours - &theirs).unwrap().abs().unwrap().flatten_all().unwrap();
                d.max(0).unwrap().to_scalar::<f32>().unwrap()
            };
            let mut m = worst(&ours);
            if let Some(u) = &filters {
                let wino = conv2d_with(&x, &wt, Some(u), Some(&b), pad, s).unwrap().unwrap();
                m = m.max(worst(&wino));
            }
            assert!(m < 1e-4, "case {:?}: {m}", (ci, co, k, pad, s, h, w));
        }
    }

    #[test]
    fn a_bias_of_the_wrong_length_is_an_error_naming_both_lengths() {
        let x = Tensor::zeros((1, 2, 5, 5), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((3, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        let e = conv2d(&x, &w, Some(&b), 1, 1).unwrap_err().to_string();
        assert!(e.contains("bias of 4 for 3 output channels"), "{e}");
    }

    #[test]
    fn winograd_filters_are_made_for_3x3_kernels_only_and_used_for_them_only() {
        let dev = Device::Cpu;
        let one = Tensor::zeros((4, 5, 1, 1), DType::F32, &dev).unwrap();
        assert!(winograd_filters(&one).unwrap().is_none());
        let x = Tensor::zeros((1, 5, 6, 6), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((4, 5, 3, 3), DType::F32, &dev).unwrap();
        let u = winograd_filters(&w).unwrap().unwrap();
        assert_eq!(u.dims(), [16, 4, 5]);
        let e = conv2d_with(&x, &w, Some(&u), None, 1, 2).unwrap_err().to_string();
        assert!(e.contains("not 3×3 at stride 2 and padding 1"), "{e}");
    }

    #[test]
    fn winograd_filters_of_another_weight_are_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 2, 5, 5), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((3, 2, 3, 3), DType::F32, &dev).unwrap();
        let other = Tensor::zeros((3, 3, 3, 3), DType::F32, &dev).unwrap();
        let u = winograd_filters(&other).unwrap().unwrap();
        let e = conv2d_with(&x, &w, Some(&u), None, 1, 1).unwrap_err().to_string();
        assert!(
            e.contains("[16, 3, 3]") && e.contains("expected [16, 3, 2]"),
            "{e}"
        );
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
