//! Segment Anything (ViT-B/L/H and any other size), configured from tensor shapes: the image
//! encoder runs on every frame, the prompt encoder and mask decoder turn one prompt embedding
//! into a mask per frame, and post-processing brings the logits back to the frame size.

pub mod image_encoder;
pub mod mask_decoder;
pub mod prompt_encoder;

use crate::error::{Error, Result};
use crate::weights::Loader;
use candle_core::{DType, Device, Tensor};
pub use image_encoder::ImageEncoderViT;
pub use mask_decoder::MaskDecoder;
pub use prompt_encoder::{PromptEncoder, Prompts};

/// Prefix of SAM inside a VideoLISA checkpoint.
pub const VIDEOLISA_PREFIX: &str = "model.visual_model";

/// Sizes of a SAM, all read from the checkpoint's tensor shapes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SamConfig {
    /// Model input side (1024).
    pub img_size: usize,
    /// Patch side (16).
    pub patch_size: usize,
    /// Encoder width (768 B, 1024 L, 1280 H).
    pub embed_dim: usize,
    /// Encoder blocks (12, 24, 32).
    pub depth: usize,
    /// Encoder heads (embed_dim / rel-pos head dim).
    pub num_heads: usize,
    /// Encoder MLP width.
    pub mlp_dim: usize,
    /// Window side of windowed blocks (14).
    pub window_size: usize,
    /// Blocks with global attention (rel-pos table as long as the grid needs).
    pub global_attn_indexes: Vec<usize>,
    /// Neck output channels (256).
    pub out_chans: usize,
    /// Prompt embedding dim (256).
    pub prompt_embed_dim: usize,
    /// Mask-prompt hidden channels (16).
    pub mask_in_chans: usize,
    /// Two-way transformer layers (2).
    pub decoder_depth: usize,
    /// Two-way transformer heads (8; not recorded in weights, SAM's value).
    pub decoder_heads: usize,
    /// Two-way transformer MLP width (2048).
    pub decoder_mlp_dim: usize,
    /// Multimask outputs (3).
    pub num_multimask_outputs: usize,
    /// IoU head layers (3).
    pub iou_head_depth: usize,
    /// IoU head width (256).
    pub iou_head_hidden_dim: usize,
}

impl SamConfig {
    /// Image-embedding grid side (`img_size / patch_size`).
    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Bytes one frame adds to an image-encoder batch, from the sizes: a global-attention
    /// block holds `heads × tokens²` scores several times over (the product, the two rel-pos
    /// sums, the f32 softmax input and output, the result) — 4.3 GB for ViT-H in bf16 — next to
    /// which the activations (0.19 GB) are small.
    pub fn encode_bytes_per_frame(&self, dtype: DType) -> u64 {
        let c = self;
        let tokens = (c.grid() * c.grid()) as u64;
        let e = dtype.size_in_bytes() as u64;
        let scores = c.num_heads as u64 * tokens * tokens * (4 * e + 8);
        let activations = tokens * (10 * c.embed_dim + 2 * c.mlp_dim) as u64 * e;
        scores + activations
    }

    /// Reads every size from the tensors under `l` (the `Sam` root: `image_encoder.…`).
    pub fn from_weights(l: &Loader) -> Result<Self> {
        let ie = l.pp("image_encoder");
        let patch = ie.shape("patch_embed.proj.weight")?;
        let pos = ie.shape("pos_embed")?;
        let bad = |what: String| {
            Error::Checkpoint(format!("{}: {what}", l.weights().file_of(&ie.name("pos_embed"))))
        };
        if patch.len() != 4 || pos.len() != 4 || pos[1] != pos[2] || patch[2] != patch[3] {
            return Err(bad(format!(
                "unexpected patch embedding {patch:?} / position embedding {pos:?}"
            )));
        }
        let (embed_dim, patch_size, grid) = (patch[0], patch[2], pos[1]);
        let mut depth = 0;
        while ie.contains(&format!("blocks.{depth}.attn.rel_pos_h"))
            || ie.contains(&format!("blocks.{depth}.norm1.weight"))
        {
            depth += 1;
        }
        if depth == 0 {
            return Err(bad("the image encoder has no blocks".into()));
        }
        let mut global = Vec::new();
        let mut window_size = 0;
        let mut head_dim = 0;
        for i in 0..depth {
            let r = ie.shape(&format!("blocks.{i}.attn.rel_pos_h"))?;
            head_dim = r[1];
            let side = r[0].div_ceil(2);
            if side == grid {
                global.push(i);
            } else {
                window_size = side;
            }
        }
        if head_dim == 0 || embed_dim % head_dim != 0 {
            return Err(bad(format!(
                "relative-position head dim {head_dim} does not divide the width {embed_dim}"
            )));
        }
        let pe = l.pp("prompt_encoder");
        let md = l.pp("mask_decoder");
        let prompt_embed_dim = pe.shape("no_mask_embed.weight")?[1];
        let mut decoder_depth = 0;
        while md.contains(&format!("transformer.layers.{decoder_depth}.norm1.weight")) {
            decoder_depth += 1;
        }
        let mut iou_head_depth = 0;
        while md.contains(&format!("iou_prediction_head.layers.{iou_head_depth}.weight")) {
            iou_head_depth += 1;
        }
        Ok(SamConfig {
            img_size: grid * patch_size,
            patch_size,
            embed_dim,
            depth,
            num_heads: embed_dim / head_dim,
            mlp_dim: ie.shape("blocks.0.mlp.lin1.weight")?[0],
            window_size,
            global_attn_indexes: global,
            out_chans: ie.shape("neck.0.weight")?[0],
            prompt_embed_dim,
            mask_in_chans: pe.shape("mask_downscaling.3.weight")?[0],
            decoder_depth,
            decoder_heads: 8,
            decoder_mlp_dim: md.shape("transformer.layers.0.mlp.lin1.weight")?[0],
            num_multimask_outputs: md.shape("mask_tokens.weight")?[0] - 1,
            iou_head_depth,
            iou_head_hidden_dim: md.shape("iou_prediction_head.layers.0.weight")?[0],
        })
    }
}

/// The largest image-encoder batch chosen without `--sam-batch`: beyond it the GPU is busy
/// enough that a larger batch gains nothing measurable while the memory keeps growing.
pub const MAX_AUTO_BATCH: usize = 16;

/// Frames of `per_frame` bytes that fit in `budget` bytes, between 1 and [`MAX_AUTO_BATCH`].
fn batch_for(budget: u64, per_frame: u64) -> usize {
    (budget / per_frame.max(1)).clamp(1, MAX_AUTO_BATCH as u64) as usize
}

/// A loaded SAM.
#[derive(Debug, Clone)]
pub struct Sam {
    /// Sizes.
    pub config: SamConfig,
    /// `image_encoder`.
    pub image_encoder: ImageEncoderViT,
    /// `prompt_encoder`.
    pub prompt_encoder: PromptEncoder,
    /// `mask_decoder`.
    pub mask_decoder: MaskDecoder,
    /// `prompt_encoder.get_dense_pe()`, computed once at load (it depends on weights only).
    pub dense_pe: Tensor,
}

/// Result of decoding one prompt on a batch of frames.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Low-resolution mask logits `[B, M, 4g, 4g]`.
    pub low_res_masks: Tensor,
    /// Predicted IoU `[B, M]`.
    pub iou_predictions: Tensor,
}

impl Sam {
    /// Loads SAM from `l` positioned at its root (`model.visual_model` in a VideoLISA
    /// checkpoint, the empty prefix in `sam_vit_*.pth`).
    pub fn load(l: &Loader) -> Result<Self> {
        let config = SamConfig::from_weights(l)?;
        let prompt_encoder = PromptEncoder::load(&l.pp("prompt_encoder"), &config)?;
        Ok(Sam {
            image_encoder: ImageEncoderViT::load(&l.pp("image_encoder"), &config)?,
            dense_pe: prompt_encoder.get_dense_pe()?,
            prompt_encoder,
            mask_decoder: MaskDecoder::load(&l.pp("mask_decoder"), &config)?,
            config,
        })
    }

    /// Frames per image-encoder batch when the user gives none: 1 on the CPU (batches do not
    /// make its GEMMs faster, only its memory larger); on a GPU as many as half its free memory
    /// holds, between 1 and [`MAX_AUTO_BATCH`].
    pub fn auto_batch(&self, device: &Device, dtype: DType) -> usize {
        match crate::device::free_memory(device) {
            Some(free) => batch_for(free / 2, self.config.encode_bytes_per_frame(dtype)),
            None => 1,
        }
    }

    /// Image embeddings of normalised, padded frames `[B, 3, S, S]` → `[B, C, g, g]`.
    pub fn encode(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let dtype = self.image_encoder.pos_embed.dtype();
        Ok(self.image_encoder.forward(&pixel_values.to_dtype(dtype)?)?)
    }

    /// Decodes `image_embeddings` `[B, C, g, g]` with one set of sparse prompt embeddings
    /// `[1 or B, N, C]` (dense = `no_mask_embed`): VideoLISA's One-Token-Seg-All decoding.
    pub fn decode_embeddings(
        &self,
        image_embeddings: &Tensor,
        sparse: &Tensor,
        multimask: bool,
    ) -> Result<Decoded> {
        let b = image_embeddings.dim(0)?;
        let dtype = image_embeddings.dtype();
        let sparse = sparse.to_dtype(dtype)?;
        let sparse = if sparse.dim(0)? == b {
            sparse
        } else {
            sparse
                .broadcast_as((b, sparse.dim(1)?, sparse.dim(2)?))?
                .contiguous()?
        };
        let (s, dense) = self.prompt_encoder.forward(&Prompts {
            text_embeds: Some(&sparse),
            ..Default::default()
        })?;
        let (low_res_masks, iou_predictions) =
            self.mask_decoder
                .forward(image_embeddings, &self.dense_pe, &s, &dense, multimask)?;
        Ok(Decoded {
            low_res_masks,
            iou_predictions,
        })
    }

    /// `postprocess_masks`: low-res logits `[B, M, h, w]` → bilinear to `img_size²` → crop to the
    /// resized frame `input` (h, w) → bilinear to the frame size `original` (h, w); in f32.
    pub fn postprocess_masks(
        &self,
        masks: &Tensor,
        input: (usize, usize),
        original: (usize, usize),
    ) -> Result<Tensor> {
        let s = self.config.img_size;
        let work = crate::model::work_dtype(masks.dtype());
        let m = masks.to_dtype(work)?;
        if work == DType::F32 && m.device().is_cpu() && input.0 <= s && input.1 <= s {
            let m = crate::model::resample::upsample_bilinear_cropped(&m, (s, s), input)?;
            return Ok(crate::model::resample::upsample_bilinear_cropped(
                &m, original, original,
            )?);
        }
        let m = m.upsample_bilinear2d(s, s, false)?;
        let m = m.narrow(2, 0, input.0)?.narrow(3, 0, input.1)?.contiguous()?;
        Ok(m.upsample_bilinear2d(original.0, original.1, false)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vit_h() -> SamConfig {
        SamConfig {
            img_size: 1024,
            patch_size: 16,
            embed_dim: 1280,
            depth: 32,
            num_heads: 16,
            mlp_dim: 5120,
            window_size: 14,
            global_attn_indexes: vec![7, 15, 23, 31],
            out_chans: 256,
            prompt_embed_dim: 256,
            mask_in_chans: 16,
            decoder_depth: 2,
            decoder_heads: 8,
            decoder_mlp_dim: 2048,
            num_multimask_outputs: 3,
            iou_head_depth: 3,
            iou_head_hidden_dim: 256,
        }
    }

    #[test]
    fn batch_sizes_follow_free_memory_within_bounds() {
        let per_frame = vit_h().encode_bytes_per_frame(DType::BF16);
        // 16 heads × 4096² scores × (4·2 + 8) bytes = 4.29e9, plus 0.19e9 of activations
        assert!((4.4e9..4.6e9).contains(&(per_frame as f64)), "{per_frame}");
        assert!(vit_h().encode_bytes_per_frame(DType::F32) > per_frame);
        let gib = 1u64 << 30;
        // an H200 with the 9 GB model loaded: about 130 GiB free, half of it for the batch
        assert_eq!(batch_for(65 * gib, per_frame), 15);
        assert_eq!(batch_for(70 * gib, per_frame), 16);
        assert_eq!(batch_for(20 * gib, per_frame), 4);
        assert_eq!(batch_for(gib, per_frame), 1);
        assert_eq!(batch_for(0, 0), 1);
        assert_eq!(
            batch_for(u64::MAX, 1),
            MAX_AUTO_BATCH,
            "bounded however much memory is free"
        );
    }
}
