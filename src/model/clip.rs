//! CLIP vision tower (HF `CLIPVisionModel`): the patch features LLaVA selects, i.e.
//! `hidden_states[-2][:, 1:]` — the output of encoder layer `L-2` (0-based; 22 of 24 for
//! ViT-L/14-336) with the CLS token dropped. The last layer is never computed.

use crate::error::{Error, Result};
use crate::model::{conv2d, softmax_last_dim, LayerNorm};
use crate::preprocess::ClipTransform;
use crate::weights::Loader;
use candle_core::{Module, Tensor, D};
use candle_nn::Linear;
use serde_json::Value;
use std::path::Path;

/// Sizes of the vision tower: widths from tensor shapes, heads and eps from `config.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClipVisionConfig {
    /// Width (1024).
    pub hidden_size: usize,
    /// MLP width (4096).
    pub intermediate_size: usize,
    /// Encoder layers (24).
    pub num_hidden_layers: usize,
    /// Attention heads (16).
    pub num_attention_heads: usize,
    /// Input side (336).
    pub image_size: usize,
    /// Patch side (14).
    pub patch_size: usize,
    /// LayerNorm epsilon (1e-5).
    pub layer_norm_eps: f64,
    /// Which `hidden_states` entry is used (-2: LLaVA's `mm_vision_select_layer`).
    pub select_layer: i64,
}

impl ClipVisionConfig {
    /// Patches per image (576).
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Reads `config.json` of a CLIP dir (a `CLIPModel` config with `vision_config`, or a
    /// vision config) and the tensor shapes under `l` (at `vision_model`).
    pub fn load(config: &Path, l: &Loader, select_layer: i64) -> Result<Self> {
        let text = std::fs::read_to_string(config).map_err(|e| Error::io(config, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: not valid JSON: {e}", config.display())))?;
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        if !model_type.starts_with("clip") && v.get("vision_config").is_none() {
            return Err(Error::Invalid(format!(
                "{}: this is not a CLIP tower (model_type {model_type:?}){}",
                config.display(),
                if v.get("mm_projector_type").is_some() {
                    "; it is a VideoLISA checkpoint, which belongs to --model (are --model and --clip swapped?)"
                } else {
                    ""
                }
            )));
        }
        let vc = v.get("vision_config").unwrap_or(&v);
        let act = vc
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("quick_gelu");
        if act != "quick_gelu" {
            return Err(Error::Invalid(format!(
                "{}: vision hidden_act {act:?} is not supported (CLIP ViT uses quick_gelu)",
                config.display()
            )));
        }
        let patch = l.shape("embeddings.patch_embedding.weight")?;
        let pos = l.shape("embeddings.position_embedding.weight")?;
        let (hidden, p) = (patch[0], patch[2]);
        let grid = ((pos[0].saturating_sub(1)) as f64).sqrt() as usize;
        if grid * grid + 1 != pos[0] {
            return Err(Error::Invalid(format!(
                "{}: position embedding {pos:?} is not 1 + a square number of patches",
                l.weights()
                    .file_of(&l.name("embeddings.position_embedding.weight"))
            )));
        }
        let mut layers = 0;
        while l.contains(&format!("encoder.layers.{layers}.layer_norm1.weight")) {
            layers += 1;
        }
        let heads = vc
            .get("num_attention_heads")
            .and_then(Value::as_u64)
            .unwrap_or(12) as usize;
        if layers < 2 || hidden % heads != 0 {
            return Err(Error::Invalid(format!(
                "{}: {layers} vision layers of width {hidden} with {heads} heads is not a usable CLIP tower",
                config.display()
            )));
        }
        let n = layers as i64;
        if select_layer >= 0 || -select_layer > n + 1 {
            return Err(Error::Invalid(format!(
                "mm_vision_select_layer {select_layer} is out of range"
            )));
        }
        Ok(ClipVisionConfig {
            hidden_size: hidden,
            intermediate_size: l.shape("encoder.layers.0.mlp.fc1.weight")?[0],
            num_hidden_layers: layers,
            num_attention_heads: heads,
            image_size: grid * p,
            patch_size: p,
            layer_norm_eps: vc.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(1e-5),
            select_layer,
        })
    }

    /// Number of encoder layers that must run: `hidden_states[k]` with k = len+select
    /// (`hidden_states` has the embeddings at 0 and layer i's output at i+1).
    pub fn layers_to_run(&self) -> usize {
        (self.num_hidden_layers as i64 + 1 + self.select_layer) as usize
    }
}

/// The CLIP image transform of a CLIP dir: `preprocessor_config.json` when present, else the
/// ViT-L/14-336 values with the tower's input side.
pub fn clip_transform(dir: &Path, image_size: usize) -> Result<ClipTransform> {
    let mut t = ClipTransform {
        shortest_edge: image_size as u32,
        crop: image_size as u32,
        ..ClipTransform::default()
    };
    let path = dir.join("preprocessor_config.json");
    if !path.exists() {
        return Ok(t);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Invalid(format!("{}: not valid JSON: {e}", path.display())))?;
    let side = |v: Option<&Value>, keys: &[&str]| -> Option<u32> {
        let v = v?;
        v.as_u64()
            .or_else(|| keys.iter().find_map(|k| v.get(*k).and_then(Value::as_u64)))
            .map(|x| x as u32)
    };
    if let Some(s) = side(v.get("size"), &["shortest_edge", "height"]) {
        t.shortest_edge = s;
    }
    if let Some(c) = side(v.get("crop_size"), &["height", "shortest_edge"]) {
        t.crop = c;
    }
    let triple = |k: &str| -> Option<[f32; 3]> {
        let a = v.get(k)?.as_array()?;
        (a.len() == 3).then(|| [0, 1, 2].map(|i| a[i].as_f64().unwrap_or(0.0) as f32))
    };
    if let Some(m) = triple("image_mean") {
        t.mean = m;
    }
    if let Some(s) = triple("image_std") {
        t.std = s;
    }
    if t.crop as usize != image_size || t.shortest_edge < t.crop {
        return Err(Error::Invalid(format!(
            "{}: crop {} / size {} do not fit the tower's input side {image_size}",
            path.display(),
            t.crop,
            t.shortest_edge
        )));
    }
    Ok(t)
}

/// `CLIPAttention` (eager): `softmax((q·scale) kᵀ) v`.
#[derive(Debug, Clone)]
pub struct ClipAttention {
    /// `q_proj`.
    pub q_proj: Linear,
    /// `k_proj`.
    pub k_proj: Linear,
    /// `v_proj`.
    pub v_proj: Linear,
    /// `out_proj`.
    pub out_proj: Linear,
    heads: usize,
}

impl ClipAttention {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let hd = c / self.heads;
        let split = |t: Tensor| t.reshape((b, n, self.heads, hd))?.transpose(1, 2)?.contiguous();
        let q = split((self.q_proj.forward(x)? * (hd as f64).powf(-0.5))?)?;
        let k = split(self.k_proj.forward(x)?)?;
        let v = split(self.v_proj.forward(x)?)?;
        let a = softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let o = a.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?;
        self.out_proj.forward(&o)
    }
}

/// `CLIPEncoderLayer`: pre-norm attention and quick-GELU MLP.
#[derive(Debug, Clone)]
pub struct ClipEncoderLayer {
    /// `self_attn`.
    pub self_attn: ClipAttention,
    /// `layer_norm1`.
    pub layer_norm1: LayerNorm,
    /// `mlp.fc1`.
    pub fc1: Linear,
    /// `mlp.fc2`.
    pub fc2: Linear,
    /// `layer_norm2`.
    pub layer_norm2: LayerNorm,
}

impl ClipEncoderLayer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = (x + self.self_attn.forward(&self.layer_norm1.forward(x)?)?)?;
        let m = self.fc1.forward(&self.layer_norm2.forward(&h)?)?;
        let m = (&m * candle_nn::ops::sigmoid(&(&m * 1.702)?)?)?;
        h + self.fc2.forward(&m)?
    }
}

/// `CLIPVisionModel` up to the selected layer.
#[derive(Debug, Clone)]
pub struct ClipVisionTower {
    /// Sizes.
    pub config: ClipVisionConfig,
    /// `embeddings.class_embedding` `[D]`.
    pub class_embedding: Tensor,
    /// `embeddings.patch_embedding.weight` `[D, 3, p, p]` (no bias).
    pub patch_embedding: Tensor,
    /// `embeddings.position_embedding.weight` `[1 + n, D]`.
    pub position_embedding: Tensor,
    /// `pre_layrnorm`.
    pub pre_layrnorm: LayerNorm,
    /// `encoder.layers` that run (up to the selected one).
    pub layers: Vec<ClipEncoderLayer>,
}

impl ClipVisionTower {
    /// Loads the tower from `l` at `vision_model`.
    pub fn load(l: &Loader, config: ClipVisionConfig) -> Result<Self> {
        let (d, i, p) = (config.hidden_size, config.intermediate_size, config.patch_size);
        let n = config.num_patches();
        let eps = config.layer_norm_eps;
        let e = l.pp("embeddings");
        let mut layers = Vec::new();
        for k in 0..config.layers_to_run() {
            let ll = l.pp("encoder.layers").pp(k);
            let a = ll.pp("self_attn");
            layers.push(ClipEncoderLayer {
                self_attn: ClipAttention {
                    q_proj: a.linear("q_proj", d, d, true)?,
                    k_proj: a.linear("k_proj", d, d, true)?,
                    v_proj: a.linear("v_proj", d, d, true)?,
                    out_proj: a.linear("out_proj", d, d, true)?,
                    heads: config.num_attention_heads,
                },
                layer_norm1: LayerNorm::load(&ll.pp("layer_norm1"), d, eps)?,
                fc1: ll.linear("mlp.fc1", d, i, true)?,
                fc2: ll.linear("mlp.fc2", i, d, true)?,
                layer_norm2: LayerNorm::load(&ll.pp("layer_norm2"), d, eps)?,
            });
        }
        Ok(ClipVisionTower {
            class_embedding: e.get("class_embedding", &[d])?,
            patch_embedding: e.get("patch_embedding.weight", &[d, 3, p, p])?,
            position_embedding: e.get("position_embedding.weight", &[n + 1, d])?,
            pre_layrnorm: LayerNorm::load(&l.pp("pre_layrnorm"), d, eps)?,
            layers,
            config,
        })
    }

    /// Patch features of `pixel_values` `[B, 3, S, S]` → `[B, n, D]` (CLS dropped).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let dtype = self.class_embedding.dtype();
        let x = pixel_values.to_dtype(dtype)?;
        let b = x.dim(0)?;
        let d = self.config.hidden_size;
        let patches = conv2d(&x, &self.patch_embedding, None, 0, self.config.patch_size)?;
        let patches = patches.flatten_from(2)?.transpose(1, 2)?; // [B, n, D]
        let cls = self.class_embedding.reshape((1, 1, d))?.broadcast_as((b, 1, d))?;
        let mut h =
            Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.position_embedding.unsqueeze(0)?)?;
        h = self.pre_layrnorm.forward(&h)?;
        for layer in &self.layers {
            h = layer.forward(&h)?;
        }
        let n = h.dim(1)?;
        Ok(h.narrow(D::Minus2, 1, n - 1)?.contiguous()?)
    }
}
