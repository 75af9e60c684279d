//! The networks, one module per reference component, with struct fields named after the
//! reference state-dict entries.

pub mod activation;
pub mod amx;
pub mod attention;
pub mod clip;
pub mod conv;
pub mod dpbf16;
mod exp;
pub mod linear;
pub mod phi3;
pub mod resample;
pub mod sam;
pub mod videolisa;
pub mod xmem;

pub use activation::{gelu_erf, quick_gelu};
use candle_core::{DType, Device, Module, Tensor};
use serde::Deserialize;

/// What kind of checkpoint a `config.json` describes, read before its full config so that a
/// CLIP tower given as `--model` (or VideoLISA as `--clip`) is named as such.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigKind {
    /// `model_type` (`llava_phi`, `clip`, `clip_vision_model`, ...).
    #[serde(default)]
    pub model_type: String,
    /// A `CLIPModel` config's vision part.
    #[serde(default)]
    pub vision_config: Option<serde_json::Value>,
    /// LLaVA's projector: only VideoLISA-style checkpoints have one.
    #[serde(default)]
    pub mm_projector_type: Option<serde_json::Value>,
}

impl ConfigKind {
    /// A CLIP config (a `CLIPModel` or a vision tower).
    pub fn is_clip(&self) -> bool {
        self.model_type.starts_with("clip") || self.vision_config.is_some()
    }

    /// A LLaVA / VideoLISA config.
    pub fn is_videolisa(&self) -> bool {
        self.mm_projector_type.is_some()
    }
}

/// Softmax over the last axis with f32 accumulation for half-precision inputs (PyTorch's CPU
/// and CUDA softmax accumulate in f32 and round the result once).
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    match x.dtype() {
        DType::BF16 | DType::F16 => {
            candle_nn::ops::softmax_last_dim(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())
        }
        _ => candle_nn::ops::softmax_last_dim(x),
    }
}

/// `a + b` for tensors of one shape. Contiguous bf16 CPU tensors take one parallel pass, each
/// sum formed in f32 and rounded once to nearest-even (PyTorch's bf16 add); candle's own bf16
/// add calls a conversion function per 8 values (9 % of the bf16 LLM's time). Anything else
/// goes through candle.
pub fn add(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    struct AddBf16;
    impl candle_core::CustomOp2 for AddBf16 {
        fn name(&self) -> &'static str {
            "add-bf16"
        }
        fn cpu_fwd(
            &self,
            s1: &candle_core::CpuStorage,
            l1: &candle_core::Layout,
            s2: &candle_core::CpuStorage,
            l2: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            use rayon::prelude::*;
            let ((a0, a1), (b0, b1)) = (
                l1.contiguous_offsets().expect("checked contiguous"),
                l2.contiguous_offsets().expect("checked contiguous"),
            );
            let (x, y) = (
                &s1.as_slice::<half::bf16>()?[a0..a1],
                &s2.as_slice::<half::bf16>()?[b0..b1],
            );
            let mut out = vec![half::bf16::ZERO; x.len()];
            out.par_chunks_mut(1 << 14)
                .zip(x.par_chunks(1 << 14).zip(y.par_chunks(1 << 14)))
                .for_each(|(o, (x, y))| {
                    for ((o, x), y) in o.iter_mut().zip(x).zip(y) {
                        *o = half::bf16::from_f32(x.to_f32() + y.to_f32());
                    }
                });
            Ok((candle_core::CpuStorage::BF16(out), l1.shape().clone()))
        }
    }
    let fused = a.device().is_cpu()
        && a.dtype() == DType::BF16
        && b.dtype() == DType::BF16
        && a.dims() == b.dims()
        && a.is_contiguous()
        && b.is_contiguous();
    if fused {
        return a.apply_op2_no_bwd(b, &AddBf16);
    }
    a + b
}

/// A strided f32 matrix for [`matmul_into`]: its first element and the steps between rows and
/// between columns (in elements).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strided<P> {
    pub ptr: P,
    pub row: usize,
    pub col: usize,
}

/// `dst = lhs · rhs` (`m × k` times `k × n`) on raw strided f32 data through the `gemm` crate,
/// for the CPU kernels that read tensors in place.
///
/// # Safety
/// Each pointer must cover its matrix's strided extent, and `dst` must not overlap the inputs
/// or be written by anyone else meanwhile.
pub(crate) unsafe fn matmul_into(
    (m, n, k): (usize, usize, usize),
    dst: Strided<*mut f32>,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    parallelism: gemm::Parallelism,
) {
    let i = |v: usize| v as isize;
    gemm::gemm(
        m,
        n,
        k,
        dst.ptr,
        i(dst.col),
        i(dst.row),
        false,
        lhs.ptr,
        i(lhs.col),
        i(lhs.row),
        rhs.ptr,
        i(rhs.col),
        i(rhs.row),
        0f32,
        1f32,
        false,
        false,
        false,
        parallelism,
    );
}

/// Runs `f` on the f32 values of `t` in row-major order, borrowing them where `t` is a
/// contiguous f32 CPU tensor and copying otherwise.
pub(crate) fn with_host_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    if t.dtype() == DType::F32 && t.is_contiguous() {
        let (storage, layout) = t.storage_and_layout();
        if let candle_core::Storage::Cpu(cpu) = &*storage {
            let data: &[f32] = cpu.as_slice()?;
            let start = layout.start_offset();
            return Ok(f(&data[start..start + t.elem_count()]));
        }
    }
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(f(&v))
}

/// `x.transpose(D-2, D-1).contiguous()`: for f32 CPU tensors a tiled copy on all threads
/// (candle's strided copy walks the destination one element at a time, a tenth of a second
/// for an image-embedding-sized tensor); the same values either way.
pub fn transpose_last2(x: &Tensor) -> candle_core::Result<Tensor> {
    let rank = x.rank();
    if !(x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous() && rank >= 2) {
        return x.transpose(rank - 2, rank - 1)?.contiguous();
    }
    let (r, c) = (x.dim(rank - 2)?, x.dim(rank - 1)?);
    let mut out = vec![0f32; x.elem_count()];
    const TILE: usize = 32;
    use rayon::prelude::*;
    if r * c > 0 {
        // per matrix, one task per band of TILE destination rows
        with_host_slice(x, |src| {
            out.par_chunks_mut(r * c)
                .zip(src.par_chunks(r * c))
                .for_each(|(o, a)| {
                    o.par_chunks_mut(TILE * r).enumerate().for_each(|(band, dst)| {
                        let j0 = band * TILE;
                        for i0 in (0..r).step_by(TILE) {
                            for (jj, d) in dst.chunks_mut(r).enumerate() {
                                for (i, v) in d.iter_mut().enumerate().take((i0 + TILE).min(r)).skip(i0) {
                                    *v = a[i * c + j0 + jj];
                                }
                            }
                        }
                    })
                })
        })?;
    }
    let mut dims = x.dims().to_vec();
    dims.swap(rank - 2, rank - 1);
    Tensor::from_vec(out, dims, x.device())
}

/// `mean(dim, keepdim=True)` with f32 accumulation for half-precision inputs, rounded once.
pub fn mean_keepdim(x: &Tensor, dim: usize) -> candle_core::Result<Tensor> {
    match x.dtype() {
        DType::BF16 | DType::F16 => x.to_dtype(DType::F32)?.mean_keepdim(dim)?.to_dtype(x.dtype()),
        _ => x.mean_keepdim(dim),
    }
}

/// The dtype normalisations and post-processing compute in: f64 stays f64, everything else
/// (f32, bf16, f16) works in f32, as PyTorch upcasts.
pub fn work_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Parses a `--dtype`-style name.
pub fn parse_dtype(s: &str) -> Option<DType> {
    match s {
        "f32" | "float32" => Some(DType::F32),
        "bf16" | "bfloat16" => Some(DType::BF16),
        "f16" | "float16" => Some(DType::F16),
        _ => None,
    }
}

/// `conv2d` that also works for bf16 on the CPU (candle's CPU im2col gemm lacks bf16): the
/// convolution runs in f32 there and the result is rounded back, which is what PyTorch's CPU
/// bf16 convolution returns up to accumulation order. f32 on the CPU goes through
/// [`conv::conv2d`] (one patch matrix and one GEMM per image).
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    padding: usize,
    stride: usize,
) -> candle_core::Result<Tensor> {
    let dtype = x.dtype();
    let upcast = dtype == DType::BF16 && matches!(x.device(), Device::Cpu);
    let (x, w) = if upcast {
        (x.to_dtype(DType::F32)?, weight.to_dtype(DType::F32)?)
    } else {
        (x.clone(), weight.clone())
    };
    let bias = bias.map(|b| b.to_dtype(x.dtype())).transpose()?;
    let y = match conv::conv2d(&x, &w, bias.as_ref(), padding, stride)? {
        Some(y) => y,
        None => {
            let y = x.conv2d(&w, padding, stride, 1, 1)?;
            match bias {
                Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?,
                None => y,
            }
        }
    };
    if upcast {
        y.to_dtype(dtype)
    } else {
        Ok(y)
    }
}

/// `nn.LayerNorm` over the last axis, computed like PyTorch: mean first, then the variance of
/// the centred values (candle's fused kernel uses E[x²]−E[x]², which loses digits when the mean
/// is large), in f32 for half-precision inputs.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// Scale.
    pub weight: Tensor,
    /// Shift.
    pub bias: Tensor,
    /// Variance epsilon.
    pub eps: f64,
}

impl LayerNorm {
    /// Loads `weight`/`bias` of `dim` under `l`.
    pub fn load(l: &crate::weights::Loader, dim: usize, eps: f64) -> crate::Result<Self> {
        Ok(LayerNorm {
            weight: l.get("weight", &[dim])?,
            bias: l.get("bias", &[dim])?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dtype = x.dtype();
        let work = work_dtype(dtype);
        let xf = x.to_dtype(work)?;
        if let Some(y) = layer_norm_rows_f32(&xf, &self.weight, &self.bias, self.eps)? {
            return y.to_dtype(dtype);
        }
        let mean = xf.mean_keepdim(candle_core::D::Minus1)?;
        let xc = xf.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
        let y = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let y = y
            .broadcast_mul(&self.weight.to_dtype(work)?)?
            .broadcast_add(&self.bias.to_dtype(work)?)?;
        y.to_dtype(dtype)
    }
}

/// The tensor-op LayerNorm below (`(x − mean) / √(var + eps) · weight + bias`, both means
/// over the last dim) in one pass per row for contiguous f32 CPU tensors, rows on all threads.
/// Every step is the operation candle's ops perform — sums by candle's own `vec_reduce_sum`,
/// `· (1/n) + 0`, `· 1 + eps` as its scalar affine does — so the result has the same bits;
/// `None` where the fast path does not apply.
fn layer_norm_rows_f32(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> candle_core::Result<Option<Tensor>> {
    use candle_core::cpu::kernels::VecOps;
    use rayon::prelude::*;
    let n = x.dim(candle_core::D::Minus1)?;
    let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if !(f32_cpu(x) && f32_cpu(weight) && f32_cpu(bias) && x.is_contiguous() && n > 0) {
        return Ok(None);
    }
    let (w, b) = (weight.to_vec1::<f32>()?, bias.to_vec1::<f32>()?);
    let (inv_n, eps) = ((1f64 / n as f64) as f32, eps as f32);
    let sum = |v: &[f32]| {
        let mut s = 0f32;
        // SAFETY: `v` holds `v.len()` elements and `s` is a valid f32
        unsafe { f32::vec_reduce_sum(v.as_ptr(), &mut s, v.len()) };
        s
    };
    let mut out = vec![0f32; x.elem_count()];
    let rows_per_task = (16384 / n).max(1);
    with_host_slice(x, |src| {
        out.par_chunks_mut(rows_per_task * n)
            .zip(src.par_chunks(rows_per_task * n))
            .for_each(|(o, x)| {
                let mut sq = vec![0f32; n];
                for (o, x) in o.chunks_mut(n).zip(x.chunks(n)) {
                    let mean = sum(x) * inv_n + 0.0;
                    for ((o, &v), q) in o.iter_mut().zip(x).zip(sq.iter_mut()) {
                        *o = v - mean;
                        *q = *o * *o;
                    }
                    let d = (sum(&sq) * inv_n + 0.0) * 1.0 + eps;
                    let d = d.sqrt();
                    for ((o, &w), &b) in o.iter_mut().zip(&w).zip(&b) {
                        *o = *o / d * w + b;
                    }
                }
            })
    })?;
    Ok(Some(Tensor::from_vec(out, x.shape(), x.device())?))
}

/// SAM's `LayerNorm2d`: normalises over the channel axis of an NCHW tensor with explicit
/// mean and variance, then scales and shifts per channel.
#[derive(Debug, Clone)]
pub struct LayerNorm2d {
    /// Per-channel scale.
    pub weight: Tensor,
    /// Per-channel shift.
    pub bias: Tensor,
    /// Variance epsilon (1e-6 in SAM).
    pub eps: f64,
}

impl LayerNorm2d {
    /// Loads `weight`/`bias` of `channels` under `l`.
    pub fn load(l: &crate::weights::Loader, channels: usize, eps: f64) -> crate::Result<Self> {
        Ok(LayerNorm2d {
            weight: l.get("weight", &[channels])?,
            bias: l.get("bias", &[channels])?,
            eps,
        })
    }
}

impl LayerNorm2d {
    /// The same normalisation of a channels-last tensor `[…, C]` (channels contiguous), for
    /// callers that keep pixels as rows.
    pub fn forward_last_dim(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(y) = layer_norm_rows_f32(x, &self.weight, &self.bias, self.eps)? {
            return Ok(y);
        }
        self.normalise(x, x.rank() - 1)
    }

    fn normalise(&self, x: &Tensor, dim: usize) -> candle_core::Result<Tensor> {
        let u = mean_keepdim(x, dim)?;
        let xc = x.broadcast_sub(&u)?;
        let s = mean_keepdim(&xc.sqr()?, dim)?;
        let x = xc.broadcast_div(&(s + self.eps)?.sqrt()?)?;
        let mut shape = vec![1; x.rank()];
        shape[dim] = self.weight.dim(0)?;
        x.broadcast_mul(&self.weight.reshape(shape.clone())?)?
            .broadcast_add(&self.bias.reshape(shape)?)
    }
}

impl Module for LayerNorm2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.normalise(x, 1)
    }
}

/// The largest absolute value of `t` as f32, for the unit tests' error reports.
#[cfg(test)]
pub(crate) fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32)
        .and_then(|t| t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("a tensor's maximum")
}

/// The largest absolute difference of two same-shaped tensors, as f32.
#[cfg(test)]
pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let f = |t: &Tensor| t.to_dtype(DType::F32).expect("f32");
    max_abs(&(f(a) - f(b)).expect("same shapes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_add_rounds_like_candles_and_falls_back() {
        let dev = Device::Cpu;
        let mut vals: Vec<f32> = (0..40_000)
            .map(|i| ((i * 7919) % 20011) as f32 / 97.0 - 100.0)
            .collect();
        // a tie (1 + 2^-8 is halfway between two bf16 values), a NaN and an infinity
        vals.extend([1.0, f32::NAN, f32::INFINITY]);
        let a = Tensor::new(vals.as_slice(), &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let mut other: Vec<f32> = vals.iter().rev().map(|v| v * 0.37).collect();
        let n = other.len();
        other[n - 3] = 2f32.powi(-8);
        let b = Tensor::new(other.as_slice(), &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let ours = add(&a, &b).unwrap();
        let bits = |t: &Tensor| -> Vec<u16> {
            t.to_vec1::<half::bf16>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        let want: Vec<u16> = a
            .to_vec1::<half::bf16>()
            .unwrap()
            .iter()
            .zip(b.to_vec1::<half::bf16>().unwrap())
            .map(|(x, y)| half::bf16::from_f32(x.to_f32() + y.to_f32()).to_bits())
            .collect();
        assert_eq!(bits(&ours), want);
        assert_eq!(bits(&ours), bits(&(&a + &b).unwrap()), "candle's bf16 add");
        // strided and f32 inputs take candle's path
        let m = a.narrow(0, 0, 40_000).unwrap().reshape((200, 200)).unwrap();
        let t = m.t().unwrap();
        assert_eq!(max_diff(&add(&t, &t).unwrap(), &(&t + &t).unwrap()), 0.0);
        let f = m.to_dtype(DType::F32).unwrap();
        assert_eq!(max_diff(&add(&f, &f).unwrap(), &(&f + &f).unwrap()), 0.0);
        // no rows at all
        let empty = Tensor::zeros((0, 3), DType::BF16, &dev).unwrap();
        assert_eq!(add(&empty, &empty).unwrap().dims(), &[0, 3]);
    }
    use candle_core::D;

    /// The tiled transpose equals candle's strided copy on shapes that are and are not
    /// multiples of the tile, with batch dims in front.
    #[test]
    fn tiled_transpose_equals_strided_copy() {
        for dims in [
            vec![2, 256, 4096],
            vec![3, 33, 70],
            vec![1, 5],
            vec![2, 2, 31, 64],
        ] {
            let n: usize = dims.iter().product();
            let x = Tensor::arange(0f32, n as f32, &Device::Cpu)
                .unwrap()
                .reshape(dims.clone())
                .unwrap();
            let r = dims.len();
            let want = x.transpose(r - 2, r - 1).unwrap().contiguous().unwrap();
            let got = transpose_last2(&x).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert_eq!(max_diff(&got, &want), 0.0, "{dims:?}");
        }
    }

    /// The one-pass LayerNorm has the tensor path's bits (f32), for LayerNorm's eps and
    /// LayerNorm2d's over the last dim; widths that are and are not multiples of the vector.
    #[test]
    fn fused_layer_norm_is_bit_equal_to_the_tensor_ops() {
        let dev = Device::Cpu;
        for (rows, n, eps) in [(300, 256, 1e-5), (7, 1029, 1e-6), (3, 5, 1e-5)] {
            let x = (Tensor::randn(0f32, 3.0, (2, rows, n), &dev).unwrap() + 0.7).unwrap();
            let w = Tensor::randn(1f32, 0.2, n, &dev).unwrap();
            let b = Tensor::randn(0f32, 0.2, n, &dev).unwrap();
            let got = layer_norm_rows_f32(&x, &w, &b, eps)
                .unwrap()
                .expect("f32 CPU path");
            let mean = x.mean_keepdim(D::Minus1).unwrap();
            let xc = x.broadcast_sub(&mean).unwrap();
            let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            let want = xc
                .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
                .unwrap()
                .broadcast_mul(&w)
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            assert_eq!(max_diff(&got, &want), 0.0, "{rows}×{n}");
            let ln2d = LayerNorm2d {
                weight: w.clone(),
                bias: b.clone(),
                eps,
            };
            let nchw = ln2d
                .forward(&x.transpose(1, 2).unwrap().contiguous().unwrap())
                .unwrap();
            let last = ln2d.forward_last_dim(&x).unwrap();
            let back = nchw.transpose(1, 2).unwrap();
            eprintln!(
                "LayerNorm2d NCHW vs channels-last {rows}×{n}: max diff {:e}",
                max_diff(&last, &back)
            );
            assert!(max_diff(&last, &back) <= 1e-5);
        }
    }
}
