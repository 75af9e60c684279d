//! VideoLISA (`VideoLISAForCausalLM.evaluate`): CLIP patch features of the sparse frames →
//! `mm_projector` → 32 mean-pooled tokens + the dense frames' full tokens spliced into the
//! prompt in place of `<image>` → Phi-3 → the final hidden row just before `[SEG]` →
//! `text_hidden_fcs` → one prompt embedding that SAM decodes on every frame.

use crate::error::{Error, Result};
use crate::json::parse_json;
use crate::model::clip::{clip_transform, ClipVisionConfig, ClipVisionTower};
use crate::model::linear::{Linear, LoadLinear};
use crate::model::phi3::{Phi3Config, Phi3Model};
use crate::model::sam::{Sam, VIDEOLISA_PREFIX};
use crate::model::{mean_keepdim, ConfigKind};
use crate::preprocess::{ClipTransform, SamTransform};
use crate::tokenizer::{phi3_prompt, Tokenizer, IMAGE_TOKEN_INDEX};
use crate::weights::{Loader, Weights};
use candle_core::{DType, Device, Module, Tensor};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a VideoLISA checkpoint and its CLIP tower live on disk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelPaths {
    /// The VideoLISA dir (config.json, weights, tokenizer files).
    pub model: PathBuf,
    /// The CLIP dir (config.json, weights, preprocessor_config.json).
    pub clip: PathBuf,
}

/// Per-component dtypes and the device.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Phi-3, projector and `text_hidden_fcs`.
    pub llm: DType,
    /// CLIP vision tower.
    pub clip: DType,
    /// SAM.
    pub sam: DType,
    /// Where everything runs.
    pub device: Device,
}

impl LoadOptions {
    /// Sensible defaults: LLM bf16 everywhere; on the CPU the vision models in f32 (CPU bf16
    /// convolutions and attention are not faster), on CUDA everything bf16 like the reference.
    pub fn defaults(device: Device) -> Self {
        let vision = if device.is_cpu() { DType::F32 } else { DType::BF16 };
        LoadOptions {
            llm: DType::BF16,
            clip: vision,
            sam: vision,
            device,
        }
    }
}

/// The LLaVA / VideoLISA fields of `config.json` (Phi-3 fields in [`Phi3Config`]); checked by
/// [`VideoLisaConfig::validate`].
#[derive(Debug, Clone, Deserialize)]
pub struct VideoLisaConfig {
    /// The language model.
    #[serde(flatten)]
    pub phi3: Phi3Config,
    /// CLIP width fed to the projector.
    #[serde(default = "default_mm_hidden_size")]
    pub mm_hidden_size: usize,
    /// SAM prompt width.
    #[serde(default = "default_out_dim")]
    pub out_dim: usize,
    /// The projector; only `mlp2x_gelu` (VideoLISA's) is supported.
    #[serde(default = "default_projector")]
    pub mm_projector_type: String,
    /// Which CLIP tokens; only `patch` (VideoLISA's) is supported.
    #[serde(default = "default_select_feature")]
    pub mm_vision_select_feature: String,
    /// `hidden_states` entry of CLIP; VideoLISA uses -2 whatever the config says
    /// (VideoLISA.py:109), so the value read here is replaced by -2.
    #[serde(skip_deserializing, default = "videolisa_select_layer")]
    pub mm_vision_select_layer: i64,
    /// `vision_tower` (a hub id or a path).
    #[serde(default)]
    pub vision_tower: Option<String>,
    /// `mm_vision_tower`, used when `vision_tower` is absent.
    #[serde(default)]
    pub mm_vision_tower: Option<String>,
}

fn default_mm_hidden_size() -> usize {
    1024
}

fn default_out_dim() -> usize {
    256
}

fn default_projector() -> String {
    "mlp2x_gelu".into()
}

fn default_select_feature() -> String {
    "patch".into()
}

fn videolisa_select_layer() -> i64 {
    -2
}

impl VideoLisaConfig {
    /// Reads and checks `<dir>/config.json`; a CLIP config there is named as such (swapped
    /// `--model` and `--clip`).
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        if !path.exists() {
            return Err(Error::MissingFile {
                path,
                what: "the VideoLISA config.json".into(),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let kind: ConfigKind = parse_json(&path, &text, Error::Checkpoint)?;
        if kind.is_clip() {
            return Err(Error::Checkpoint(format!(
                "{}: this is a CLIP checkpoint (model_type {:?}), not VideoLISA; it belongs \
                 to --clip (are --model and --clip swapped?)",
                path.display(),
                kind.model_type
            )));
        }
        let config: VideoLisaConfig = parse_json(&path, &text, Error::Checkpoint)?;
        config.validate(&path)?;
        Ok(config)
    }

    /// Checks what serde cannot: the projector and feature kinds, and the Phi-3 part.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let unsupported = |what: &str, found: &str, ours: &str| {
            Err(Error::Checkpoint(format!(
                "{}: {what} {found:?} is not supported (VideoLISA uses {ours})",
                path.display()
            )))
        };
        if self.mm_projector_type != "mlp2x_gelu" {
            return unsupported("mm_projector_type", &self.mm_projector_type, "mlp2x_gelu");
        }
        if self.mm_vision_select_feature != "patch" {
            return unsupported(
                "mm_vision_select_feature",
                &self.mm_vision_select_feature,
                "patch",
            );
        }
        self.phi3.validate(path)
    }

    /// The CLIP tower the checkpoint names (`vision_tower`, else `mm_vision_tower`).
    pub fn vision_tower(&self) -> Option<&str> {
        self.vision_tower.as_deref().or(self.mm_vision_tower.as_deref())
    }
}

/// `mm_projector`: Linear → GELU (erf) → Linear.
#[derive(Debug, Clone)]
pub struct MmProjector {
    /// `mm_projector.0`.
    pub linear0: Linear,
    /// `mm_projector.2`.
    pub linear2: Linear,
}

impl Module for MmProjector {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.linear2
            .forward(&self.linear0.forward(x)?.apply(&crate::model::gelu_erf)?)
    }
}

/// `text_hidden_fcs[0]`: Linear → ReLU → Linear (→ Dropout(0)).
#[derive(Debug, Clone)]
pub struct TextHiddenFc {
    /// `text_hidden_fcs.0.0`.
    pub fc0: Linear,
    /// `text_hidden_fcs.0.2`.
    pub fc2: Linear,
}

impl Module for TextHiddenFc {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.fc0.forward(x)?.relu()?)
    }
}

/// The LLM's answer for one prompt.
#[derive(Debug, Clone)]
pub struct PromptEmbedding {
    /// `input_ids` with [`IMAGE_TOKEN_INDEX`] where the visual tokens go.
    pub input_ids: Vec<i64>,
    /// Length of the expanded sequence (visual tokens included).
    pub seq_len: usize,
    /// Row of the expanded sequence whose hidden state is used (just before `[SEG]`).
    pub seg_row: usize,
    /// That final normed hidden state `[1, D]` (f32).
    pub hidden: Tensor,
    /// `text_hidden_fcs(hidden)` `[1, out_dim]` (f32): SAM's sparse prompt.
    pub embedding: Tensor,
}

/// A loaded VideoLISA.
#[derive(Debug, Clone)]
pub struct VideoLisa {
    /// Config.
    pub config: VideoLisaConfig,
    /// Where it was loaded from.
    pub paths: ModelPaths,
    /// `model.vision_tower` (from the CLIP dir).
    pub vision_tower: ClipVisionTower,
    /// `model.mm_projector`.
    pub mm_projector: MmProjector,
    /// `model` (Phi-3).
    pub model: Phi3Model,
    /// `model.text_hidden_fcs`.
    pub text_hidden_fcs: TextHiddenFc,
    /// `model.visual_model`.
    pub visual_model: Sam,
    /// The checkpoint's tokenizer.
    pub tokenizer: Tokenizer,
    /// `[SEG]` id.
    pub seg_token_id: u32,
    /// CLIP preprocessing of the sparse frames.
    pub clip_transform: ClipTransform,
    /// SAM preprocessing of every frame.
    pub sam_transform: SamTransform,
    /// Dtypes and device.
    pub options: LoadOptions,
}

impl VideoLisa {
    /// Loads everything from `paths`.
    pub fn load(paths: &ModelPaths, options: LoadOptions) -> Result<Self> {
        let model = Arc::new(Weights::open(&paths.model)?);
        let clip = Arc::new(Weights::open(&paths.clip)?);
        Self::load_with(paths, model, clip, options)
    }

    /// Loads with the tensors already opened (`model`: the VideoLISA checkpoint, `clip`: the CLIP
    /// tower); configs and tokenizer still come from `paths`.
    pub fn load_with(
        paths: &ModelPaths,
        weights: Arc<Weights>,
        clip_weights: Arc<Weights>,
        options: LoadOptions,
    ) -> Result<Self> {
        let config = VideoLisaConfig::open(&paths.model)?;
        let tokenizer = Tokenizer::open(&paths.model)?;
        let seg_token_id = tokenizer.seg_token_id()?;
        if tokenizer.len() > config.phi3.vocab_size {
            return Err(Error::Checkpoint(format!(
                "{}: the tokenizer has {} tokens but config.json's vocab_size is {}",
                paths.model.display(),
                tokenizer.len(),
                config.phi3.vocab_size
            )));
        }
        let root = Loader::new(weights, options.llm, options.device.clone());
        let m = root.pp("model");
        let d = config.phi3.hidden_size;
        let model = Phi3Model::load(&m, config.phi3.clone())?;
        let mm_projector = MmProjector {
            linear0: m.linear("mm_projector.0", config.mm_hidden_size, d, true)?,
            linear2: m.linear("mm_projector.2", d, d, true)?,
        };
        let text_hidden_fcs = TextHiddenFc {
            fc0: m.linear("text_hidden_fcs.0.0", d, d, true)?,
            fc2: m.linear("text_hidden_fcs.0.2", d, config.out_dim, true)?,
        };
        let sam_loader = root.with_dtype(options.sam).pp(VIDEOLISA_PREFIX);
        let visual_model = Sam::load(&sam_loader)?;
        if visual_model.config.prompt_embed_dim != config.out_dim {
            return Err(Error::Checkpoint(format!(
                "{}: out_dim {} differs from SAM's prompt width {}",
                paths.model.display(),
                config.out_dim,
                visual_model.config.prompt_embed_dim
            )));
        }
        let cl = Loader::new(clip_weights, options.clip, options.device.clone()).pp("vision_model");
        let clip_config = paths.clip.join("config.json");
        if !clip_config.exists() {
            return Err(Error::MissingFile {
                path: clip_config,
                what: "the CLIP tower's config.json".into(),
            });
        }
        let cc = ClipVisionConfig::load(&clip_config, &cl, config.mm_vision_select_layer)?;
        if cc.hidden_size != config.mm_hidden_size {
            return Err(Error::Checkpoint(format!(
                "{}: CLIP width {} differs from the checkpoint's mm_hidden_size {}",
                paths.clip.display(),
                cc.hidden_size,
                config.mm_hidden_size
            )));
        }
        let clip_transform = clip_transform(&paths.clip, cc.image_size)?;
        let vision_tower = ClipVisionTower::load(&cl, cc)?;
        let sam_transform = SamTransform {
            target: visual_model.config.img_size as u32,
            ..SamTransform::default()
        };
        Ok(VideoLisa {
            config,
            paths: paths.clone(),
            vision_tower,
            mm_projector,
            model,
            text_hidden_fcs,
            visual_model,
            tokenizer,
            seg_token_id,
            clip_transform,
            sam_transform,
            options,
        })
    }

    /// Visual tokens of the sparse frames' CLIP inputs `[S, 3, s, s]`: the S mean-pooled
    /// projected tokens, then the full projected tokens of `dense` (indices into the sparse
    /// list) → `[S + |dense|·n, D]` in the LLM dtype.
    pub fn visual_tokens(&self, clip_pixels: &Tensor, dense: &[usize]) -> Result<Tensor> {
        let feats = self.vision_tower.forward(clip_pixels)?;
        let feats = self.mm_projector.forward(&feats.to_dtype(self.options.llm)?)?; // [S, n, D]
        let sparse = mean_keepdim(&feats, 1)?.squeeze(1)?;
        let idx = Tensor::new(
            dense.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            feats.device(),
        )?;
        let dense = feats.index_select(&idx, 0)?.flatten_to(1)?;
        Ok(Tensor::cat(&[&sparse, &dense], 0)?)
    }

    /// Number of visual tokens for `n_sparse` frames of which `n_dense` are dense.
    pub fn visual_token_count(&self, n_sparse: usize, n_dense: usize) -> usize {
        n_sparse + n_dense * self.vision_tower.config.num_patches()
    }

    /// Checks, before any frame is decoded, that `input_ids` spliced with `n_visual` visual
    /// tokens fits the model's context; returns the sequence length.
    pub fn check_sequence(&self, input_ids: &[i64], n_visual: usize) -> Result<usize> {
        let seq_len = input_ids.len() - 1 + n_visual;
        let max = self.config.phi3.max_position_embeddings;
        if seq_len > max {
            return Err(Error::Usage(format!(
                "the prompt is {} tokens and the video adds {n_visual} visual tokens: {seq_len} in all, \
                 more than the {max} positions of {} (max_position_embeddings); shorten the prompt \
                 or sample fewer frames",
                input_ids.len() - 1,
                self.paths.model.display()
            )));
        }
        Ok(seq_len)
    }

    /// `tokenizer_image_token(phi3_prompt(instruction))`.
    pub fn input_ids(&self, instruction: &str) -> Result<Vec<i64>> {
        self.tokenizer.tokenizer_image_token(&phi3_prompt(instruction))
    }

    /// Runs the LLM on `input_ids` with `visual` spliced in and returns the `[SEG]` prompt.
    pub fn prompt_embedding(&self, input_ids: &[i64], visual: &Tensor) -> Result<PromptEmbedding> {
        let places: Vec<usize> = input_ids
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == IMAGE_TOKEN_INDEX)
            .map(|(i, _)| i)
            .collect();
        let [p] = places[..] else {
            return Err(Error::Internal(format!(
                "the prompt must hold exactly one <image>, found {}",
                places.len()
            )));
        };
        let seg = i64::from(self.seg_token_id);
        let k = input_ids
            .iter()
            .enumerate()
            .skip(p + 1)
            .find(|(_, &t)| t == seg)
            .map(|(i, _)| i)
            .ok_or_else(|| Error::Internal("the prompt has no [SEG] after <image>".into()))?;
        let nvis = visual.dim(0)?;
        let seq_len = input_ids.len() - 1 + nvis;
        let seg_row = k + nvis - 2;
        let text = |s: &[i64]| -> Result<Vec<u32>> {
            s.iter()
                .map(|&t| {
                    u32::try_from(t).map_err(|_| Error::Internal(format!("token id {t} in the prompt")))
                })
                .collect()
        };
        // Rows after `seg_row` cannot influence it (causal attention): stop there.
        let before = self.model.embed(&text(&input_ids[..p])?)?;
        let after = self.model.embed(&text(&input_ids[p + 1..k])?)?;
        let visual = visual.to_dtype(before.dtype())?;
        let parts: Vec<&Tensor> = [&before, &visual, &after]
            .into_iter()
            .filter(|t| t.dim(0).is_ok_and(|n| n > 0))
            .collect();
        let embeds = Tensor::cat(&parts, 0)?;
        debug_assert_eq!(embeds.dim(0)?, seg_row + 1);
        let hidden = self.model.forward_embeds(&embeds, true)?;
        let hidden = hidden.narrow(0, hidden.dim(0)? - 1, 1)?;
        let embedding = self.text_hidden_fcs.forward(&hidden)?;
        Ok(PromptEmbedding {
            input_ids: input_ids.to_vec(),
            seq_len,
            seg_row,
            hidden: hidden.to_dtype(DType::F32)?,
            embedding: embedding.to_dtype(DType::F32)?,
        })
    }
}
