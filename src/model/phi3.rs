//! Phi-3 decoder (HF `Phi3Model`, transformers 4.41) for one prefill pass over input
//! embeddings: fused `qkv_proj` and `gate_up_proj` (gate = first half), RMSNorm in f32, RoPE
//! tables in f32, causal attention restricted to the `sliding_window` (query i sees keys
//! i−w..=i), final normed hidden states out. No KV cache and no LM head: VideoLISA only reads
//! one hidden row.

use crate::error::{Error, Result};
use crate::model::attention::{attention, Bias, Options};
use crate::model::linear::{Linear, LoadLinear};
use crate::model::softmax_last_dim;
use crate::weights::Loader;
use candle_core::{DType, Device, Module, Tensor, D};
use serde::Deserialize;
use std::path::Path;

/// The Phi-3 fields of `config.json`, as transformers reads them; checked by
/// [`Phi3Config::validate`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Phi3Config {
    /// Width (3072).
    pub hidden_size: usize,
    /// Decoder layers (32).
    pub num_hidden_layers: usize,
    /// Query heads (32).
    pub num_attention_heads: usize,
    /// Key/value heads (32); absent or null: one per query head, as transformers defaults it.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// MLP width (8192).
    pub intermediate_size: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Must be null: only Phi-3 without RoPE scaling (the 4k models) is supported.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// The attention window (2047/2048), or null for full causal attention.
    #[serde(default)]
    pub sliding_window: SlidingWindow,
    /// Longest sequence the model was trained for (4096).
    pub max_position_embeddings: usize,
    /// Rows of `embed_tokens`.
    pub vocab_size: usize,
}

fn default_rms_norm_eps() -> f64 {
    1e-5
}

fn default_rope_theta() -> f64 {
    10000.0
}

/// `sliding_window` as written in `config.json`. Absent is not the same as null: VideoLISA's
/// Phi-3 attends within a window, so a config that does not say is refused rather than guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlidingWindow {
    /// The key is absent.
    #[default]
    Unset,
    /// `null`: full causal attention.
    Full,
    /// Query i sees keys i−w..=i.
    Tokens(usize),
}

impl<'de> Deserialize<'de> for SlidingWindow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Option::<serde_json::Value>::deserialize(d)? {
            None => Ok(SlidingWindow::Full),
            Some(w) => match w.as_u64().filter(|&w| w > 0) {
                Some(w) => Ok(SlidingWindow::Tokens(w as usize)),
                None => Err(serde::de::Error::custom(format!(
                    "`sliding_window` must be a positive number or null, found {w}"
                ))),
            },
        }
    }
}

impl Phi3Config {
    /// Checks what serde cannot: RoPE scaling unset, the window given, the heads dividing the
    /// width. `path` names the file in the message.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |m: String| Err(Error::Checkpoint(format!("{}: {m}", path.display())));
        if self.rope_scaling.is_some() {
            return bad("`rope_scaling` is set; only Phi-3 without RoPE scaling (4k) is supported".into());
        }
        if self.sliding_window == SlidingWindow::Unset {
            return bad(
                "`sliding_window` is missing: VideoLISA's Phi-3 attends within a window \
                 (2047 or 2048 tokens, from its config); add the checkpoint's value, or \
                 `\"sliding_window\": null` for full causal attention"
                    .into(),
            );
        }
        let (heads, kv) = (self.num_attention_heads, self.kv_heads());
        if heads == 0 || !self.hidden_size.is_multiple_of(heads) || kv == 0 || !heads.is_multiple_of(kv) {
            return bad(format!(
                "hidden_size {} / {heads} heads / {kv} kv heads do not divide",
                self.hidden_size
            ));
        }
        Ok(())
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// The attention window in tokens; `None` = full causal attention.
    pub fn sliding_window(&self) -> Option<usize> {
        match self.sliding_window {
            SlidingWindow::Tokens(w) => Some(w),
            SlidingWindow::Unset | SlidingWindow::Full => None,
        }
    }

    /// Per-head width (96).
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// `Phi3RMSNorm`: `weight * (x_f32 * rsqrt(mean(x²) + eps)).to(dtype)`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    /// Scale.
    pub weight: Tensor,
    /// Epsilon.
    pub eps: f64,
}

impl RmsNorm {
    /// Loads `weight` `[hidden_size]` under `l`, with the config's epsilon.
    fn load(l: &Loader, c: &Phi3Config) -> Result<Self> {
        Ok(RmsNorm {
            weight: l.get("weight", &[c.hidden_size])?,
            eps: c.rms_norm_eps,
        })
    }
}

impl RmsNorm {
    /// bf16 rows on the CPU in one pass: the f32 mean of squares, `x / sqrt(var + eps)` rounded
    /// to bf16, times the bf16 weight rounded again (the tensor path's roundings; its f32 sum
    /// order is not kept, so f32 models keep the tensor path).
    fn forward_bf16_cpu(&self, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
        use candle_core::{CpuStorage, Storage};
        use half::bf16;
        use rayon::prelude::*;
        let d = self.weight.dim(0)?;
        if x.dtype() != DType::BF16 || self.weight.dtype() != DType::BF16 || !x.device().is_cpu() || d == 0 {
            return Ok(None);
        }
        let x = x.contiguous()?;
        let w: Vec<f32> = self.weight.to_dtype(DType::F32)?.to_vec1()?;
        let (st, l) = x.storage_and_layout();
        let (Storage::Cpu(CpuStorage::BF16(v)), Some((a, b))) = (&*st, l.contiguous_offsets()) else {
            return Ok(None);
        };
        let eps = self.eps as f32;
        let mut out = vec![bf16::ZERO; b - a];
        out.par_chunks_mut(d)
            .zip(v[a..b].par_chunks(d))
            .for_each(|(o, row)| {
                let ss: f32 = row.iter().map(|x| x.to_f32() * x.to_f32()).sum();
                let inv = 1.0 / (ss / d as f32 + eps).sqrt();
                for ((o, x), w) in o.iter_mut().zip(row).zip(&w) {
                    *o = bf16::from_f32(w * bf16::from_f32(x.to_f32() * inv).to_f32());
                }
            });
        Ok(Some(Tensor::from_vec(out, x.shape(), x.device())?))
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(y) = self.forward_bf16_cpu(x)? {
            return Ok(y);
        }
        let dtype = x.dtype();
        let work = crate::model::work_dtype(dtype);
        let xf = x.to_dtype(work)?;
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xf
            .broadcast_mul(&(var + self.eps)?.sqrt()?.recip()?)?
            .to_dtype(dtype)?;
        y.broadcast_mul(&self.weight)
    }
}

/// RoPE's `cos` and `sin` tables `[max_position_embeddings, head_dim]`, computed once in f32
/// like HF (`inv_freq` from `rope_theta`, halves duplicated) and cast to the model dtype.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    cos: Tensor,
    sin: Tensor,
}

impl RotaryEmbedding {
    /// Tables for positions `0..max_position_embeddings`.
    pub fn new(c: &Phi3Config, dtype: DType, device: &Device) -> Result<Self> {
        let (n, hd) = (c.max_position_embeddings, c.head_dim());
        let base = c.rope_theta as f32;
        let inv: Vec<f32> = (0..hd)
            .step_by(2)
            .map(|k| 1.0 / base.powf(k as f32 / hd as f32))
            .collect();
        let half = inv.len();
        let mut cos = vec![0f32; n * hd];
        let mut sin = vec![0f32; n * hd];
        for p in 0..n {
            for (k, f) in inv.iter().enumerate() {
                let (s, c) = (p as f32 * f).sin_cos();
                for j in [k, k + half] {
                    cos[p * hd + j] = c;
                    sin[p * hd + j] = s;
                }
            }
        }
        let t =
            |v: Vec<f32>| -> Result<Tensor> { Ok(Tensor::from_vec(v, (n, hd), device)?.to_dtype(dtype)?) };
        Ok(RotaryEmbedding {
            cos: t(cos)?,
            sin: t(sin)?,
        })
    }

    /// The tables' rows for positions `start..start + rows`.
    pub fn tables(&self, start: usize, rows: usize) -> Result<(Tensor, Tensor)> {
        let have = self.cos.dim(0)?;
        if start + rows > have {
            return Err(Error::Usage(format!(
                "a sequence of {} positions is longer than the model's {have} (max_position_embeddings)",
                start + rows
            )));
        }
        Ok((self.cos.narrow(0, start, rows)?, self.sin.narrow(0, start, rows)?))
    }

    /// Rotates `t` `[heads, rows, head_dim]` whose rows are positions `start..`:
    /// `t·cos + rotate_half(t)·sin`.
    fn apply(&self, t: &Tensor, start: usize) -> Result<Tensor> {
        let (_, rows, hd) = t.dims3()?;
        let (cos, sin) = self.tables(start, rows)?;
        let x1 = t.narrow(D::Minus1, 0, hd / 2)?;
        let x2 = t.narrow(D::Minus1, hd / 2, hd / 2)?;
        let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((t.broadcast_mul(&cos)? + rot.broadcast_mul(&sin)?)?)
    }
}

/// q (rows `from..n`), k and v split from `qkv_proj`'s CPU output `[n, (H + 2·Hkv)·d]`, RoPE
/// applied to q and k, as f32 `[1, rows, heads, d]` for the attention kernel. Each value is
/// the one [`RotaryEmbedding::apply`] computes — `t·cos + rotate_half(t)·sin`, every product
/// and the sum rounded to the model's dtype — in one pass instead of a copy per head layout,
/// five tensor passes and a conversion.
fn rope_split(
    qkv: &Tensor,
    rope: &RotaryEmbedding,
    from: usize,
    (h, kvh, hd): (usize, usize, usize),
) -> Result<(Tensor, Tensor, Tensor)> {
    use candle_core::{CpuStorage, Storage};
    let (n, width) = qkv.dims2()?;
    if width != (h + 2 * kvh) * hd || hd % 2 != 0 {
        return Err(Error::Checkpoint(format!(
            "qkv_proj output is {width} wide, expected ({h} + 2 × {kvh}) × {hd} with an even head_dim"
        )));
    }
    let (cos, sin) = rope.tables(0, n)?;
    let (cos, sin) = (
        cos.to_dtype(DType::F32)?.contiguous()?,
        sin.to_dtype(DType::F32)?.contiguous()?,
    );
    let (cos, sin) = (
        cos.flatten_all()?.to_vec1::<f32>()?,
        sin.flatten_all()?.to_vec1::<f32>()?,
    );
    let qkv = qkv.contiguous()?;
    let (st, l) = qkv.storage_and_layout();
    let (a, b) = l.contiguous_offsets().expect("contiguous");
    let vals: Vec<f32> = match &*st {
        Storage::Cpu(CpuStorage::F32(v)) => v[a..b].to_vec(),
        Storage::Cpu(CpuStorage::BF16(v)) => v[a..b].iter().map(|x| x.to_f32()).collect(),
        _ => {
            return Err(Error::Checkpoint(format!(
                "rope_split: {:?} on the CPU only",
                qkv.dtype()
            )))
        }
    };
    let bf16 = qkv.dtype() == DType::BF16;
    let rows_of = |first: usize, heads: usize, col0: usize, roped: bool| -> Vec<f32> {
        use rayon::prelude::*;
        let mut out = vec![0f32; (n - first) * heads * hd];
        out.par_chunks_mut((heads * hd).max(1))
            .enumerate()
            .for_each(|(r, o)| {
                let p = first + r;
                let src = &vals[p * width + col0..p * width + col0 + heads * hd];
                if !roped {
                    o.copy_from_slice(src);
                    return;
                }
                let (c, s) = (&cos[p * hd..(p + 1) * hd], &sin[p * hd..(p + 1) * hd]);
                for (t, o) in src.chunks_exact(hd).zip(o.chunks_exact_mut(hd)) {
                    if bf16 {
                        rotate::<true>(t, c, s, o);
                    } else {
                        rotate::<false>(t, c, s, o);
                    }
                }
            });
        out
    };
    let dev = qkv.device();
    let t = |v: Vec<f32>, rows: usize, heads: usize| Tensor::from_vec(v, (1, rows, heads, hd), dev);
    let q = t(rows_of(from, h, 0, true), n - from, h)?;
    let k = t(rows_of(0, kvh, h * hd, true), n, kvh)?;
    let v = t(rows_of(0, kvh, (h + kvh) * hd, false), n, kvh)?;
    Ok((q, k, v))
}

/// One head's `t·cos + rotate_half(t)·sin`, each product and the sum rounded to bf16 when
/// `BF16` (exact f32 arithmetic otherwise, no fused multiply-add: candle's f32 result).
fn rotate<const BF16: bool>(t: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let r = |x: f32| if BF16 { half::bf16::from_f32(x).to_f32() } else { x };
    let half = t.len() / 2;
    let (t1, t2) = t.split_at(half);
    for j in 0..half {
        out[j] = r(r(t1[j] * cos[j]) + r(-t2[j] * sin[j]));
        out[half + j] = r(r(t2[j] * cos[half + j]) + r(t1[j] * sin[half + j]));
    }
}

/// `Phi3Attention` with the fused `qkv_proj` (rows: q, k, v), for one prefill: queries of rows
/// `from..n` against keys `0..n`, in query blocks whose masks come from
/// [`Phi3Model::attention_masks`].
#[derive(Debug, Clone)]
pub struct Phi3Attention {
    /// `qkv_proj`.
    pub qkv_proj: Linear,
    /// `o_proj`.
    pub o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    sliding_window: Option<usize>,
}

impl Phi3Attention {
    /// Loads `qkv_proj` and `o_proj` under `l` (`self_attn`).
    fn load(l: &Loader, c: &Phi3Config) -> Result<Self> {
        let (d, kv) = (c.hidden_size, c.kv_heads() * c.head_dim());
        Ok(Phi3Attention {
            qkv_proj: l.linear("qkv_proj", d, d + 2 * kv, false)?,
            o_proj: l.linear("o_proj", d, d, false)?,
            num_heads: c.num_attention_heads,
            num_kv_heads: c.kv_heads(),
            head_dim: c.head_dim(),
            sliding_window: c.sliding_window(),
        })
    }

    /// `o_proj(attention)` of the normed rows `x` `[n, D]` → `[n − from, D]`.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RotaryEmbedding,
        from: usize,
        masks: &[Tensor],
    ) -> Result<Tensor> {
        let n = x.dim(0)?;
        let qkv = self.qkv_proj.forward(x)?;
        let o = match self.attend_cpu(&qkv, rope, from)? {
            Some(o) => o,
            None => {
                let (q, k, v) = self.project(&qkv, rope, from)?;
                let (k, v) = (self.repeat_kv(k)?, self.repeat_kv(v)?);
                attend(&q, &k, &v, from, masks, self.head_dim)?.transpose(0, 1)?
            }
        };
        let o = o.reshape((n - from, self.num_heads * self.head_dim))?;
        Ok(self.o_proj.forward(&o)?)
    }

    /// The fused CPU path for f32 and bf16: q, k, v split from `qkv` `[n, (H + 2·Hkv)·d]` with
    /// RoPE applied in one pass ([`rope_split`]), then the tiled attention kernel; scores in
    /// f32, probabilities rounded to bf16 for a bf16 model (what [`attend`] does) →
    /// `[rows, heads, head_dim]` in `qkv`'s dtype. `None` elsewhere.
    fn attend_cpu(&self, qkv: &Tensor, rope: &RotaryEmbedding, from: usize) -> Result<Option<Tensor>> {
        let dtype = qkv.dtype();
        if !qkv.device().is_cpu() || !matches!(dtype, DType::F32 | DType::BF16) {
            return Ok(None);
        }
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let (q, k, v) = rope_split(qkv, rope, from, (h, kvh, hd))?;
        let opts = Options {
            scale: Some(1.0 / (hd as f64).sqrt() as f32),
            bias: Bias::Causal {
                first_row: from,
                window: self.sliding_window,
            },
            bf16_probs: dtype == DType::BF16,
        };
        let Some(o) = attention(&q, &k, &v, &opts)? else {
            return Ok(None);
        };
        Ok(Some(o.squeeze(0)?.to_dtype(dtype)?))
    }

    /// The key/value heads repeated to the query heads, `[heads, n, head_dim]`.
    fn repeat_kv(&self, t: Tensor) -> Result<Tensor> {
        let (kvh, n, hd) = t.dims3()?;
        if kvh == self.num_heads {
            return Ok(t);
        }
        Ok(t.unsqueeze(1)?
            .broadcast_as((kvh, self.num_heads / kvh, n, hd))?
            .reshape((self.num_heads, n, hd))?)
    }

    /// q of rows `from..n` `[heads, rows, head_dim]` and k, v of all rows
    /// `[kv_heads, n, head_dim]` from `qkv_proj`'s output `[n, (H + 2·Hkv)·d]`, RoPE applied.
    fn project(&self, qkv: &Tensor, rope: &RotaryEmbedding, from: usize) -> Result<(Tensor, Tensor, Tensor)> {
        let n = qkv.dim(0)?;
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let heads = |t: Tensor, count: usize, rows: usize| -> Result<Tensor> {
            Ok(t.reshape((rows, count, hd))?.transpose(0, 1)?.contiguous()?)
        };
        let q = heads(qkv.narrow(1, 0, h * hd)?.narrow(0, from, n - from)?, h, n - from)?;
        let q = rope.apply(&q, from)?;
        let k = rope.apply(&heads(qkv.narrow(1, h * hd, kvh * hd)?, kvh, n)?, 0)?;
        let v = heads(qkv.narrow(1, (h + kvh) * hd, kvh * hd)?, kvh, n)?;
        Ok((q, k, v))
    }
}

/// Blocked causal attention `[heads, n − from, head_dim]`: each query block sees the keys its
/// mask covers (the last `keys` rows up to the block's end).
fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    from: usize,
    masks: &[Tensor],
    head_dim: usize,
) -> Result<Tensor> {
    let scale = 1.0 / (head_dim as f64).sqrt();
    // Scores in f32 as FlashAttention-2 computes them from bf16 q and k (f32 accumulators,
    // never rounded to bf16); the probabilities go back to v's dtype for p·v, as there.
    let (q, k) = (q.to_dtype(DType::F32)?, k.to_dtype(DType::F32)?);
    let mut outs = Vec::with_capacity(masks.len());
    let mut a = from;
    for mask in masks {
        let (_, rows, keys) = mask.dims3()?;
        let (b, lo) = (a + rows, a + rows - keys);
        let qb = q.narrow(1, a - from, b - a)?;
        let kb = k.narrow(1, lo, keys)?;
        let vb = v.narrow(1, lo, keys)?;
        let scores = (qb.matmul(&kb.t()?)? * scale)?.broadcast_add(mask)?;
        let p = softmax_last_dim(&scores)?.to_dtype(vb.dtype())?;
        outs.push(p.matmul(&vb)?);
        a = b;
    }
    Ok(Tensor::cat(&outs, 1)?)
}

/// `Phi3MLP` with the fused `gate_up_proj` (rows: gate, up): `down(up · silu(gate))`.
#[derive(Debug, Clone)]
pub struct Phi3Mlp {
    /// `gate_up_proj`.
    pub gate_up_proj: Linear,
    /// `down_proj`.
    pub down_proj: Linear,
    intermediate_size: usize,
}

impl Phi3Mlp {
    /// Loads `gate_up_proj` and `down_proj` under `l` (`mlp`).
    fn load(l: &Loader, c: &Phi3Config) -> Result<Self> {
        let (d, i) = (c.hidden_size, c.intermediate_size);
        Ok(Phi3Mlp {
            gate_up_proj: l.linear("gate_up_proj", d, 2 * i, false)?,
            down_proj: l.linear("down_proj", i, d, false)?,
            intermediate_size: i,
        })
    }
}

impl Module for Phi3Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let i = self.intermediate_size;
        let gu = self.gate_up_proj.forward(x)?;
        let fused =
            gu.device().is_cpu() && gu.is_contiguous() && matches!(gu.dtype(), DType::F32 | DType::BF16);
        let h = if fused {
            gu.apply_op1_no_bwd(&SwiGlu { intermediate_size: i })?
        } else {
            (gu.narrow(1, i, i)? * candle_nn::ops::silu(&gu.narrow(1, 0, i)?)?)?
        };
        self.down_proj.forward(&h)
    }
}

/// `up · silu(gate)` of the fused projection's rows `[n, 2i]` (gate first) in one pass on the
/// CPU: `gate / (1 + exp(−gate))` as candle's f32 `silu` evaluates it, then the product; in
/// bf16 each of the two results is rounded once, as PyTorch's two bf16 ops round them.
struct SwiGlu {
    intermediate_size: usize,
}

impl SwiGlu {
    fn rows<T: Copy + Send + Sync + Default>(&self, gu: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
        use rayon::prelude::*;
        let i = self.intermediate_size;
        let mut out = vec![T::default(); gu.len() / 2];
        out.par_chunks_mut(i.max(1))
            .zip(gu.par_chunks(2 * i.max(1)))
            .for_each(|(o, row)| {
                let (gate, up) = row.split_at(i);
                for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
                    *o = f(g, u);
                }
            });
        out
    }
}

impl candle_core::CustomOp1 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage;
        use half::bf16;
        let (a, b) = l.contiguous_offsets().expect("checked contiguous");
        let (rows, width) = l.shape().dims2()?;
        if width != 2 * self.intermediate_size {
            candle_core::bail!(
                "gate_up_proj output is {width} wide, expected 2 × {}",
                self.intermediate_size
            );
        }
        let silu = |g: f32| g / (1.0 + (-g).exp());
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(self.rows(&v[a..b], |g, u| u * silu(g))),
            CpuStorage::BF16(v) => CpuStorage::BF16(self.rows(&v[a..b], |g: bf16, u: bf16| {
                bf16::from_f32(u.to_f32() * bf16::from_f32(silu(g.to_f32())).to_f32())
            })),
            _ => candle_core::bail!("swiglu: f32 and bf16 only"),
        };
        Ok((out, (rows, self.intermediate_size).into()))
    }
}

/// `Phi3DecoderLayer`: pre-norm attention and MLP, each added to the residual.
#[derive(Debug, Clone)]
pub struct Phi3DecoderLayer {
    /// `self_attn`.
    pub self_attn: Phi3Attention,
    /// `mlp`.
    pub mlp: Phi3Mlp,
    /// `input_layernorm`.
    pub input_layernorm: RmsNorm,
    /// `post_attention_layernorm`.
    pub post_attention_layernorm: RmsNorm,
}

impl Phi3DecoderLayer {
    /// Loads layer `l` (`layers.N`).
    fn load(l: &Loader, c: &Phi3Config) -> Result<Self> {
        Ok(Phi3DecoderLayer {
            self_attn: Phi3Attention::load(&l.pp("self_attn"), c)?,
            mlp: Phi3Mlp::load(&l.pp("mlp"), c)?,
            input_layernorm: RmsNorm::load(&l.pp("input_layernorm"), c)?,
            post_attention_layernorm: RmsNorm::load(&l.pp("post_attention_layernorm"), c)?,
        })
    }

    /// The layer's output rows `from..n` of `x` `[n, D]`, with the query blocks' masks.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RotaryEmbedding,
        from: usize,
        masks: &[Tensor],
    ) -> Result<Tensor> {
        let n = x.dim(0)?;
        let o = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, rope, from, masks)?;
        let h = crate::model::add(&x.narrow(0, from, n - from)?, &o)?;
        let m = self.mlp.forward(&self.post_attention_layernorm.forward(&h)?)?;
        Ok(crate::model::add(&h, &m)?)
    }
}

/// `Phi3Model` without `embed_tokens` lookups of images (LLaVA splices those in).
#[derive(Debug, Clone)]
pub struct Phi3Model {
    /// Sizes.
    pub config: Phi3Config,
    /// `embed_tokens.weight` `[V, D]`.
    pub embed_tokens: Tensor,
    /// `layers`.
    pub layers: Vec<Phi3DecoderLayer>,
    /// `norm`.
    pub norm: RmsNorm,
    /// RoPE tables for every position.
    pub rotary_emb: RotaryEmbedding,
}

/// Query rows per attention block (bounds the score buffer to heads × block × keys).
const QUERY_BLOCK: usize = 256;

impl Phi3Model {
    /// Loads from `l` at `model` (`embed_tokens`, `layers.N`, `norm`).
    pub fn load(l: &Loader, config: Phi3Config) -> Result<Self> {
        let layers = (0..config.num_hidden_layers)
            .map(|k| Phi3DecoderLayer::load(&l.pp("layers").pp(k), &config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Phi3Model {
            embed_tokens: l.get("embed_tokens.weight", &[config.vocab_size, config.hidden_size])?,
            norm: RmsNorm::load(&l.pp("norm"), &config)?,
            rotary_emb: RotaryEmbedding::new(&config, l.dtype(), l.device())?,
            layers,
            config,
        })
    }

    /// `embed_tokens(ids)` → `[n, D]`; ids must be in the vocabulary.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.config.vocab_size) {
            return Err(Error::Checkpoint(format!(
                "token id {bad} is outside the embedding table ({} rows): tokenizer and config.json disagree",
                self.config.vocab_size
            )));
        }
        if ids.is_empty() {
            let d = self.config.hidden_size;
            return Ok(Tensor::zeros(
                (0, d),
                self.embed_tokens.dtype(),
                self.embed_tokens.device(),
            )?);
        }
        let t = Tensor::new(ids, self.embed_tokens.device())?;
        Ok(self.embed_tokens.index_select(&t, 0)?)
    }

    /// Final normed hidden states `[n, D]` of `embeds` `[n, D]` at positions 0..n. When
    /// `last_row_only`, the last layer, the final norm and the output cover only the last row
    /// (the other rows cannot change it: attention is causal).
    pub fn forward_embeds(&self, embeds: &Tensor, last_row_only: bool) -> Result<Tensor> {
        let mut h = embeds.to_dtype(self.embed_tokens.dtype())?;
        let n = h.dim(0)?;
        self.rotary_emb.tables(0, n)?; // a sequence longer than the tables is refused up front
                                       // the masks are the same in every layer: made once, on the device
        let all_rows = self.attention_masks(0, n, h.device())?;
        let count = self.layers.len();
        for (k, layer) in self.layers.iter().enumerate() {
            h = if last_row_only && k + 1 == count {
                let last = self.attention_masks(n - 1, n, h.device())?;
                layer.forward(&h, &self.rotary_emb, n - 1, &last)?
            } else {
                layer.forward(&h, &self.rotary_emb, 0, &all_rows)?
            };
        }
        Ok(self.norm.forward(&h)?)
    }

    /// The additive masks (0 or −∞, `[1, rows, keys]`) of the query blocks of rows `from..n`:
    /// causal, and within the sliding window when there is one. Each block sees keys
    /// `lo..b`, `lo` being the window's start for the block's first row.
    fn attention_masks(&self, from: usize, n: usize, device: &Device) -> Result<Vec<Tensor>> {
        let window = self.config.sliding_window();
        let mut masks = Vec::new();
        let mut a = from;
        while a < n {
            let b = (a + QUERY_BLOCK).min(n);
            let lo = window.map_or(0, |w| a.saturating_sub(w));
            let keys = b - lo;
            let mut mask = vec![0f32; (b - a) * keys];
            for i in a..b {
                for j in lo..b {
                    let visible = j <= i && window.is_none_or(|w| j + w >= i);
                    if !visible {
                        mask[(i - a) * keys + (j - lo)] = f32::NEG_INFINITY;
                    }
                }
            }
            masks.push(Tensor::from_vec(mask, (1, b - a, keys), device)?);
            a = b;
        }
        Ok(masks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{max_abs, max_diff};

    fn config(extra: &str) -> std::result::Result<Phi3Config, serde_json::Error> {
        serde_json::from_str(&format!(
            r#"{{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "intermediate_size": 96, "max_position_embeddings": 128, "vocab_size": 10,
                "model_type": "llava_phi"{extra}}}"#
        ))
    }

    #[test]
    fn config_defaults_and_checks_follow_transformers() {
        let p = Path::new("config.json");
        let c = config(r#", "sliding_window": 40"#).unwrap();
        assert_eq!(
            (c.kv_heads(), c.head_dim(), c.sliding_window()),
            (4, 16, Some(40))
        );
        assert_eq!((c.rms_norm_eps, c.rope_theta), (1e-5, 10000.0));
        c.validate(p).unwrap();
        let full = config(r#", "sliding_window": null, "num_key_value_heads": 2"#).unwrap();
        assert_eq!((full.sliding_window(), full.kv_heads()), (None, 2));
        full.validate(p).unwrap();
        let e = config("").unwrap().validate(p).unwrap_err().to_string();
        assert!(e.contains("config.json: `sliding_window` is missing"), "{e}");
        let e = config(r#", "sliding_window": 0"#).unwrap_err().to_string();
        assert!(e.contains("positive number or null, found 0"), "{e}");
        let scaled = config(r#", "sliding_window": 40, "rope_scaling": {"type": "su"}"#).unwrap();
        assert!(scaled
            .validate(p)
            .unwrap_err()
            .to_string()
            .contains("rope_scaling"));
        let odd = config(r#", "sliding_window": 40, "num_key_value_heads": 3"#).unwrap();
        assert!(odd.validate(p).unwrap_err().to_string().contains("do not divide"));
        assert!(config(r#", "sliding_window": 40, "hidden_size": "wide""#).is_err());
    }

    #[test]
    fn rotary_tables_cover_the_context_and_no_more() {
        let c = config(r#", "sliding_window": 40"#).unwrap();
        let rope = RotaryEmbedding::new(&c, DType::F32, &Device::Cpu).unwrap();
        let (cos, sin) = rope.tables(0, 128).unwrap();
        assert_eq!(cos.dims(), &[128, 16]);
        let row: Vec<f32> = sin.get(3).unwrap().to_vec1().unwrap();
        // position 3, frequency 1 (k = 0): both halves hold sin(3)
        assert_eq!((row[0], row[8]), (3f32.sin(), 3f32.sin()));
        let e = rope.tables(100, 29).unwrap_err();
        assert!(
            matches!(e, Error::Usage(_)) && e.to_string().contains("129 positions"),
            "{e}"
        );
    }

    fn rand(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// The one-pass q/k/v split with RoPE equals the tensor path ([`Phi3Attention::project`])
    /// bit for bit in f32 and in bf16 (same products, sums and roundings), grouped heads and a
    /// first query row past 0 included.
    #[test]
    fn rope_split_equals_the_tensor_path() {
        let c = config(r#", "sliding_window": 40, "num_key_value_heads": 2"#).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let rope = RotaryEmbedding::new(&c, dtype, &Device::Cpu).unwrap();
            let (h, kvh, hd) = (4, 2, 16);
            let attn = Phi3Attention {
                qkv_proj: Linear::new(rand(&[1, 1], dtype), None),
                o_proj: Linear::new(rand(&[1, 1], dtype), None),
                num_heads: h,
                num_kv_heads: kvh,
                head_dim: hd,
                sliding_window: Some(40),
            };
            let qkv = rand(&[37, (h + 2 * kvh) * hd], dtype);
            let (q, k, v) = rope_split(&qkv, &rope, 5, (h, kvh, hd)).unwrap();
            let (q0, k0, v0) = attn.project(&qkv, &rope, 5).unwrap();
            let layout = |t: Tensor| t.transpose(0, 1).unwrap().unsqueeze(0).unwrap();
            for (name, ours, theirs) in [
                ("q", &q, layout(q0)),
                ("k", &k, layout(k0)),
                ("v", &v, layout(v0)),
            ] {
                assert_eq!(ours.dims(), theirs.dims(), "{name} {dtype:?}");
                assert_eq!(max_diff(ours, &theirs), 0.0, "{name} {dtype:?}");
            }
        }
    }

    /// The one-pass `up · silu(gate)`: f32 equals candle's ops bit for bit; bf16 equals the f32
    /// arithmetic rounded once per PyTorch op (silu, then the product).
    #[test]
    fn swiglu_rounds_like_the_reference() {
        let i = 24;
        let gu = rand(&[7, 2 * i], DType::F32);
        let fused = gu.apply_op1_no_bwd(&SwiGlu { intermediate_size: i }).unwrap();
        let plain = (gu.narrow(1, i, i).unwrap()
            * candle_nn::ops::silu(&gu.narrow(1, 0, i).unwrap()).unwrap())
        .unwrap();
        assert_eq!(max_diff(&fused, &plain), 0.0);
        let gu = gu.to_dtype(DType::BF16).unwrap();
        let fused = gu.apply_op1_no_bwd(&SwiGlu { intermediate_size: i }).unwrap();
        let f = gu.to_dtype(DType::F32).unwrap();
        let silu = candle_nn::ops::silu(&f.narrow(1, 0, i).unwrap()).unwrap();
        let silu = silu.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap();
        let want = (f.narrow(1, i, i).unwrap() * silu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        assert_eq!(max_diff(&fused, &want), 0.0);
    }

    /// The one-pass bf16 RMSNorm against the tensor path: the same roundings, the f32 sum of
    /// squares in another order, so at most one bf16 step apart (2⁻⁷ relative).
    #[test]
    fn rms_norm_bf16_pass_matches_the_tensor_path() {
        let c = config(r#", "sliding_window": 40"#).unwrap();
        let norm = RmsNorm {
            weight: rand(&[64], DType::BF16),
            eps: c.rms_norm_eps,
        };
        let x = rand(&[9, 64], DType::BF16);
        let fused = norm.forward_bf16_cpu(&x).unwrap().expect("bf16 on the CPU");
        let xf = x.to_dtype(DType::F32).unwrap();
        let var = xf.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let y = xf
            .broadcast_mul(&(var + norm.eps).unwrap().sqrt().unwrap().recip().unwrap())
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap()
            .broadcast_mul(&norm.weight)
            .unwrap();
        let y = y.to_dtype(DType::F32).unwrap();
        let scale = y.abs().unwrap().max_keepdim(1).unwrap();
        let d = (fused.to_dtype(DType::F32).unwrap() - &y).unwrap();
        let rel = max_abs(&d.broadcast_div(&scale).unwrap());
        println!("bf16 RMSNorm, one pass vs tensor path: max difference {rel:.2e} of the row's largest");
        assert!(rel <= 2f32.powi(-7), "{rel}");
    }
}
