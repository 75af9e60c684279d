//! Phi-3 decoder (HF `Phi3Model`, transformers 4.41) for one prefill pass over input
//! embeddings: fused `qkv_proj` and `gate_up_proj` (gate = first half), RMSNorm in f32, RoPE
//! tables in f32, causal attention restricted to the `sliding_window` (query i sees keys
//! i−w..=i), final normed hidden states out. No KV cache and no LM head: VideoLISA only reads
//! one hidden row.

use crate::error::{Error, Result};
use crate::model::softmax_last_dim;
use crate::weights::Loader;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::Linear;
use serde_json::Value;
use std::path::Path;

/// The Phi-3 fields of `config.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Phi3Config {
    /// Width (3072).
    pub hidden_size: usize,
    /// Decoder layers (32).
    pub num_hidden_layers: usize,
    /// Query heads (32).
    pub num_attention_heads: usize,
    /// Key/value heads (32).
    pub num_key_value_heads: usize,
    /// MLP width (8192).
    pub intermediate_size: usize,
    /// RMSNorm epsilon (1e-5).
    pub rms_norm_eps: f64,
    /// RoPE base (10000).
    pub rope_theta: f64,
    /// Attention window (2047/2048); `None` = full causal attention (`"sliding_window": null`).
    pub sliding_window: Option<usize>,
    /// Longest sequence the model was trained for (4096).
    pub max_position_embeddings: usize,
    /// Rows of `embed_tokens`.
    pub vocab_size: usize,
}

impl Phi3Config {
    /// Reads `config.json`; `rope_scaling` must be null (Phi-3-mini-4k).
    pub fn from_json(path: &Path, v: &Value) -> Result<Self> {
        let bad = |m: String| Error::Invalid(format!("{}: {m}", path.display()));
        let u = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("`{k}` is missing or not a number")))
        };
        if v.get("rope_scaling").is_some_and(|r| !r.is_null()) {
            return Err(bad(
                "`rope_scaling` is set; only Phi-3 without RoPE scaling (4k) is supported".into(),
            ));
        }
        let heads = u("num_attention_heads")?;
        let c = Phi3Config {
            hidden_size: u("hidden_size")?,
            num_hidden_layers: u("num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: v
                .get("num_key_value_heads")
                .and_then(Value::as_u64)
                .map_or(heads, |x| x as usize),
            intermediate_size: u("intermediate_size")?,
            rms_norm_eps: v.get("rms_norm_eps").and_then(Value::as_f64).unwrap_or(1e-5),
            rope_theta: v.get("rope_theta").and_then(Value::as_f64).unwrap_or(10000.0),
            sliding_window: match v.get("sliding_window") {
                None => {
                    return Err(bad(
                        "`sliding_window` is missing: VideoLISA's Phi-3 attends within a window \
                         (2047 or 2048 tokens, from its config); add the checkpoint's value, or \
                         `\"sliding_window\": null` for full causal attention"
                            .into(),
                    ))
                }
                Some(Value::Null) => None,
                Some(w) => Some(w.as_u64().filter(|&w| w > 0).ok_or_else(|| {
                    bad(format!(
                        "`sliding_window` must be a positive number or null, found {w}"
                    ))
                })? as usize),
            },
            max_position_embeddings: u("max_position_embeddings")?,
            vocab_size: u("vocab_size")?,
        };
        if c.num_attention_heads == 0
            || !c.hidden_size.is_multiple_of(c.num_attention_heads)
            || c.num_key_value_heads == 0
            || !c.num_attention_heads.is_multiple_of(c.num_key_value_heads)
        {
            return Err(bad(format!(
                "hidden_size {} / {} heads / {} kv heads do not divide",
                c.hidden_size, c.num_attention_heads, c.num_key_value_heads
            )));
        }
        Ok(c)
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

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
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

/// `Phi3Attention` with the fused `qkv_proj`.
#[derive(Debug, Clone)]
pub struct Phi3Attention {
    /// `qkv_proj` (rows: q, k, v).
    pub qkv_proj: Linear,
    /// `o_proj`.
    pub o_proj: Linear,
}

/// `Phi3MLP` with the fused `gate_up_proj`.
#[derive(Debug, Clone)]
pub struct Phi3Mlp {
    /// `gate_up_proj` (rows: gate, up).
    pub gate_up_proj: Linear,
    /// `down_proj`.
    pub down_proj: Linear,
}

/// `Phi3DecoderLayer`.
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
}

/// Query rows per attention block (bounds the score buffer to heads × block × keys).
const QUERY_BLOCK: usize = 256;

impl Phi3Model {
    /// Loads from `l` at `model` (`embed_tokens`, `layers.N`, `norm`).
    pub fn load(l: &Loader, config: Phi3Config) -> Result<Self> {
        let (d, i) = (config.hidden_size, config.intermediate_size);
        let kv = config.num_key_value_heads * config.head_dim();
        let norm = |l: Loader| -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: l.get("weight", &[d])?,
                eps: config.rms_norm_eps,
            })
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for k in 0..config.num_hidden_layers {
            let ll = l.pp("layers").pp(k);
            layers.push(Phi3DecoderLayer {
                self_attn: Phi3Attention {
                    qkv_proj: ll.linear("self_attn.qkv_proj", d, d + 2 * kv, false)?,
                    o_proj: ll.linear("self_attn.o_proj", d, d, false)?,
                },
                mlp: Phi3Mlp {
                    gate_up_proj: ll.linear("mlp.gate_up_proj", d, 2 * i, false)?,
                    down_proj: ll.linear("mlp.down_proj", i, d, false)?,
                },
                input_layernorm: norm(ll.pp("input_layernorm"))?,
                post_attention_layernorm: norm(ll.pp("post_attention_layernorm"))?,
            });
        }
        Ok(Phi3Model {
            embed_tokens: l.get("embed_tokens.weight", &[config.vocab_size, d])?,
            norm: norm(l.pp("norm"))?,
            layers,
            config,
        })
    }

    /// `embed_tokens(ids)` → `[n, D]`; ids must be in the vocabulary.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.config.vocab_size) {
            return Err(Error::Invalid(format!(
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

    /// RoPE `cos`, `sin` `[n, head_dim]` for positions 0..n, computed in f32 like HF and cast to
    /// `dtype`.
    pub fn rope_tables(&self, n: usize, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
        let hd = self.config.head_dim();
        let base = self.config.rope_theta as f32;
        let inv: Vec<f32> = (0..hd)
            .step_by(2)
            .map(|k| 1.0 / base.powf(k as f32 / hd as f32))
            .collect();
        let half = inv.len();
        let mut cos = vec![0f32; n * hd];
        let mut sin = vec![0f32; n * hd];
        for p in 0..n {
            for (k, f) in inv.iter().enumerate() {
                let a = p as f32 * f;
                let (s, c) = a.sin_cos();
                for j in [k, k + half] {
                    cos[p * hd + j] = c;
                    sin[p * hd + j] = s;
                }
            }
        }
        let t =
            |v: Vec<f32>| -> Result<Tensor> { Ok(Tensor::from_vec(v, (n, hd), device)?.to_dtype(dtype)?) };
        Ok((t(cos)?, t(sin)?))
    }

    /// Final normed hidden states `[n, D]` of `embeds` `[n, D]` at positions 0..n. When
    /// `last_row_only`, the last layer, the final norm and the output cover only the last row
    /// (the other rows cannot change it: attention is causal).
    pub fn forward_embeds(&self, embeds: &Tensor, last_row_only: bool) -> Result<Tensor> {
        let dtype = self.embed_tokens.dtype();
        let mut h = embeds.to_dtype(dtype)?;
        let n = h.dim(0)?;
        let (cos, sin) = self.rope_tables(n, dtype, h.device())?;
        let count = self.layers.len();
        // the masks are the same in every layer: made once, on the device
        let all_rows = self.attention_masks(0, n, h.device())?;
        for (k, layer) in self.layers.iter().enumerate() {
            if last_row_only && k + 1 == count {
                let last = self.attention_masks(n - 1, n, h.device())?;
                h = self.layer_forward(layer, &h, &cos, &sin, n - 1, &last)?;
            } else {
                h = self.layer_forward(layer, &h, &cos, &sin, 0, &all_rows)?;
            }
        }
        Ok(self.norm.forward(&h)?)
    }

    /// The additive masks (0 or −∞, `[1, rows, keys]`) of the query blocks of rows `from..n`:
    /// causal, and within the sliding window when there is one. Each block sees keys
    /// `lo..b`, `lo` being the window's start for the block's first row.
    fn attention_masks(&self, from: usize, n: usize, device: &Device) -> Result<Vec<Tensor>> {
        let window = self.config.sliding_window;
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

    /// One decoder layer; output rows `from..n`, with the blocks' masks from
    /// [`Self::attention_masks`].
    fn layer_forward(
        &self,
        layer: &Phi3DecoderLayer,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        from: usize,
        masks: &[Tensor],
    ) -> Result<Tensor> {
        let c = &self.config;
        let n = x.dim(0)?;
        let (h, kvh, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let xn = layer.input_layernorm.forward(x)?;
        let qkv = layer.self_attn.qkv_proj.forward(&xn)?;
        let rope = |t: Tensor, heads: usize, rows: usize, start: usize| -> Result<Tensor> {
            let t = t.reshape((rows, heads, hd))?.transpose(0, 1)?.contiguous()?; // [H, rows, hd]
            let cs = cos.narrow(0, start, rows)?;
            let sn = sin.narrow(0, start, rows)?;
            let x1 = t.narrow(D::Minus1, 0, hd / 2)?;
            let x2 = t.narrow(D::Minus1, hd / 2, hd / 2)?;
            let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
            Ok((t.broadcast_mul(&cs)? + rot.broadcast_mul(&sn)?)?)
        };
        let q = rope(
            qkv.narrow(1, 0, h * hd)?.narrow(0, from, n - from)?,
            h,
            n - from,
            from,
        )?;
        let k = rope(qkv.narrow(1, h * hd, kvh * hd)?, kvh, n, 0)?;
        let v = qkv
            .narrow(1, (h + kvh) * hd, kvh * hd)?
            .reshape((n, kvh, hd))?
            .transpose(0, 1)?
            .contiguous()?;
        let (k, v) = if kvh != h {
            let rep = h / kvh;
            let r = |t: Tensor| -> Result<Tensor> {
                Ok(t.unsqueeze(1)?
                    .broadcast_as((kvh, rep, n, hd))?
                    .reshape((h, n, hd))?)
            };
            (r(k)?, r(v)?)
        } else {
            (k, v)
        };
        let scale = 1.0 / (hd as f64).sqrt();
        // Scores in f32 as FlashAttention-2 computes them from bf16 q and k (f32 accumulators,
        // never rounded to bf16); the probabilities go back to v's dtype for p·v, as there.
        let (q, k) = (q.to_dtype(DType::F32)?, k.to_dtype(DType::F32)?);
        let mut outs = Vec::new();
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
        let o = Tensor::cat(&outs, 1)?
            .transpose(0, 1)?
            .reshape((n - from, h * hd))?;
        let o = layer.self_attn.o_proj.forward(&o)?;
        let resid = x.narrow(0, from, n - from)?;
        let h1 = (resid + o)?;
        let gu = layer
            .mlp
            .gate_up_proj
            .forward(&layer.post_attention_layernorm.forward(&h1)?)?;
        let i = c.intermediate_size;
        let gate = gu.narrow(1, 0, i)?;
        let up = gu.narrow(1, i, i)?;
        let m = layer
            .mlp
            .down_proj
            .forward(&(up * candle_nn::ops::silu(&gate)?)?)?;
        Ok((h1 + m)?)
    }
}
