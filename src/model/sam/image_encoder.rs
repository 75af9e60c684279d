//! SAM's `ImageEncoderViT`: patch embedding, absolute position embedding, transformer blocks
//! with 14×14 windowed or global attention and decomposed relative positions, and the neck.

use super::SamConfig;
use crate::model::attention::{attention, Bias, Options};
use crate::model::linear::{Linear, LoadLinear};
use crate::model::LayerNorm;
use crate::model::{conv2d, LayerNorm2d};
use crate::weights::Loader;
use candle_core::{Module, Tensor};

/// `patch_embed.proj`: a stride-`patch` convolution from RGB to `embed_dim`.
#[derive(Debug, Clone)]
pub struct PatchEmbed {
    /// `proj.weight` [D, 3, p, p].
    pub proj_weight: Tensor,
    /// `proj.bias` [D].
    pub proj_bias: Tensor,
    /// Patch size.
    pub patch: usize,
}

/// `blocks.N.attn`: multi-head attention with optional decomposed relative positions.
#[derive(Debug, Clone)]
pub struct Attention {
    /// `qkv` (D → 3D, with bias).
    pub qkv: Linear,
    /// `proj` (D → D).
    pub proj: Linear,
    /// `rel_pos_h` [2·size−1, head_dim].
    pub rel_pos_h: Tensor,
    /// `rel_pos_w` [2·size−1, head_dim].
    pub rel_pos_w: Tensor,
    /// Number of heads.
    pub num_heads: usize,
    /// `head_dim^-0.5`.
    pub scale: f64,
}

/// `blocks.N.mlp`: Linear → GELU (erf) → Linear.
#[derive(Debug, Clone)]
pub struct MlpBlock {
    /// `lin1`.
    pub lin1: Linear,
    /// `lin2`.
    pub lin2: Linear,
}

/// `blocks.N`.
#[derive(Debug, Clone)]
pub struct Block {
    /// `norm1`.
    pub norm1: LayerNorm,
    /// `attn`.
    pub attn: Attention,
    /// `norm2`.
    pub norm2: LayerNorm,
    /// `mlp`.
    pub mlp: MlpBlock,
    /// Window side, 0 for global attention.
    pub window_size: usize,
}

/// The image encoder.
#[derive(Debug, Clone)]
pub struct ImageEncoderViT {
    /// `patch_embed`.
    pub patch_embed: PatchEmbed,
    /// `pos_embed` [1, G, G, D].
    pub pos_embed: Tensor,
    /// `blocks`.
    pub blocks: Vec<Block>,
    /// `neck.0.weight` (1×1 conv, no bias).
    pub neck_conv1: Tensor,
    /// `neck.1`.
    pub neck_ln1: LayerNorm2d,
    /// `neck.2.weight` (3×3 conv, no bias).
    pub neck_conv2: Tensor,
    /// `neck.3`.
    pub neck_ln2: LayerNorm2d,
}

impl ImageEncoderViT {
    /// Loads the encoder under `l` (e.g. `model.visual_model.image_encoder`).
    pub fn load(l: &Loader, c: &SamConfig) -> crate::Result<Self> {
        let d = c.embed_dim;
        let g = c.grid();
        let patch_embed = PatchEmbed {
            proj_weight: l.get("patch_embed.proj.weight", &[d, 3, c.patch_size, c.patch_size])?,
            proj_bias: l.get("patch_embed.proj.bias", &[d])?,
            patch: c.patch_size,
        };
        let pos_embed = l.get("pos_embed", &[1, g, g, d])?;
        let head_dim = d / c.num_heads;
        let mut blocks = Vec::with_capacity(c.depth);
        for i in 0..c.depth {
            let b = l.pp("blocks").pp(i);
            let global = c.global_attn_indexes.contains(&i);
            let window_size = if global { 0 } else { c.window_size };
            let size = if global { g } else { c.window_size };
            let a = b.pp("attn");
            let attn = Attention {
                qkv: a.linear("qkv", d, 3 * d, true)?,
                proj: a.linear("proj", d, d, true)?,
                rel_pos_h: a.get("rel_pos_h", &[2 * size - 1, head_dim])?,
                rel_pos_w: a.get("rel_pos_w", &[2 * size - 1, head_dim])?,
                num_heads: c.num_heads,
                scale: (head_dim as f64).powf(-0.5),
            };
            blocks.push(Block {
                norm1: LayerNorm::load(&b.pp("norm1"), d, 1e-6)?,
                attn,
                norm2: LayerNorm::load(&b.pp("norm2"), d, 1e-6)?,
                mlp: MlpBlock {
                    lin1: b.pp("mlp").linear("lin1", d, c.mlp_dim, true)?,
                    lin2: b.pp("mlp").linear("lin2", c.mlp_dim, d, true)?,
                },
                window_size,
            });
        }
        let o = c.out_chans;
        Ok(ImageEncoderViT {
            patch_embed,
            pos_embed,
            blocks,
            neck_conv1: l.get("neck.0.weight", &[o, d, 1, 1])?,
            neck_ln1: LayerNorm2d::load(&l.pp("neck.1"), o, 1e-6)?,
            neck_conv2: l.get("neck.2.weight", &[o, o, 3, 3])?,
            neck_ln2: LayerNorm2d::load(&l.pp("neck.3"), o, 1e-6)?,
        })
    }

    /// `[B, 3, S, S]` normalised, padded frames → `[B, out_chans, G, G]` image embeddings.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let p = &self.patch_embed;
        let x = conv2d(x, &p.proj_weight, Some(&p.proj_bias), 0, p.patch)?;
        let mut x = x.permute((0, 2, 3, 1))?.broadcast_add(&self.pos_embed)?;
        for blk in &self.blocks {
            x = blk.forward(&x)?;
        }
        let x = x.permute((0, 3, 1, 2))?;
        let x = conv2d(&x, &self.neck_conv1, None, 0, 1)?;
        let x = self.neck_ln1.forward(&x)?;
        let x = conv2d(&x, &self.neck_conv2, None, 1, 1)?;
        self.neck_ln2.forward(&x)
    }
}

/// Zero-pads `[B, H, W, C]` to multiples of `ws` and cuts it into `[B·nh·nw, ws, ws, C]`.
fn window_partition(x: &Tensor, ws: usize) -> candle_core::Result<(Tensor, (usize, usize))> {
    let (b, h, w, c) = x.dims4()?;
    let (ph, pw) = ((ws - h % ws) % ws, (ws - w % ws) % ws);
    let x = if ph > 0 {
        x.pad_with_zeros(1, 0, ph)?
    } else {
        x.clone()
    };
    let x = if pw > 0 { x.pad_with_zeros(2, 0, pw)? } else { x };
    let (hp, wp) = (h + ph, w + pw);
    let x = x
        .reshape((b, hp / ws, ws, wp / ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b * (hp / ws) * (wp / ws), ws, ws, c))?;
    Ok((x, (hp, wp)))
}

/// Inverse of [`window_partition`], cropping the padding.
fn window_unpartition(
    x: &Tensor,
    ws: usize,
    (hp, wp): (usize, usize),
    (h, w): (usize, usize),
) -> candle_core::Result<Tensor> {
    let c = x.dim(3)?;
    let b = x.dim(0)? / (hp * wp / ws / ws);
    let x = x
        .reshape((b, hp / ws, wp / ws, ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b, hp, wp, c))?;
    if hp > h || wp > w {
        x.narrow(1, 0, h)?.narrow(2, 0, w)?.contiguous()
    } else {
        Ok(x)
    }
}

impl Block {
    /// `[B, H, W, D]` → `[B, H, W, D]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let shortcut = x;
        let x = self.norm1.forward(x)?;
        let (h, w) = (x.dim(1)?, x.dim(2)?);
        let x = if self.window_size > 0 {
            let (win, pad) = window_partition(&x, self.window_size)?;
            let y = self.attn.forward(&win)?;
            window_unpartition(&y, self.window_size, pad, (h, w))?
        } else {
            self.attn.forward(&x)?
        };
        let x = (shortcut + x)?;
        let y = self.mlp.lin2.forward(
            &self
                .mlp
                .lin1
                .forward(&self.norm2.forward(&x)?)?
                .apply(&crate::model::gelu_erf)?,
        )?;
        x + y
    }
}

/// Relative position embeddings for every (query, key) pair of one axis: `[q, k, C]`.
fn get_rel_pos(q_size: usize, k_size: usize, rel_pos: &Tensor) -> candle_core::Result<Tensor> {
    let max_rel_dist = 2 * q_size.max(k_size) - 1;
    if rel_pos.dim(0)? != max_rel_dist {
        candle_core::bail!(
            "relative position table of length {} does not fit a {q_size}x{k_size} attention (needs {max_rel_dist})",
            rel_pos.dim(0)?
        );
    }
    let qs = (k_size as f64 / q_size as f64).max(1.0);
    let ks = (q_size as f64 / k_size as f64).max(1.0);
    let idx: Vec<u32> = (0..q_size)
        .flat_map(|i| {
            (0..k_size).map(move |j| (i as f64 * qs - j as f64 * ks + (k_size as f64 - 1.0) * ks) as u32)
        })
        .collect();
    let idx = Tensor::from_vec(idx, q_size * k_size, rel_pos.device())?;
    rel_pos
        .index_select(&idx, 0)?
        .reshape((q_size, k_size, rel_pos.dim(1)?))
}

impl Attention {
    /// `[B, H, W, D]` → `[B, H, W, D]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, h, w, d) = x.dims4()?;
        let nh = self.num_heads;
        let hd = d / nh;
        // [B, h·w, 3, heads, hd]: q, k and v are read in place as [B, h·w, heads, hd]
        let qkv = self.qkv.forward(x)?.reshape((b, h * w, 3, nh, hd))?;
        let part = |i: usize| qkv.narrow(2, i, 1)?.squeeze(2);
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        // rel_h, rel_w read the unscaled q, per head: [B·heads, h, w, hd]
        let q_heads = q.transpose(1, 2)?.contiguous()?.reshape((b * nh, h, w, hd))?;
        let (rel_h, rel_w) = self.rel_pos_terms(&q_heads)?;
        let q = (q * self.scale)?;
        let fused = Options {
            scale: None,
            bias: Bias::RelPos {
                rel_h: &rel_h.reshape((b * nh, h * w, h))?,
                rel_w: &rel_w.reshape((b * nh, h * w, w))?,
            },
            bf16_probs: false,
        };
        if let Some(o) = attention(&q, &k, &v, &fused)? {
            return self.proj.forward(&o.reshape((b, h, w, d))?);
        }
        let heads = |t: Tensor| t.transpose(1, 2)?.contiguous()?.reshape((b * nh, h * w, hd));
        let (q, k, v) = (heads(q)?, heads(k)?, heads(v)?);
        let attn = q
            .matmul(&k.t()?)?
            .reshape((b * nh, h, w, h, w))?
            .broadcast_add(&rel_h.unsqueeze(4)?)?
            .broadcast_add(&rel_w.unsqueeze(3)?)?
            .reshape((b * nh, h * w, h * w))?;
        let attn = crate::model::softmax_last_dim(&attn)?;
        let x = attn
            .matmul(&v)?
            .reshape((b, nh, h, w, hd))?
            .permute((0, 2, 3, 1, 4))?
            .contiguous()?
            .reshape((b, h, w, d))?;
        self.proj.forward(&x)
    }

    /// SAM's decomposed relative positions of the per-head queries `[B·heads, h, w, C]`:
    /// `rel_h[b,y,x,k] = Σ_c q[b,y,x,c]·Rh[y,k,c]` `[B·heads, h, w, k_h]` and likewise `rel_w`
    /// `[B·heads, h, w, k_w]`.
    fn rel_pos_terms(&self, r_q: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (bn, h, w, c) = r_q.dims4()?;
        let rh = get_rel_pos(h, h, &self.rel_pos_h)?; // [h, k_h, C]
        let rw = get_rel_pos(w, w, &self.rel_pos_w)?; // [w, k_w, C]
                                                      // over h: [h, B·w, C] @ [h, C, k_h] → [h, B·w, k_h] → [B, h, w, k_h]
        let rel_h = r_q
            .permute((1, 0, 2, 3))?
            .contiguous()?
            .reshape((h, bn * w, c))?
            .matmul(&rh.transpose(1, 2)?.contiguous()?)?
            .reshape((h, bn, w, h))?
            .permute((1, 0, 2, 3))?;
        // over w: [w, B·h, C] @ [w, C, k_w] → [w, B·h, k_w] → [B, h, w, k_w]
        let rel_w = r_q
            .permute((2, 0, 1, 3))?
            .contiguous()?
            .reshape((w, bn * h, c))?
            .matmul(&rw.transpose(1, 2)?.contiguous()?)?
            .reshape((w, bn, h, w))?
            .permute((1, 2, 0, 3))?;
        Ok((rel_h.contiguous()?, rel_w.contiguous()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn windows_round_trip_with_padding() {
        let x = Tensor::arange(0f32, (2 * 5 * 7 * 3) as f32, &Device::Cpu)
            .unwrap()
            .reshape((2, 5, 7, 3))
            .unwrap();
        let (win, pad) = window_partition(&x, 4).unwrap();
        assert_eq!(win.dims(), &[2 * 2 * 2, 4, 4, 3]);
        assert_eq!(pad, (8, 8));
        let back = window_unpartition(&win, 4, pad, (5, 7)).unwrap();
        let diff = (back - &x)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
    }

    #[test]
    fn rel_pos_index_is_i_minus_j_plus_k_minus_1() {
        let table = Tensor::arange(0f32, 5.0, &Device::Cpu)
            .unwrap()
            .reshape((5, 1))
            .unwrap();
        let r = get_rel_pos(3, 3, &table)
            .unwrap()
            .squeeze(2)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        assert_eq!(
            r.to_vec2::<f32>().unwrap(),
            vec![vec![2., 1., 0.], vec![3., 2., 1.], vec![4., 3., 2.]]
        );
    }
}
