//! `nn.Linear`: `y = x · weightᵀ + bias`, with bf16 products on AMX tiles or through AVX-512
//! BF16 where the CPU has them (see [`crate::model::amx`], [`crate::model::dpbf16`]); everything
//! else goes through candle's matmul.

use crate::model::{amx, dpbf16};
use crate::weights::Loader;
use candle_core::{CpuStorage, DType, Module, Storage, Tensor};
use half::bf16;

/// A linear layer with the reference's field names (`weight` `[out, in]`, optional `bias`).
#[derive(Debug, Clone)]
pub struct Linear {
    /// `weight`, `[out_features, in_features]`.
    pub weight: Tensor,
    /// `bias`, `[out_features]`.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A layer from its tensors.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    /// The bf16 kernels' path (AMX, else AVX-512 BF16): bf16 input and weight on the CPU, one
    /// rounding after the bias (as oneDNN).
    fn forward_bf16(&self, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let usable = x.dtype() == DType::BF16
            && self.weight.dtype() == DType::BF16
            && x.device().is_cpu()
            && x.rank() >= 1;
        if !usable {
            return Ok(None);
        }
        let (n, k) = self.weight.dims2()?;
        let mut dims = x.dims().to_vec();
        if dims.last() != Some(&k) {
            return Ok(None); // candle's path reports the shape mismatch
        }
        let kernel = if amx::available() {
            amx::linear
        } else if dpbf16::available() && k.is_multiple_of(2) {
            dpbf16::linear
        } else {
            return Ok(None);
        };
        let m = x.elem_count() / k.max(1);
        let x = x.contiguous()?;
        let bias = match &self.bias {
            Some(b) => Some(b.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            None => None,
        };
        let out = {
            let (xs, xl) = x.storage_and_layout();
            let (ws, wl) = self.weight.storage_and_layout();
            let (Some(xr), Some(wr)) = (xl.contiguous_offsets(), wl.contiguous_offsets()) else {
                return Ok(None);
            };
            let (Storage::Cpu(CpuStorage::BF16(xv)), Storage::Cpu(CpuStorage::BF16(wv))) = (&*xs, &*ws)
            else {
                return Ok(None);
            };
            kernel(&xv[xr.0..xr.1], &wv[wr.0..wr.1], bias.as_deref(), (m, n, k))
        };
        *dims.last_mut().expect("rank ≥ 1") = n;
        Ok(Some(Tensor::from_vec::<_, bf16>(out, dims, x.device())?))
    }

    /// `x · weightᵀ`. A contiguous input of rank ≥ 3 is one `[rows, in]` product: candle
    /// multiplies it batch by batch against the broadcast weight, packing the whole weight
    /// again for each batch (1.7 ms for SAM's decoder MLP on 6 tokens, against 0.4 ms).
    fn product(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let plain = candle_nn::Linear::new(self.weight.clone(), None);
        if x.rank() < 3 || !x.is_contiguous() {
            return plain.forward(x);
        }
        let mut dims = x.dims().to_vec();
        let k = dims.pop().expect("rank ≥ 3");
        let rows = dims.iter().product::<usize>();
        let y = plain.forward(&x.reshape((rows, k))?)?;
        dims.push(y.dim(1)?);
        y.reshape(dims)
    }
}

/// `len` bf16 values in [−1, 1) from a linear congruential sequence: the bf16 kernels' test
/// operands.
#[cfg(test)]
pub(crate) fn bf16_values(len: usize, seed: u32) -> Vec<bf16> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            bf16::from_f32((s >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0)
        })
        .collect()
}

/// `Linear(d_in → d_out)` loading on a checkpoint view (`weight` `[d_out, d_in]`, `bias`).
pub trait LoadLinear {
    /// The layer under `s`, with or without bias, shapes checked.
    fn linear(&self, s: &str, d_in: usize, d_out: usize, bias: bool) -> crate::error::Result<Linear>;
}

impl LoadLinear for Loader {
    fn linear(&self, s: &str, d_in: usize, d_out: usize, bias: bool) -> crate::error::Result<Linear> {
        let l = self.pp(s);
        let w = l.get("weight", &[d_out, d_in])?;
        let b = if bias {
            Some(l.get("bias", &[d_out])?)
        } else {
            None
        };
        Ok(Linear::new(w, b))
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(y) = self.forward_bf16(x)? {
            return Ok(y);
        }
        let y = self.product(x)?;
        match &self.bias {
            Some(b) => add_bias(y, b),
            None => Ok(y),
        }
    }
}

/// `y + bias` over the last axis. A fresh contiguous f32 CPU product gets the bias added in
/// place on all threads (the same f32 sums as a broadcast add, without a second output and
/// its page faults); anything else goes through candle.
fn add_bias(y: Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    struct AddRows;
    impl candle_core::InplaceOp2 for AddRows {
        fn name(&self) -> &'static str {
            "add-bias-rows"
        }
        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &candle_core::Layout,
            s2: &CpuStorage,
            l2: &candle_core::Layout,
        ) -> candle_core::Result<()> {
            use rayon::prelude::*;
            let ((a0, a1), (b0, b1)) = (
                l1.contiguous_offsets().expect("checked contiguous"),
                l2.contiguous_offsets().expect("checked contiguous"),
            );
            let bias = &s2.as_slice::<f32>()?[b0..b1];
            let CpuStorage::F32(out) = s1 else {
                candle_core::bail!("add-bias-rows: f32 storage expected");
            };
            let rows_per_task = (1 << 14) / bias.len().max(1) + 1;
            out[a0..a1]
                .par_chunks_mut(rows_per_task * bias.len())
                .for_each(|chunk| {
                    for row in chunk.chunks_exact_mut(bias.len()) {
                        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                    }
                });
            Ok(())
        }
    }
    let in_place = y.device().is_cpu()
        && y.dtype() == DType::F32
        && bias.dtype() == DType::F32
        && y.is_contiguous()
        && bias.is_contiguous()
        && bias.dims1().ok() == y.dims().last().copied()
        && bias.elem_count() > 0;
    if in_place {
        y.inplace_op2(bias, &AddRows)?;
        return Ok(y);
    }
    y.broadcast_add(bias)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bits of an f32 tensor's values, to compare results exactly.
    fn bits(t: &Tensor) -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    }
    use candle_core::Device;

    /// The in-place bias add equals candle's broadcast add bit for bit, on 2-d and 3-d inputs.
    #[test]
    fn bias_added_in_place_equals_the_broadcast_add() {
        let dev = Device::Cpu;
        for shape in [&[37usize, 50][..], &[2, 37, 50], &[0, 50]] {
            let mut x_shape = shape.to_vec();
            *x_shape.last_mut().unwrap() = 96;
            let x = Tensor::randn(0f32, 1.0, x_shape, &dev).unwrap();
            let w = Tensor::randn(0f32, 0.1, (50, 96), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, 50, &dev).unwrap();
            let ours = Linear::new(w.clone(), Some(b.clone())).forward(&x).unwrap();
            let want = candle_nn::Linear::new(w, Some(b)).forward(&x).unwrap();
            assert_eq!(ours.dims(), shape);
            assert_eq!(bits(&ours), bits(&want));
        }
    }

    /// Rank-3 and rank-4 inputs through one flattened product: the same bits as candle's
    /// batched product (each output sums the same products in the same order), for a few
    /// rows per batch (SAM's decoder tokens) and many (image tokens); strided inputs too.
    #[test]
    fn flattened_product_equals_candles_batched_one() {
        let dev = Device::Cpu;
        for (dims, k, n) in [
            (vec![2, 6], 2048, 256),
            (vec![2, 6], 256, 2048),
            (vec![2, 300], 256, 128),
            (vec![2, 3, 5], 64, 40),
            (vec![1, 577], 1024, 96),
        ] {
            let mut shape = dims.clone();
            shape.push(k);
            let x = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
            let ours = Linear::new(w.clone(), None).forward(&x).unwrap();
            let want = candle_nn::Linear::new(w, None).forward(&x).unwrap();
            assert_eq!(ours.dims(), want.dims());
            assert_eq!(bits(&ours), bits(&want), "{dims:?} × {k} → {n}");
        }
        // empty inputs (candle's own batched path cannot reshape one without rows): empty or
        // zero outputs of the right shape
        for (shape, n) in [((2, 0, 8), 4), ((0, 3, 8), 4), ((2, 3, 0), 4)] {
            let x = Tensor::zeros(shape, DType::F32, &dev).unwrap();
            let w = Tensor::zeros((n, shape.2), DType::F32, &dev).unwrap();
            let ours = Linear::new(w, None).forward(&x).unwrap();
            assert_eq!(ours.dims(), &[shape.0, shape.1, n], "{shape:?}");
            assert!(bits(&ours).iter().all(|&b| b == 0), "{shape:?}");
        }
        // a transposed (strided) input keeps candle's path
        let x = Tensor::randn(0f32, 1.0, (2, 16, 8), &dev)
            .unwrap()
            .transpose(1, 2)
            .unwrap();
        let w = Tensor::randn(0f32, 0.05, (4, 16), &dev).unwrap();
        let ours = Linear::new(w.clone(), None).forward(&x).unwrap();
        assert_eq!(ours.dims(), &[2, 8, 4]);
        assert_eq!(
            crate::model::max_diff(&ours, &candle_nn::Linear::new(w, None).forward(&x).unwrap()),
            0.0
        );
    }

    /// The bf16 kernels' path against the same arithmetic in f32 (products of the bf16 values
    /// summed in f32, the bias added, rounded once) on a 3-d input: one bf16 rounding apart at
    /// most, measured against the output's typical size where the bias cancels the product.
    #[test]
    fn bf16_kernel_path_rounds_once_after_the_bias() {
        let dev = Device::Cpu;
        let bf = |t: Tensor| t.to_dtype(DType::BF16).unwrap();
        let x = bf(Tensor::randn(0f32, 1.0, (2, 37, 96), &dev).unwrap());
        let w = bf(Tensor::randn(0f32, 0.1, (50, 96), &dev).unwrap());
        let b = bf(Tensor::randn(0f32, 1.0, 50, &dev).unwrap());
        let Some(fast) = Linear::new(w.clone(), Some(b.clone())).forward_bf16(&x).unwrap() else {
            eprintln!("neither AMX nor AVX-512 BF16 on this CPU: only candle's path is used");
            return;
        };
        let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let want = Linear::new(f32(&w), Some(f32(&b))).forward(&f32(&x)).unwrap();
        let want = f32(&bf(want));
        assert_eq!(fast.dims(), want.dims());
        let mean = want
            .abs()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let worst = crate::model::max_diff(&fast, &want) / mean;
        println!("bf16 kernel linear vs f32 sums rounded once: max difference {worst:.2e} of the mean |y|");
        assert!(worst <= 4.0 * 2f32.powi(-8), "{worst}");
    }
}
