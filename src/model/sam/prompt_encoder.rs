//! SAM's `PromptEncoder`, complete: points, boxes and mask prompts, plus the path VideoLISA
//! uses (a given sparse embedding such as the `[SEG]` prompt, and `no_mask_embed` as dense).

use super::SamConfig;
use crate::model::{conv2d, LayerNorm2d};
use crate::weights::Loader;
use candle_core::{DType, Module, Tensor, D};

/// `pe_layer`: random Fourier features of normalised coordinates.
#[derive(Debug, Clone)]
pub struct PositionEmbeddingRandom {
    /// `positional_encoding_gaussian_matrix` [2, C/2].
    pub positional_encoding_gaussian_matrix: Tensor,
}

impl PositionEmbeddingRandom {
    /// `[.., 2]` coordinates in [0, 1] → `[.., C]` as `[sin(2π(2x−1)G), cos(…)]`, computed in the
    /// dtype of the matrix (VideoLISA runs it in bf16, P7).
    pub fn pe_encoding(&self, coords: &Tensor) -> candle_core::Result<Tensor> {
        let g = &self.positional_encoding_gaussian_matrix;
        let dtype = g.dtype();
        // Computed in f32 and rounded to the matrix dtype after each reference op, because
        // PyTorch applies Python scalars in f32 even to bf16 tensors (candle would round 2π).
        let work = if dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let round = |t: Tensor| -> candle_core::Result<Tensor> {
            if dtype == work {
                Ok(t)
            } else {
                t.to_dtype(dtype)?.to_dtype(work)
            }
        };
        let coords = round(coords.to_dtype(dtype)?.to_dtype(work)?)?;
        let coords = round(((coords * 2.0)? - 1.0)?)?;
        let dims = coords.dims().to_vec();
        let n: usize = dims[..dims.len() - 1].iter().product();
        let coords = round(coords.reshape((n, 2))?.matmul(&round(g.to_dtype(work)?)?)?)?;
        let coords = round((coords * (2.0 * std::f64::consts::PI))?)?;
        let out = Tensor::cat(&[coords.sin()?, coords.cos()?], D::Minus1)?.to_dtype(dtype)?;
        let mut shape = dims;
        *shape.last_mut().expect("rank >= 1") = out.dim(1)?;
        out.reshape(shape)
    }

    /// Encoding of the `h`×`w` grid of cell centres: `[C, h, w]`.
    pub fn forward(&self, h: usize, w: usize) -> candle_core::Result<Tensor> {
        let dev = self.positional_encoding_gaussian_matrix.device();
        let dtype = self.positional_encoding_gaussian_matrix.dtype();
        // (cumsum − 0.5) / size, built in the matrix dtype like the reference
        // true division (candle's scalar division multiplies by the reciprocal)
        let axis = |n: usize| -> candle_core::Result<Tensor> {
            let v = (Tensor::arange(0u32, n as u32, dev)?.to_dtype(DType::F64)? + 0.5)?;
            let v = v.broadcast_div(&Tensor::new(n as f64, dev)?)?;
            // f32 division like the reference, unless the model runs in f64
            if dtype == DType::F64 {
                Ok(v)
            } else {
                v.to_dtype(DType::F32)?.to_dtype(dtype)
            }
        };
        let (ys, xs) = (axis(h)?, axis(w)?);
        let x = xs.reshape((1, w))?.broadcast_as((h, w))?;
        let y = ys.reshape((h, 1))?.broadcast_as((h, w))?;
        let grid = Tensor::stack(&[x, y], D::Minus1)?;
        self.pe_encoding(&grid)?.permute((2, 0, 1))
    }

    /// Encoding of pixel coordinates `[B, N, 2]` (x, y) in an image of `(h, w)`.
    pub fn forward_with_coords(
        &self,
        coords: &Tensor,
        (h, w): (usize, usize),
    ) -> candle_core::Result<Tensor> {
        let coords = coords.to_dtype(DType::F32)?;
        let dev = coords.device();
        let x = coords
            .narrow(D::Minus1, 0, 1)?
            .broadcast_div(&Tensor::new(w as f32, dev)?)?;
        let y = coords
            .narrow(D::Minus1, 1, 1)?
            .broadcast_div(&Tensor::new(h as f32, dev)?)?;
        self.pe_encoding(&Tensor::cat(&[x, y], D::Minus1)?)
    }
}

/// The prompt encoder.
#[derive(Debug, Clone)]
pub struct PromptEncoder {
    /// `pe_layer`.
    pub pe_layer: PositionEmbeddingRandom,
    /// `point_embeddings.{0..3}.weight`: negative point, positive point, box corner 1, box corner 2.
    pub point_embeddings: Vec<Tensor>,
    /// `not_a_point_embed.weight` [1, C].
    pub not_a_point_embed: Tensor,
    /// `mask_downscaling.{0,3,6}` convolutions (weight, bias).
    pub mask_convs: [(Tensor, Tensor); 3],
    /// `mask_downscaling.{1,4}` LayerNorm2d.
    pub mask_norms: [LayerNorm2d; 2],
    /// `no_mask_embed.weight` [1, C].
    pub no_mask_embed: Tensor,
    /// Prompt embedding dimension C.
    pub embed_dim: usize,
    /// Image embedding grid (h, w).
    pub image_embedding_size: (usize, usize),
    /// Model input size (h, w).
    pub input_image_size: (usize, usize),
}

/// Prompts for [`PromptEncoder::forward`] (all optional).
#[derive(Debug, Clone, Default)]
pub struct Prompts<'a> {
    /// Point coordinates `[B, N, 2]` (x, y in input pixels) and labels `[B, N]` (1 fg, 0 bg, −1 pad).
    pub points: Option<(&'a Tensor, &'a Tensor)>,
    /// Boxes `[B, 4]` (x0, y0, x1, y1).
    pub boxes: Option<&'a Tensor>,
    /// Low-resolution mask logits `[B, 1, 4h, 4w]`.
    pub masks: Option<&'a Tensor>,
    /// Ready-made sparse embeddings `[B, N, C]` (LISA's `text_embeds`: the `[SEG]` prompt).
    pub text_embeds: Option<&'a Tensor>,
}

impl PromptEncoder {
    /// Loads the prompt encoder under `l` (e.g. `model.visual_model.prompt_encoder`).
    pub fn load(l: &Loader, c: &SamConfig) -> crate::Result<Self> {
        let e = c.prompt_embed_dim;
        let m = c.mask_in_chans;
        let md = l.pp("mask_downscaling");
        let conv = |i: usize, cin: usize, cout: usize, k: usize| -> crate::Result<(Tensor, Tensor)> {
            Ok((
                md.get(&format!("{i}.weight"), &[cout, cin, k, k])?,
                md.get(&format!("{i}.bias"), &[cout])?,
            ))
        };
        Ok(PromptEncoder {
            pe_layer: PositionEmbeddingRandom {
                positional_encoding_gaussian_matrix: l
                    .get("pe_layer.positional_encoding_gaussian_matrix", &[2, e / 2])?,
            },
            point_embeddings: (0..4)
                .map(|i| l.get(&format!("point_embeddings.{i}.weight"), &[1, e]))
                .collect::<crate::Result<_>>()?,
            not_a_point_embed: l.get("not_a_point_embed.weight", &[1, e])?,
            mask_convs: [conv(0, 1, m / 4, 2)?, conv(3, m / 4, m, 2)?, conv(6, m, e, 1)?],
            mask_norms: [
                LayerNorm2d::load(&md.pp(1), m / 4, 1e-6)?,
                LayerNorm2d::load(&md.pp(4), m, 1e-6)?,
            ],
            no_mask_embed: l.get("no_mask_embed.weight", &[1, e])?,
            embed_dim: e,
            image_embedding_size: (c.grid(), c.grid()),
            input_image_size: (c.img_size, c.img_size),
        })
    }

    /// `get_dense_pe()`: `[1, C, h, w]`.
    pub fn get_dense_pe(&self) -> candle_core::Result<Tensor> {
        let (h, w) = self.image_embedding_size;
        self.pe_layer.forward(h, w)?.unsqueeze(0)
    }

    fn embed_points(&self, points: &Tensor, labels: &Tensor, pad: bool) -> candle_core::Result<Tensor> {
        let points = (points.to_dtype(DType::F32)? + 0.5)?;
        let labels = labels.to_dtype(DType::F32)?;
        let (points, labels) = if pad {
            let b = points.dim(0)?;
            let pp = Tensor::zeros((b, 1, 2), DType::F32, points.device())?;
            let pl = (Tensor::ones((b, 1), DType::F32, points.device())? * -1.0)?;
            (Tensor::cat(&[&points, &pp], 1)?, Tensor::cat(&[&labels, &pl], 1)?)
        } else {
            (points, labels)
        };
        let pe = self
            .pe_layer
            .forward_with_coords(&points, self.input_image_size)?;
        let dt = pe.dtype();
        let is = |v: f64| -> candle_core::Result<Tensor> { labels.eq(v)?.to_dtype(dt)?.unsqueeze(2) };
        let (pad_m, neg_m, pos_m) = (is(-1.0)?, is(0.0)?, is(1.0)?);
        let keep = (1.0 - &pad_m)?;
        let emb = |t: &Tensor| -> candle_core::Result<Tensor> { t.to_dtype(dt)?.unsqueeze(0) };
        pe.broadcast_mul(&keep)?
            .broadcast_add(&pad_m.broadcast_mul(&emb(&self.not_a_point_embed)?)?)?
            .broadcast_add(&neg_m.broadcast_mul(&emb(&self.point_embeddings[0])?)?)?
            .broadcast_add(&pos_m.broadcast_mul(&emb(&self.point_embeddings[1])?)?)
    }

    fn embed_boxes(&self, boxes: &Tensor) -> candle_core::Result<Tensor> {
        let boxes = (boxes.to_dtype(DType::F32)? + 0.5)?;
        let coords = boxes.reshape((boxes.dim(0)?, 2, 2))?;
        let pe = self
            .pe_layer
            .forward_with_coords(&coords, self.input_image_size)?;
        let dt = pe.dtype();
        let corner = Tensor::cat(
            &[
                self.point_embeddings[2].to_dtype(dt)?,
                self.point_embeddings[3].to_dtype(dt)?,
            ],
            0,
        )?;
        pe.broadcast_add(&corner.unsqueeze(0)?)
    }

    fn embed_masks(&self, masks: &Tensor) -> candle_core::Result<Tensor> {
        let [(w0, b0), (w1, b1), (w2, b2)] = &self.mask_convs;
        let x = conv2d(masks, w0, Some(b0), 0, 2)?;
        let x = self.mask_norms[0].forward(&x)?.apply(&crate::model::gelu_erf)?;
        let x = conv2d(&x, w1, Some(b1), 0, 2)?;
        let x = self.mask_norms[1].forward(&x)?.apply(&crate::model::gelu_erf)?;
        conv2d(&x, w2, Some(b2), 0, 1)
    }

    /// `(sparse [B, N, C], dense [B, C, h, w])` for the given prompts.
    pub fn forward(&self, p: &Prompts<'_>) -> candle_core::Result<(Tensor, Tensor)> {
        let b = if let Some((pts, _)) = p.points {
            pts.dim(0)?
        } else if let Some(bx) = p.boxes {
            bx.dim(0)?
        } else if let Some(m) = p.masks {
            m.dim(0)?
        } else if let Some(t) = p.text_embeds {
            t.dim(0)?
        } else {
            1
        };
        let dev = self.no_mask_embed.device();
        let mut parts = Vec::new();
        if let Some((pts, labels)) = p.points {
            parts.push(self.embed_points(pts, labels, p.boxes.is_none())?);
        }
        if let Some(bx) = p.boxes {
            parts.push(self.embed_boxes(bx)?);
        }
        if let Some(t) = p.text_embeds {
            parts.push(t.clone());
        }
        let dtype = self.no_mask_embed.dtype();
        let sparse = if parts.is_empty() {
            Tensor::zeros((b, 0, self.embed_dim), dtype, dev)?
        } else {
            let parts: Vec<Tensor> = parts
                .iter()
                .map(|t| t.to_dtype(dtype))
                .collect::<candle_core::Result<_>>()?;
            Tensor::cat(&parts, 1)?
        };
        let (h, w) = self.image_embedding_size;
        let dense = match p.masks {
            Some(m) => self.embed_masks(&m.to_dtype(dtype)?)?,
            None => self
                .no_mask_embed
                .reshape((1, self.embed_dim, 1, 1))?
                .broadcast_as((b, self.embed_dim, h, w))?, // a view: consumers broadcast-add it
        };
        Ok((sparse, dense))
    }
}
