//! XMem++ (XMem2 @ adc7d4c, `model/network.py`) for VideoLISA's post-optimization: the given
//! frames' masks go into permanent memory and every other frame is segmented from memory.
//! One object per run (VideoLISA propagates each expression on its own), so the reference's
//! object axis is dropped. Widths, block counts and `C_k`/`C_v`/`C_h` come from the weights.

pub mod inference_core;
pub mod memory;
pub mod modules;
pub mod run_on_video;
pub mod video_reader;

use crate::model::resample::{max_pool_3x3_s2, upsample_bilinear};
use crate::weights::{Loader, Weights};
use crate::Result;
use candle_core::{DType, Device, Tensor};
use modules::{area_down, gru_update, Conv, FeatureFusionBlock, Layer, UpsampleBlock};
use std::path::Path;
use std::sync::Arc;

/// `KeyEncoder`: ResNet-50 stem and `layer1`–`layer3` (the first named `res2`).
#[derive(Debug, Clone)]
pub struct KeyEncoder {
    /// `conv1` + `bn1`.
    pub conv1: Conv,
    /// `res2` (1/4).
    pub res2: Layer,
    /// 1/8.
    pub layer2: Layer,
    /// 1/16.
    pub layer3: Layer,
}

/// `KeyProjection`: key, shrinkage (`d²+1`) and selection (`σ(e)`) from the 1/16 features.
#[derive(Debug, Clone)]
pub struct KeyProjection {
    /// Key.
    pub key_proj: Conv,
    /// Shrinkage.
    pub d_proj: Conv,
    /// Selection.
    pub e_proj: Conv,
}

/// `ValueEncoder`: ResNet-18 on `[rgb, mask, others]`, fused with the key features, and the
/// hidden-state reinforcement on deep-update frames.
#[derive(Debug, Clone)]
pub struct ValueEncoder {
    /// `conv1` + `bn1` (3 + 1 or 2 input channels).
    pub conv1: Conv,
    /// 1/4.
    pub layer1: Layer,
    /// 1/8.
    pub layer2: Layer,
    /// 1/16.
    pub layer3: Layer,
    /// Fusion with the key encoder's 1/16 features.
    pub fuser: FeatureFusionBlock,
    /// `hidden_reinforce.transform`.
    pub hidden_reinforce: Conv,
}

/// `HiddenUpdater`: the decoder's multi-scale GRU update.
#[derive(Debug, Clone)]
pub struct HiddenUpdater {
    /// 1×1 on g16.
    pub g16_conv: Conv,
    /// 1×1 on area-downsampled g8.
    pub g8_conv: Conv,
    /// 1×1 on area-downsampled `[g4, logits]`.
    pub g4_conv: Conv,
    /// 3×3 on `[g, h]` → 3·C_h.
    pub transform: Conv,
}

/// `Decoder`: fusion of readout and hidden state with the key features, two upsampling
/// blocks, the 1-channel logit.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// `FeatureFusionBlock(f16, readout ‖ hidden)`.
    pub fuser: FeatureFusionBlock,
    /// The hidden-state update.
    pub hidden_update: HiddenUpdater,
    /// 1/16 → 1/8.
    pub up_16_8: UpsampleBlock,
    /// 1/8 → 1/4.
    pub up_8_4: UpsampleBlock,
    /// Logit.
    pub pred: Conv,
}

/// A frame's key-encoder outputs (`encode_key`), shared by every object.
#[derive(Debug, Clone)]
pub struct FrameKey {
    /// `[C_k, HW]`.
    pub key: Tensor,
    /// `[1, HW]`.
    pub shrinkage: Tensor,
    /// `[C_k, HW]`.
    pub selection: Tensor,
    /// `[1, 1024, H/16, W/16]` (real widths).
    pub f16: Tensor,
    /// 1/8 features.
    pub f8: Tensor,
    /// 1/4 features.
    pub f4: Tensor,
    /// The normalized, resized, padded frame `[1, 3, H, W]`.
    pub image: Tensor,
}

/// The XMem network.
#[derive(Debug, Clone)]
pub struct XMem {
    /// Key encoder.
    pub key_encoder: KeyEncoder,
    /// Key projection.
    pub key_proj: KeyProjection,
    /// Value encoder.
    pub value_encoder: ValueEncoder,
    /// Decoder.
    pub decoder: Decoder,
    /// `C_k`.
    pub key_dim: usize,
    /// `C_v`.
    pub value_dim: usize,
    /// `C_h`.
    pub hidden_dim: usize,
    /// The device it runs on.
    pub device: Device,
}

impl XMem {
    /// Opens `XMem.pth` (or a safetensors copy) and loads it in f32 on `device`.
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        let w = Arc::new(Weights::open(path)?);
        Self::load(&Loader::new(w, DType::F32, device.clone()))
    }

    /// Loads the network from the `XMem.pth` state-dict names under `l`.
    pub fn load(l: &Loader) -> Result<Self> {
        let k = l.pp("key_encoder");
        let key_encoder = KeyEncoder {
            conv1: Conv::load_bn(&k.pp("conv1"), &k.pp("bn1"), 2)?,
            res2: Layer::load(&k.pp("res2"), 1)?,
            layer2: Layer::load(&k.pp("layer2"), 2)?,
            layer3: Layer::load(&k.pp("layer3"), 2)?,
        };
        let p = l.pp("key_proj");
        let key_proj = KeyProjection {
            key_proj: Conv::load(&p.pp("key_proj"), 1)?,
            d_proj: Conv::load(&p.pp("d_proj"), 1)?,
            e_proj: Conv::load(&p.pp("e_proj"), 1)?,
        };
        let v = l.pp("value_encoder");
        let value_encoder = ValueEncoder {
            conv1: Conv::load_bn(&v.pp("conv1"), &v.pp("bn1"), 2)?,
            layer1: Layer::load(&v.pp("layer1"), 1)?,
            layer2: Layer::load(&v.pp("layer2"), 2)?,
            layer3: Layer::load(&v.pp("layer3"), 2)?,
            fuser: FeatureFusionBlock::load(&v.pp("fuser"))?,
            hidden_reinforce: Conv::load(&v.pp("hidden_reinforce.transform"), 1)?,
        };
        let d = l.pp("decoder");
        let u = d.pp("hidden_update");
        let decoder = Decoder {
            fuser: FeatureFusionBlock::load(&d.pp("fuser"))?,
            hidden_update: HiddenUpdater {
                g16_conv: Conv::load(&u.pp("g16_conv"), 1)?,
                g8_conv: Conv::load(&u.pp("g8_conv"), 1)?,
                g4_conv: Conv::load(&u.pp("g4_conv"), 1)?,
                transform: Conv::load(&u.pp("transform"), 1)?,
            },
            up_16_8: UpsampleBlock::load(&d.pp("up_16_8"))?,
            up_8_4: UpsampleBlock::load(&d.pp("up_8_4"))?,
            pred: Conv::load(&d.pp("pred"), 1)?,
        };
        Ok(XMem {
            key_dim: key_proj.key_proj.out_dim(),
            value_dim: value_encoder.fuser.block2.conv2.out_dim(),
            hidden_dim: decoder.hidden_update.transform.out_dim() / 3,
            key_encoder,
            key_proj,
            value_encoder,
            decoder,
            device: l.device().clone(),
        })
    }

    /// `encode_key` of a normalized, padded frame `[1, 3, H, W]` (H, W multiples of 16).
    pub fn encode_key(&self, image: &Tensor) -> Result<FrameKey> {
        let e = &self.key_encoder;
        let x = max_pool_3x3_s2(&e.conv1.forward(image)?.relu()?)?;
        let f4 = e.res2.forward(&x)?;
        let f8 = e.layer2.forward(&f4)?;
        let f16 = e.layer3.forward(&f8)?;
        let p = &self.key_proj;
        let flat = |t: Tensor| t.squeeze(0)?.flatten_from(1);
        let key = flat(p.key_proj.forward(&f16)?)?;
        let shrinkage = flat((p.d_proj.forward(&f16)?.sqr()? + 1.0)?)?;
        let selection = flat(candle_nn::ops::sigmoid(&p.e_proj.forward(&f16)?)?)?;
        Ok(FrameKey {
            key,
            shrinkage,
            selection,
            f16,
            f8,
            f4,
            image: image.clone(),
        })
    }

    /// `encode_value` for one object: its value `[1, C_v, h, w]` from the frame, its key
    /// features, its probability `[1, 1, H, W]` and the sum of the other objects'
    /// probabilities (`None`: no other object, zeros); the hidden state `[1, C_h, h, w]` is
    /// reinforced on deep updates and returned unchanged otherwise.
    pub fn encode_value(
        &self,
        fk: &FrameKey,
        hidden: &Tensor,
        prob: &Tensor,
        others: Option<&Tensor>,
        deep: bool,
    ) -> Result<(Tensor, Tensor)> {
        let e = &self.value_encoder;
        let extra = e.conv1.weight.dim(1)? - 3;
        let mut inputs = vec![fk.image.clone(), prob.clone()];
        if extra == 2 {
            inputs.push(match others {
                Some(o) => o.clone(),
                None => prob.zeros_like()?,
            });
        }
        let g = Tensor::cat(&inputs, 1)?;
        let g = max_pool_3x3_s2(&e.conv1.forward(&g)?)?.relu()?;
        let g = e.layer3.forward(&e.layer2.forward(&e.layer1.forward(&g)?)?)?;
        let g = e.fuser.forward(&fk.f16, &g)?;
        let h = if deep {
            gru_update(&e.hidden_reinforce, &g, hidden)?
        } else {
            hidden.clone()
        };
        Ok((g, h))
    }

    /// `segment` for one object: decoder logits (1/4 scale, kept for dumps), the object's
    /// probability `[1, H, W]` (before soft aggregation with the other objects), and the
    /// updated hidden state when `h_out`.
    pub fn segment(
        &self,
        fk: &FrameKey,
        readout: &Tensor,
        hidden: &Tensor,
        h_out: bool,
    ) -> Result<Segmented> {
        let d = &self.decoder;
        let g16 = d.fuser.forward(&fk.f16, &Tensor::cat(&[readout, hidden], 1)?)?;
        let g8 = d.up_16_8.forward(&fk.f8, &g16)?;
        let g4 = d.up_8_4.forward(&fk.f4, &g8)?;
        let logits4 = d.pred.forward(&g4.relu()?)?;
        let hidden = if h_out {
            let u = &d.hidden_update;
            let g4 = Tensor::cat(&[&g4, &logits4], 1)?;
            let g = ((u.g16_conv.forward(&g16)? + u.g8_conv.forward(&area_down(&g8, 2)?)?)?
                + u.g4_conv.forward(&area_down(&g4, 4)?)?)?;
            Some(gru_update(&u.transform, &g, hidden)?)
        } else {
            None
        };
        let (_, _, h, w) = fk.image.dims4()?;
        let logits = upsample_bilinear(&logits4, h, w)?;
        let prob = candle_nn::ops::sigmoid(&logits.squeeze(0)?)?;
        Ok(Segmented {
            logits4,
            prob,
            hidden,
        })
    }
}

/// What [`XMem::segment`] returns.
#[derive(Debug, Clone)]
pub struct Segmented {
    /// `[1, 1, H/4, W/4]` logits before upsampling.
    pub logits4: Tensor,
    /// `[1, H, W]`, the object's sigmoid probability.
    pub prob: Tensor,
    /// The new hidden state, when asked for.
    pub hidden: Option<Tensor>,
}

/// Soft aggregation (`aggregate.py`) of the objects' probabilities `[n, H, W]`: background
/// `Π(1 − p)`, all clamped to [1e-7, 1 − 1e-7], odds → logits → softmax; `[1 + n, H, W]`.
pub fn aggregate(prob: &Tensor) -> candle_core::Result<Tensor> {
    let mut bg = prob.narrow(0, 0, 1)?.affine(-1.0, 1.0)?;
    for o in 1..prob.dim(0)? {
        bg = bg.mul(&prob.narrow(0, o, 1)?.affine(-1.0, 1.0)?)?;
    }
    let p = Tensor::cat(&[&bg, prob], 0)?;
    let p = p.clamp(1e-7f32, 1.0 - 1e-7f32)?;
    let logits = p.div(&p.affine(-1.0, 1.0)?)?.log()?;
    candle_nn::ops::softmax(&logits, 0)
}
