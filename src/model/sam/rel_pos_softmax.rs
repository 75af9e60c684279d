//! Fused `softmax(attn + rel_h + rel_w)` for SAM's attention on the CPU in f32: one pass and
//! one output buffer instead of two broadcast additions and a softmax, each of which allocates
//! a tensor as large as the score matrix (≈800 MB per ViT-B global block). Same arithmetic, in
//! the same order, as the unfused path.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

struct RelPosSoftmax {
    h: usize,
    w: usize,
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("rel-pos softmax needs contiguous inputs"),
    }
}

impl CustomOp3 for RelPosSoftmax {
    fn name(&self) -> &'static str {
        "sam-rel-pos-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (attn, rel_h, rel_w) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (h, w) = (self.h, self.w);
        let n = h * w;
        let mut out = vec![0f32; attn.len()];
        out.par_chunks_mut(n)
            .zip(attn.par_chunks(n))
            .enumerate()
            .for_each(|(row, (o, a))| {
                let rh = &rel_h[row * h..(row + 1) * h];
                let rw = &rel_w[row * w..(row + 1) * w];
                let mut max = f32::NEG_INFINITY;
                for kh in 0..h {
                    for kw in 0..w {
                        let v = a[kh * w + kw] + rh[kh] + rw[kw];
                        o[kh * w + kw] = v;
                        max = max.max(v);
                    }
                }
                let mut sum = 0f32;
                for v in o.iter_mut() {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                for v in o.iter_mut() {
                    *v /= sum;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `softmax(attn.view(B, h, w, h, w) + rel_h[..., None] + rel_w[..., None, :])` flattened back to
/// `[B, h·w, h·w]`, for contiguous f32 CPU tensors; `None` when another path must be used.
pub fn fused(
    attn: &Tensor,
    rel_h: &Tensor,
    rel_w: &Tensor,
    (h, w): (usize, usize),
) -> candle_core::Result<Option<Tensor>> {
    let cpu_f32 = [attn, rel_h, rel_w]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32);
    if !cpu_f32 {
        return Ok(None);
    }
    let (attn, rel_h, rel_w) = (attn.contiguous()?, rel_h.contiguous()?, rel_w.contiguous()?);
    Ok(Some(attn.apply_op3_no_bwd(
        &rel_h,
        &rel_w,
        &RelPosSoftmax { h, w },
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    #[test]
    fn fused_equals_unfused() {
        let dev = Device::Cpu;
        let (b, h, w) = (3, 4, 5);
        let attn = Tensor::randn(0f32, 2.0, (b, h * w, h * w), &dev).unwrap();
        let rel_h = Tensor::randn(0f32, 1.0, (b, h, w, h), &dev).unwrap();
        let rel_w = Tensor::randn(0f32, 1.0, (b, h, w, w), &dev).unwrap();
        let fused = fused(&attn, &rel_h, &rel_w, (h, w)).unwrap().unwrap();
        let plain = attn
            .reshape((b, h, w, h, w))
            .unwrap()
            .broadcast_add(&rel_h.unsqueeze(4).unwrap())
            .unwrap()
            .broadcast_add(&rel_w.unsqueeze(3).unwrap())
            .unwrap()
            .reshape((b, h * w, h * w))
            .unwrap();
        let plain = candle_nn::ops::softmax_last_dim(&plain).unwrap();
        let diff = (fused - &plain)
            .unwrap()
            .abs()
            .unwrap()
            .max_keepdim(D::Minus1)
            .unwrap();
        let m = diff
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(m < 1e-6, "{m}");
    }
}
