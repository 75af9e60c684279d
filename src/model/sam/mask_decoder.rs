//! SAM's `MaskDecoder` and its `TwoWayTransformer`: tokens (IoU token, mask tokens, prompt)
//! attend to the image embedding and back, then hypernetwork MLPs turn the mask tokens into
//! per-pixel weights over the upscaled embedding.

use super::SamConfig;
use crate::model::linear::{Linear, LoadLinear};
use crate::model::LayerNorm;
use crate::weights::Loader;
use candle_core::{Module, Tensor};

/// `transformer.layers.N.*_attn*`: attention with an internal dim of `dim / downsample`.
#[derive(Debug, Clone)]
pub struct Attention {
    /// `q_proj`.
    pub q_proj: Linear,
    /// `k_proj`.
    pub k_proj: Linear,
    /// `v_proj`.
    pub v_proj: Linear,
    /// `out_proj`.
    pub out_proj: Linear,
    /// Number of heads.
    pub num_heads: usize,
}

impl Attention {
    fn load(l: &Loader, dim: usize, internal: usize, num_heads: usize) -> crate::Result<Self> {
        Ok(Attention {
            q_proj: l.linear("q_proj", dim, internal, true)?,
            k_proj: l.linear("k_proj", dim, internal, true)?,
            v_proj: l.linear("v_proj", dim, internal, true)?,
            out_proj: l.linear("out_proj", internal, dim, true)?,
            num_heads,
        })
    }

    /// `softmax(q kᵀ / √d) v` per head, then `out_proj`. One side is always a handful of
    /// tokens, so its heads are laid out block-diagonally (`[H·n, C]`, head h's row keeps only
    /// its own d columns, zeros elsewhere): every head of the other side then runs in one GEMM
    /// against its `[N, C]` projection as it is, with no head-split copies of the image side.
    /// The zeros add nothing, so each score and output sums the same products as per head.
    pub fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
        let (q, k, v) = (
            self.q_proj.forward(q)?,
            self.k_proj.forward(k)?,
            self.v_proj.forward(v)?,
        );
        let (b, nq, c) = q.dims3()?;
        let (h, nk) = (self.num_heads, k.dim(1)?);
        let scale = ((c / h) as f64).sqrt();
        let out = if nk <= nq {
            // few keys: scores [B, Nq, H·Nk], softmax per head over its Nk
            let s = (q.matmul(&self.block_diagonal(&k)?.t()?)? / scale)?;
            let p = crate::model::softmax_last_dim(&s.reshape((b, nq, h, nk))?)?;
            p.reshape((b, nq, h * nk))?.matmul(&self.block_diagonal(&v)?)?
        } else {
            // few queries: scores [B, H·Nq, Nk]; each head's output is its block of the product
            let s = (self.block_diagonal(&q)?.matmul(&k.t()?)? / scale)?;
            let o = crate::model::softmax_last_dim(&s)?.matmul(&v)?;
            let o = o.reshape((b, h, nq, h, c / h))?;
            o.broadcast_mul(&self.head_eye(o.dtype(), o.device())?.reshape((1, h, 1, h, 1))?)?
                .sum(1)?
                .reshape((b, nq, c))?
        };
        self.out_proj.forward(&out)
    }

    /// `[B, n, C]` → `[B, H·n, C]`: row (h, i) holds token i's head-h columns, zeros elsewhere.
    fn block_diagonal(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let h = self.num_heads;
        let eye = self.head_eye(x.dtype(), x.device())?.reshape((1, h, 1, h, 1))?;
        x.reshape((b, 1, n, h, c / h))?
            .broadcast_mul(&eye)?
            .reshape((b, h * n, c))
    }

    /// The `[H, H]` identity.
    fn head_eye(
        &self,
        dtype: candle_core::DType,
        device: &candle_core::Device,
    ) -> candle_core::Result<Tensor> {
        Tensor::eye(self.num_heads, dtype, device)
    }
}

/// `transformer.layers.N`.
#[derive(Debug, Clone)]
pub struct TwoWayAttentionBlock {
    /// `self_attn`.
    pub self_attn: Attention,
    /// `norm1`.
    pub norm1: LayerNorm,
    /// `cross_attn_token_to_image`.
    pub cross_attn_token_to_image: Attention,
    /// `norm2`.
    pub norm2: LayerNorm,
    /// `mlp.lin1`.
    pub mlp_lin1: Linear,
    /// `mlp.lin2`.
    pub mlp_lin2: Linear,
    /// `norm3`.
    pub norm3: LayerNorm,
    /// `norm4`.
    pub norm4: LayerNorm,
    /// `cross_attn_image_to_token`.
    pub cross_attn_image_to_token: Attention,
    /// Layer 0 adds no positional encoding to its self-attention and has no residual there.
    pub skip_first_layer_pe: bool,
}

impl TwoWayAttentionBlock {
    fn forward(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        query_pe: &Tensor,
        key_pe: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries, queries, queries)?
        } else {
            let q = (queries + query_pe)?;
            (queries + self.self_attn.forward(&q, &q, queries)?)?
        };
        let queries = self.norm1.forward(&queries)?;
        let q = (&queries + query_pe)?;
        let k = keys.broadcast_add(key_pe)?;
        let queries = (&queries + self.cross_attn_token_to_image.forward(&q, &k, keys)?)?;
        let queries = self.norm2.forward(&queries)?;
        let mlp = self.mlp_lin2.forward(&self.mlp_lin1.forward(&queries)?.relu()?)?;
        let queries = self.norm3.forward(&(queries + mlp)?)?;
        let q = (&queries + query_pe)?;
        let keys = (keys + self.cross_attn_image_to_token.forward(&k, &q, &queries)?)?;
        let keys = self.norm4.forward(&keys)?;
        Ok((queries, keys))
    }
}

/// `[B, C, h, w]` → `[B, h·w, C]` contiguous: a view when the memory is already channels-last
/// (the dense PE is computed that way), else one tiled transpose.
fn channels_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let view = x.permute((0, 2, 3, 1))?;
    if view.is_contiguous() {
        return view.reshape((b, h * w, c));
    }
    crate::model::transpose_last2(&x.contiguous()?.reshape((b, c, h * w))?)
}

/// `transformer`.
#[derive(Debug, Clone)]
pub struct TwoWayTransformer {
    /// `layers`.
    pub layers: Vec<TwoWayAttentionBlock>,
    /// `final_attn_token_to_image`.
    pub final_attn_token_to_image: Attention,
    /// `norm_final_attn`.
    pub norm_final_attn: LayerNorm,
}

impl TwoWayTransformer {
    /// `image_embedding` `[B, C, h, w]`, `image_pe` `[1 or B, C, h, w]`, `point_embedding` `[B, N, C]` →
    /// (queries `[B, N, C]`, keys `[B, h·w, C]`).
    pub fn forward(
        &self,
        image_embedding: &Tensor,
        image_pe: &Tensor,
        point_embedding: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let image_embedding = channels_last(image_embedding)?;
        // [1 or B, h·w, C], added with broadcasting (the reference repeats it per prompt)
        let image_pe = channels_last(image_pe)?;
        let mut queries = point_embedding.clone();
        let mut keys = image_embedding;
        for layer in &self.layers {
            (queries, keys) = layer.forward(&queries, &keys, point_embedding, &image_pe)?;
        }
        let q = (&queries + point_embedding)?;
        let k = keys.broadcast_add(&image_pe)?;
        let attn = self.final_attn_token_to_image.forward(&q, &k, &keys)?;
        let queries = self.norm_final_attn.forward(&(queries + attn)?)?;
        Ok((queries, keys))
    }
}

/// `output_hypernetworks_mlps.N` / `iou_prediction_head`: Linear layers with ReLU between.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// `layers`.
    pub layers: Vec<Linear>,
}

impl Mlp {
    fn load(l: &Loader, d_in: usize, hidden: usize, d_out: usize, depth: usize) -> crate::Result<Self> {
        let layers = (0..depth)
            .map(|i| {
                let a = if i == 0 { d_in } else { hidden };
                let b = if i + 1 == depth { d_out } else { hidden };
                l.pp("layers").linear(&i.to_string(), a, b, true)
            })
            .collect::<crate::Result<_>>()?;
        Ok(Mlp { layers })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(&x)?;
            if i + 1 < self.layers.len() {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}

/// The mask decoder.
#[derive(Debug, Clone)]
pub struct MaskDecoder {
    /// `iou_token.weight` [1, C].
    pub iou_token: Tensor,
    /// `mask_tokens.weight` [M, C].
    pub mask_tokens: Tensor,
    /// `transformer`.
    pub transformer: TwoWayTransformer,
    /// `output_upscaling.0` ConvTranspose2d (weight [C, C/4, 2, 2], bias).
    pub upscale1: (Tensor, Tensor),
    /// `output_upscaling.1` LayerNorm2d.
    pub upscale_norm: crate::model::LayerNorm2d,
    /// `output_upscaling.3` ConvTranspose2d (weight [C/4, C/8, 2, 2], bias).
    pub upscale2: (Tensor, Tensor),
    /// `output_hypernetworks_mlps`.
    pub output_hypernetworks_mlps: Vec<Mlp>,
    /// `iou_prediction_head`.
    pub iou_prediction_head: Mlp,
}

impl MaskDecoder {
    /// Loads the decoder under `l` (e.g. `model.visual_model.mask_decoder`).
    pub fn load(l: &Loader, c: &SamConfig) -> crate::Result<Self> {
        let d = c.prompt_embed_dim;
        let m = c.num_multimask_outputs + 1;
        let t = l.pp("transformer");
        let internal = d / 2;
        let heads = c.decoder_heads;
        let layers = (0..c.decoder_depth)
            .map(|i| {
                let b = t.pp("layers").pp(i);
                Ok(TwoWayAttentionBlock {
                    self_attn: Attention::load(&b.pp("self_attn"), d, d, heads)?,
                    norm1: LayerNorm::load(&b.pp("norm1"), d, 1e-5)?,
                    cross_attn_token_to_image: Attention::load(
                        &b.pp("cross_attn_token_to_image"),
                        d,
                        internal,
                        heads,
                    )?,
                    norm2: LayerNorm::load(&b.pp("norm2"), d, 1e-5)?,
                    mlp_lin1: b.pp("mlp").linear("lin1", d, c.decoder_mlp_dim, true)?,
                    mlp_lin2: b.pp("mlp").linear("lin2", c.decoder_mlp_dim, d, true)?,
                    norm3: LayerNorm::load(&b.pp("norm3"), d, 1e-5)?,
                    norm4: LayerNorm::load(&b.pp("norm4"), d, 1e-5)?,
                    cross_attn_image_to_token: Attention::load(
                        &b.pp("cross_attn_image_to_token"),
                        d,
                        internal,
                        heads,
                    )?,
                    skip_first_layer_pe: i == 0,
                })
            })
            .collect::<crate::Result<_>>()?;
        let transformer = TwoWayTransformer {
            layers,
            final_attn_token_to_image: Attention::load(
                &t.pp("final_attn_token_to_image"),
                d,
                internal,
                heads,
            )?,
            norm_final_attn: LayerNorm::load(&t.pp("norm_final_attn"), d, 1e-5)?,
        };
        let up = l.pp("output_upscaling");
        Ok(MaskDecoder {
            iou_token: l.get("iou_token.weight", &[1, d])?,
            mask_tokens: l.get("mask_tokens.weight", &[m, d])?,
            transformer,
            upscale1: (
                up.get("0.weight", &[d, d / 4, 2, 2])?,
                up.get("0.bias", &[d / 4])?,
            ),
            upscale_norm: crate::model::LayerNorm2d::load(&up.pp(1), d / 4, 1e-6)?,
            upscale2: (
                up.get("3.weight", &[d / 4, d / 8, 2, 2])?,
                up.get("3.bias", &[d / 8])?,
            ),
            output_hypernetworks_mlps: (0..m)
                .map(|i| Mlp::load(&l.pp("output_hypernetworks_mlps").pp(i), d, d, d / 8, 3))
                .collect::<crate::Result<_>>()?,
            iou_prediction_head: Mlp::load(
                &l.pp("iou_prediction_head"),
                d,
                c.iou_head_hidden_dim,
                m,
                c.iou_head_depth,
            )?,
        })
    }

    /// `ConvTranspose2d(kernel 2, stride 2)` on channels-last pixels `[P, Ci]` → `[4P, Co]`,
    /// rows in (pixel, ky, kx) order: the kernel's blocks do not overlap, so every output value
    /// is one input pixel's dot product with one weight column plus the bias — a single GEMM
    /// against the weight `[Ci, Co, 2, 2]` laid out as `[Ci, (ky, kx, Co)]`.
    fn conv_t_2x2(x: &Tensor, (w, b): &(Tensor, Tensor)) -> candle_core::Result<Tensor> {
        let (ci, co) = (w.dim(0)?, w.dim(1)?);
        let w = w.permute((0, 2, 3, 1))?.reshape((ci, 4 * co))?;
        let y = x.matmul(&w)?.reshape((x.dim(0)? * 4, co))?;
        y.broadcast_add(&b.reshape((1, co))?)
    }

    /// `output_upscaling` on channels-last pixels `[P, C]` (P = B·h·w in raster order) →
    /// `[16P, C/8]`, rows in (pixel, ky, kx, ky2, kx2) order: conv-transpose, `LayerNorm2d`
    /// over the channels, GELU, conv-transpose, GELU — the reference's NCHW passes with the
    /// channels contiguous, so no transposes around them.
    fn upscale(&self, src: &Tensor) -> candle_core::Result<Tensor> {
        let up = Self::conv_t_2x2(src, &self.upscale1)?;
        let up = self
            .upscale_norm
            .forward_last_dim(&up)?
            .apply(&crate::model::gelu_erf)?;
        crate::model::gelu_erf(&Self::conv_t_2x2(&up, &self.upscale2)?)
    }

    /// All mask slots: image embeddings `[B, C, h, w]` (one per prompt set), dense PE
    /// `[1, C, h, w]`, sparse `[B, N, C]`, dense `[B, C, h, w]` → (masks `[B, M, 4h, 4w]`,
    /// IoU predictions `[B, M]`).
    pub fn predict_masks(
        &self,
        image_embeddings: &Tensor,
        image_pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let b = sparse.dim(0)?;
        let output_tokens = Tensor::cat(&[&self.iou_token, &self.mask_tokens], 0)?;
        let n_out = output_tokens.dim(0)?;
        let output_tokens = output_tokens
            .unsqueeze(0)?
            .broadcast_as((b, n_out, output_tokens.dim(1)?))?;
        let tokens = Tensor::cat(&[&output_tokens.to_dtype(sparse.dtype())?, sparse], 1)?;
        let src = if image_embeddings.dim(0)? == b {
            image_embeddings.clone()
        } else {
            // repeat_interleave over the prompt batch, as the reference does for one image
            image_embeddings
                .broadcast_as((
                    b,
                    image_embeddings.dim(1)?,
                    image_embeddings.dim(2)?,
                    image_embeddings.dim(3)?,
                ))?
                .contiguous()?
        };
        let src = src.broadcast_add(dense)?;
        let (_, c, h, w) = src.dims4()?;
        let (hs, src) = self.transformer.forward(&src, image_pe, &tokens)?;
        let iou_token_out = hs.get_on_dim(1, 0)?;
        let m = self.output_hypernetworks_mlps.len();
        let up = self.upscale(&src.reshape((b * h * w, c))?)?;
        let hyper_in = (0..m)
            .map(|i| self.output_hypernetworks_mlps[i].forward(&hs.get_on_dim(1, 1 + i)?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let hyper_in = Tensor::stack(&hyper_in, 1)?; // [B, M, C/8]
        let cu = up.dim(1)?;
        // per pixel of the upscaled grid: [B, 16·h·w, M], then the (y, ky, ky2) × (x, kx, kx2)
        // rows laid back into the 4h × 4w image
        let masks = up.reshape((b, 16 * h * w, cu))?.matmul(&hyper_in.t()?)?;
        let masks = masks
            .reshape(vec![b, h, w, 2, 2, 2, 2, m])?
            .permute(vec![0, 7, 1, 3, 5, 2, 4, 6])?
            .contiguous()?
            .reshape((b, m, 4 * h, 4 * w))?;
        let iou = self.iou_prediction_head.forward(&iou_token_out)?;
        Ok((masks, iou))
    }

    /// `forward(..., multimask_output)`: slot 0 only (VideoLISA, P13) or slots 1.. (multimask).
    pub fn forward(
        &self,
        image_embeddings: &Tensor,
        image_pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
        multimask: bool,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (masks, iou) = self.predict_masks(image_embeddings, image_pe, sparse, dense)?;
        let m = masks.dim(1)?;
        let (start, len) = if multimask { (1, m - 1) } else { (0, 1) };
        Ok((masks.narrow(1, start, len)?, iou.narrow(1, start, len)?))
    }
}
