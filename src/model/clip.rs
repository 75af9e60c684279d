//! CLIP vision tower (HF `CLIPVisionModel`): the patch features LLaVA selects, i.e.
//! `hidden_states[-2][:, 1:]` — the output of encoder layer `L-2` (0-based; 22 of 24 for
//! ViT-L/14-336) with the CLS token dropped. The last layer is never computed.

use crate::error::{Error, Result};
use crate::json::{parse_json, read_json};
use crate::model::attention::{attention, Bias, Options};
use crate::model::linear::{Linear, LoadLinear};
use crate::model::{conv2d, softmax_last_dim, ConfigKind, LayerNorm};
use crate::preprocess::ClipTransform;
use crate::weights::Loader;
use candle_core::{Module, Tensor, D};
use serde::Deserialize;
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

/// The vision fields of a CLIP `config.json` that tensor shapes cannot tell; checked by
/// [`ClipVisionJson::validate`].
#[derive(Debug, Clone, Deserialize)]
pub struct ClipVisionJson {
    /// Only `quick_gelu` (CLIP ViT's) is supported.
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    /// Attention heads (16 for ViT-L).
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
}

fn quick_gelu() -> String {
    "quick_gelu".into()
}

fn default_heads() -> usize {
    12
}

fn default_layer_norm_eps() -> f64 {
    1e-5
}

/// A CLIP `config.json`: a `CLIPModel` config holds the vision fields in `vision_config`, a
/// vision-only config at its top level.
#[derive(Debug, Clone, Deserialize)]
struct ClipConfigFile {
    #[serde(default)]
    vision_config: Option<ClipVisionJson>,
    #[serde(flatten)]
    top: ClipVisionJson,
}

impl ClipVisionJson {
    /// Reads and checks the vision fields of `path`; a VideoLISA config there is named as such
    /// (swapped `--model` and `--clip`).
    pub fn open(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let kind: ConfigKind = parse_json(path, &text, Error::Checkpoint)?;
        if !kind.is_clip() {
            return Err(Error::Checkpoint(format!(
                "{}: this is not a CLIP tower (model_type {:?}){}",
                path.display(),
                kind.model_type,
                if kind.is_videolisa() {
                    "; it is a VideoLISA checkpoint, which belongs to --model (are --model and --clip swapped?)"
                } else {
                    ""
                }
            )));
        }
        let file: ClipConfigFile = parse_json(path, &text, Error::Checkpoint)?;
        let vision = file.vision_config.unwrap_or(file.top);
        vision.validate(path)?;
        Ok(vision)
    }

    /// Checks what serde cannot: the activation.
    pub fn validate(&self, path: &Path) -> Result<()> {
        if self.hidden_act != "quick_gelu" {
            return Err(Error::Checkpoint(format!(
                "{}: vision hidden_act {:?} is not supported (CLIP ViT uses quick_gelu)",
                path.display(),
                self.hidden_act
            )));
        }
        Ok(())
    }
}

impl ClipVisionConfig {
    /// Patches per image (576).
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Reads `config.json` of a CLIP dir (a `CLIPModel` config with `vision_config`, or a
    /// vision config) and the tensor shapes under `l` (at `vision_model`).
    pub fn load(config: &Path, l: &Loader, select_layer: i64) -> Result<Self> {
        let vc = ClipVisionJson::open(config)?;
        let patch = l.shape("embeddings.patch_embedding.weight")?;
        let pos = l.shape("embeddings.position_embedding.weight")?;
        let (hidden, p) = (patch[0], patch[2]);
        let grid = ((pos[0].saturating_sub(1)) as f64).sqrt() as usize;
        if grid * grid + 1 != pos[0] {
            return Err(Error::Checkpoint(format!(
                "{}: position embedding {pos:?} is not 1 + a square number of patches",
                l.weights()
                    .file_of(&l.name("embeddings.position_embedding.weight"))
            )));
        }
        let mut layers = 0;
        while l.contains(&format!("encoder.layers.{layers}.layer_norm1.weight")) {
            layers += 1;
        }
        let heads = vc.num_attention_heads;
        if layers < 2 || heads == 0 || hidden % heads != 0 {
            return Err(Error::Checkpoint(format!(
                "{}: {layers} vision layers of width {hidden} with {heads} heads is not a usable CLIP tower",
                config.display()
            )));
        }
        let n = layers as i64;
        if select_layer >= 0 || -select_layer > n + 1 {
            return Err(Error::Checkpoint(format!(
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
            layer_norm_eps: vc.layer_norm_eps,
            select_layer,
        })
    }

    /// Number of encoder layers that must run: `hidden_states[k]` with k = len+select
    /// (`hidden_states` has the embeddings at 0 and layer i's output at i+1).
    pub fn layers_to_run(&self) -> usize {
        (self.num_hidden_layers as i64 + 1 + self.select_layer) as usize
    }
}

/// `preprocessor_config.json` of a CLIP dir: what [`clip_transform`] takes from it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PreprocessorConfig {
    /// Resize target: a number, or `{"shortest_edge": n}` / `{"height": n, ...}`.
    #[serde(default)]
    pub size: Option<Side>,
    /// Center crop: a number, or `{"height": n, ...}` / `{"shortest_edge": n}`.
    #[serde(default)]
    pub crop_size: Option<Side>,
    /// Per-channel mean (3 values).
    #[serde(default)]
    pub image_mean: Option<Vec<f32>>,
    /// Per-channel std (3 values).
    #[serde(default)]
    pub image_std: Option<Vec<f32>>,
}

/// A side length as preprocessor configs write it over the transformers versions.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum Side {
    /// `336`.
    Number(u32),
    /// `{"shortest_edge": 336}` or `{"height": 336, "width": 336}`.
    Sizes {
        /// `shortest_edge`.
        shortest_edge: Option<u32>,
        /// `height`.
        height: Option<u32>,
    },
}

impl Side {
    /// The length, reading `shortest_edge` first (`size`) or `height` first (`crop_size`).
    fn get(self, shortest_edge_first: bool) -> Option<u32> {
        match self {
            Side::Number(n) => Some(n),
            Side::Sizes {
                shortest_edge,
                height,
            } if shortest_edge_first => shortest_edge.or(height),
            Side::Sizes {
                shortest_edge,
                height,
            } => height.or(shortest_edge),
        }
    }
}

impl PreprocessorConfig {
    /// Checks what serde cannot: mean and std have one value per channel.
    pub fn validate(&self, path: &Path) -> Result<()> {
        for (k, v) in [("image_mean", &self.image_mean), ("image_std", &self.image_std)] {
            if let Some(v) = v.as_ref().filter(|v| v.len() != 3) {
                return Err(Error::Checkpoint(format!(
                    "{}: `{k}` has {} values, expected one per RGB channel",
                    path.display(),
                    v.len()
                )));
            }
        }
        Ok(())
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
    let c: PreprocessorConfig = read_json(&path, Error::Checkpoint)?;
    c.validate(&path)?;
    if let Some(s) = c.size.and_then(|s| s.get(true)) {
        t.shortest_edge = s;
    }
    if let Some(s) = c.crop_size.and_then(|s| s.get(false)) {
        t.crop = s;
    }
    let triple = |v: &Option<Vec<f32>>| v.as_ref().map(|v| [v[0], v[1], v[2]]);
    t.mean = triple(&c.image_mean).unwrap_or(t.mean);
    t.std = triple(&c.image_std).unwrap_or(t.std);
    if t.crop as usize != image_size || t.shortest_edge < t.crop {
        return Err(Error::Checkpoint(format!(
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
        let heads = |t: Tensor| t.reshape((b, n, self.heads, hd));
        let q = heads((self.q_proj.forward(x)? * (hd as f64).powf(-0.5))?)?;
        let k = heads(self.k_proj.forward(x)?)?;
        let v = heads(self.v_proj.forward(x)?)?;
        let fused = Options {
            scale: None,
            bias: Bias::None,
            bf16_probs: false,
        };
        if let Some(o) = attention(&q, &k, &v, &fused)? {
            return self.out_proj.forward(&o.reshape((b, n, c))?);
        }
        let split = |t: Tensor| t.transpose(1, 2)?.contiguous();
        let (q, k, v) = (split(q)?, split(k)?, split(v)?);
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
        let m = crate::model::quick_gelu(&m)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocessor_sizes_read_as_each_transformers_version_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let write = |json: &str| std::fs::write(dir.path().join("preprocessor_config.json"), json).unwrap();
        write(r#"{"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}}"#);
        let t = clip_transform(dir.path(), 336).unwrap();
        assert_eq!((t.shortest_edge, t.crop), (336, 336));
        write(r#"{"size": 400, "crop_size": 336, "image_mean": [0.5, 0.5, 0.5]}"#);
        let t = clip_transform(dir.path(), 336).unwrap();
        assert_eq!((t.shortest_edge, t.crop, t.mean), (400, 336, [0.5; 3]));
        write(r#"{"image_std": [0.5, 0.5]}"#);
        let e = clip_transform(dir.path(), 336).unwrap_err().to_string();
        assert!(e.contains("`image_std` has 2 values"), "{e}");
        write(r#"{"crop_size": 224}"#);
        assert!(clip_transform(dir.path(), 336).is_err());
    }
}
