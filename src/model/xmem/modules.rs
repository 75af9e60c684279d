//! XMem's building blocks (XMem2 `model/resnet.py`, `modules.py`, `group_modules.py`,
//! `cbam.py`) for one object, so the reference's `[batch, objects, C, H, W]` group tensors are
//! plain `[1, C, H, W]` here. Every width and block count is read from the weight shapes;
//! BatchNorm (eval mode) is folded into the convolution before it.

use crate::model::linear::LoadLinear;
use crate::weights::Loader;
use crate::Result;
use candle_core::{Tensor, D};

/// BatchNorm's epsilon in `nn.BatchNorm2d`.
const BN_EPS: f64 = 1e-5;

/// A 2-D convolution (square kernel) with an optional bias.
#[derive(Debug, Clone)]
pub struct Conv {
    /// `[out, in, k, k]` (on the CPU in f32 a view of `[out, k, k, in]`, see
    /// [`crate::model::conv::patch_layout`]).
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Option<Tensor>,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// The weight's Winograd transform for 3×3 stride-1 kernels on the CPU in f32, made once at
    /// load (see [`crate::model::conv::winograd_filters`]).
    pub winograd: Option<Tensor>,
}

impl Conv {
    /// `nn.Conv2d` under `l` (`weight`, optional `bias`); the padding keeps "same" size at
    /// stride 1 (`k / 2`), as every XMem convolution does.
    pub fn load(l: &Loader, stride: usize) -> Result<Self> {
        let shape = l.shape("weight")?;
        let weight = l.get("weight", &shape)?;
        let bias = if l.contains("bias") {
            Some(l.get("bias", &[shape[0]])?)
        } else {
            None
        };
        Conv::new(weight, bias, stride, shape[3] / 2)
    }

    fn new(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize) -> Result<Self> {
        let winograd = match (stride, padding) {
            (1, 1) => crate::model::conv::winograd_filters(&weight)?,
            _ => None,
        };
        Ok(Conv {
            weight: crate::model::conv::patch_layout(&weight)?,
            bias,
            stride,
            padding,
            winograd,
        })
    }

    /// A bias-free convolution followed by `nn.BatchNorm2d` `bn`, folded:
    /// `w·γ/√(var+ε)` and `β − mean·γ/√(var+ε)`.
    pub fn load_bn(conv: &Loader, bn: &Loader, stride: usize) -> Result<Self> {
        let shape = conv.shape("weight")?;
        let weight = conv.get("weight", &shape)?;
        let n = shape[0];
        let gamma = bn.get("weight", &[n])?;
        let beta = bn.get("bias", &[n])?;
        let mean = bn.get("running_mean", &[n])?;
        let var = bn.get("running_var", &[n])?;
        let scale = gamma.div(&(var + BN_EPS)?.sqrt()?)?;
        let weight = weight.broadcast_mul(&scale.reshape((n, 1, 1, 1))?)?;
        let bias = beta.sub(&mean.mul(&scale)?)?;
        Conv::new(weight, Some(bias), stride, shape[3] / 2)
    }

    /// Output channels.
    pub fn out_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `[1, C, H, W]` → `[1, out, H', W']`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (u, b) = (self.winograd.as_ref(), self.bias.as_ref());
        if let Some(y) = crate::model::conv::conv2d_with(x, &self.weight, u, b, self.padding, self.stride)? {
            return Ok(y);
        }
        crate::model::conv2d(x, &self.weight, b, self.padding, self.stride)
    }
}

/// A residual block of `resnet.py`: `BasicBlock` (two 3×3) or `Bottleneck` (1×1, 3×3, 1×1);
/// the stride sits on the 3×3 (torchvision v1.5).
#[derive(Debug, Clone)]
pub struct Block {
    /// conv1 + bn1, conv2 + bn2 (+ conv3 + bn3 for a bottleneck).
    pub convs: Vec<Conv>,
    /// `downsample.0` + `downsample.1` where the shape changes.
    pub downsample: Option<Conv>,
}

impl Block {
    fn load(l: &Loader, stride: usize) -> Result<Self> {
        let bottleneck = l.contains("conv3.weight");
        let (n, strided) = if bottleneck { (3, 2) } else { (2, 1) };
        let convs = (1..=n)
            .map(|i| {
                let s = if i == strided { stride } else { 1 };
                Conv::load_bn(&l.pp(format!("conv{i}")), &l.pp(format!("bn{i}")), s)
            })
            .collect::<Result<Vec<_>>>()?;
        let downsample = if l.contains("downsample.0.weight") {
            Some(Conv::load_bn(
                &l.pp("downsample.0"),
                &l.pp("downsample.1"),
                stride,
            )?)
        } else {
            None
        };
        Ok(Block { convs, downsample })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut out = x.clone();
        for (i, c) in self.convs.iter().enumerate() {
            out = c.forward(&out)?;
            if i + 1 < self.convs.len() {
                out = out.relu()?;
            }
        }
        let residual = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        (out + residual)?.relu()
    }
}

/// `ResNet._make_layer`'s output: blocks `0..n` under `l` (n read from the weights), the
/// first one strided.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The blocks in order.
    pub blocks: Vec<Block>,
}

impl Layer {
    /// Loads every `{i}.conv1.weight` block under `l`.
    pub fn load(l: &Loader, stride: usize) -> Result<Self> {
        let mut blocks = Vec::new();
        while l.contains(&format!("{}.conv1.weight", blocks.len())) {
            let s = if blocks.is_empty() { stride } else { 1 };
            blocks.push(Block::load(&l.pp(blocks.len()), s)?);
        }
        if blocks.is_empty() {
            return Err(crate::Error::MissingTensor {
                file: l.weights().file_of(&l.name("0.conv1.weight")),
                tensor: l.name("0.conv1.weight"),
            });
        }
        Ok(Layer { blocks })
    }

    /// Runs the blocks.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.blocks.iter().try_fold(x.clone(), |x, b| b.forward(&x))
    }

    /// Channels out of the last block.
    pub fn out_dim(&self) -> usize {
        let last = self.blocks.last().expect("a layer has at least one block");
        last.convs.last().expect("a block has convolutions").out_dim()
    }
}

/// `GroupResBlock`: `conv2(relu(conv1(relu(g)))) + (downsample(g) | g)`.
#[derive(Debug, Clone)]
pub struct GroupResBlock {
    /// First 3×3.
    pub conv1: Conv,
    /// Second 3×3.
    pub conv2: Conv,
    /// 3×3 on the skip path where in ≠ out.
    pub downsample: Option<Conv>,
}

impl GroupResBlock {
    /// Loads `conv1`, `conv2` and the optional `downsample` under `l`.
    pub fn load(l: &Loader) -> Result<Self> {
        let downsample = if l.contains("downsample.weight") {
            Some(Conv::load(&l.pp("downsample"), 1)?)
        } else {
            None
        };
        Ok(GroupResBlock {
            conv1: Conv::load(&l.pp("conv1"), 1)?,
            conv2: Conv::load(&l.pp("conv2"), 1)?,
            downsample,
        })
    }

    /// The block.
    pub fn forward(&self, g: &Tensor) -> candle_core::Result<Tensor> {
        let out = self.conv2.forward(&self.conv1.forward(&g.relu()?)?.relu()?)?;
        let skip = match &self.downsample {
            Some(d) => d.forward(g)?,
            None => g.clone(),
        };
        out + skip
    }
}

/// CBAM (`cbam.py`): channel gate (avg- and max-pooled MLP, summed, sigmoid) then spatial
/// gate (`[max_c, mean_c]` → 7×7 conv → sigmoid).
#[derive(Debug, Clone)]
pub struct Cbam {
    /// `ChannelGate.mlp.1`.
    pub mlp1: crate::model::linear::Linear,
    /// `ChannelGate.mlp.3`.
    pub mlp3: crate::model::linear::Linear,
    /// `SpatialGate.spatial.conv`.
    pub spatial: Conv,
}

impl Cbam {
    /// Loads the gates under `l` for `c` channels.
    pub fn load(l: &Loader, c: usize) -> Result<Self> {
        let mlp = l.pp("ChannelGate.mlp");
        let mid = mlp.shape("1.weight")?[0];
        Ok(Cbam {
            mlp1: mlp.linear("1", c, mid, true)?,
            mlp3: mlp.linear("3", mid, c, true)?,
            spatial: Conv::load(&l.pp("SpatialGate.spatial.conv"), 1)?,
        })
    }

    fn mlp(&self, v: &Tensor) -> candle_core::Result<Tensor> {
        use candle_core::Module;
        self.mlp3.forward(&self.mlp1.forward(v)?.relu()?)
    }

    /// Both gates.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, _, _) = x.dims4()?;
        let flat = x.flatten_from(2)?;
        let avg = flat.mean(D::Minus1)?;
        let max = flat.max(D::Minus1)?;
        let att = (self.mlp(&avg)? + self.mlp(&max)?)?;
        let x = x.broadcast_mul(&candle_nn::ops::sigmoid(&att)?.reshape((b, c, 1, 1))?)?;
        let pooled = Tensor::cat(&[x.max_keepdim(1)?, x.mean_keepdim(1)?], 1)?;
        let scale = candle_nn::ops::sigmoid(&self.spatial.forward(&pooled)?)?;
        x.broadcast_mul(&scale)
    }
}

/// `FeatureFusionBlock(x, g)`: `block1(cat[x, g])`, CBAM on it, added, `block2`.
#[derive(Debug, Clone)]
pub struct FeatureFusionBlock {
    /// `GroupResBlock(x + g → mid)`.
    pub block1: GroupResBlock,
    /// CBAM(mid).
    pub attention: Cbam,
    /// `GroupResBlock(mid → out)`.
    pub block2: GroupResBlock,
}

impl FeatureFusionBlock {
    /// Loads `block1`, `attention`, `block2` under `l`.
    pub fn load(l: &Loader) -> Result<Self> {
        let block1 = GroupResBlock::load(&l.pp("block1"))?;
        let mid = block1.conv1.out_dim();
        Ok(FeatureFusionBlock {
            attention: Cbam::load(&l.pp("attention"), mid)?,
            block1,
            block2: GroupResBlock::load(&l.pp("block2"))?,
        })
    }

    /// `x` image features, `g` object features (same spatial size).
    pub fn forward(&self, x: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        let g = self.block1.forward(&Tensor::cat(&[x, g], 1)?)?;
        let r = self.attention.forward(&g)?;
        self.block2.forward(&(g + r)?)
    }
}

/// The GRU-like update shared by `HiddenReinforcer` and `HiddenUpdater`: the transform of
/// `cat[g, h]` gives forget, update and new value; `h' = σ(f)·h·(1−σ(u)) + σ(u)·tanh(n)`.
pub fn gru_update(transform: &Conv, g: &Tensor, h: &Tensor) -> candle_core::Result<Tensor> {
    let hd = h.dim(1)?;
    let values = transform.forward(&Tensor::cat(&[g, h], 1)?)?;
    let forget = candle_nn::ops::sigmoid(&values.narrow(1, 0, hd)?)?;
    let update = candle_nn::ops::sigmoid(&values.narrow(1, hd, hd)?)?;
    let new_value = values.narrow(1, 2 * hd, hd)?.tanh()?;
    let keep = forget.mul(h)?.mul(&update.affine(-1.0, 1.0)?)?;
    keep + update.mul(&new_value)?
}

/// `UpsampleBlock`: `skip_conv(skip)` + bilinear ×2 of `g`, then a `GroupResBlock`.
#[derive(Debug, Clone)]
pub struct UpsampleBlock {
    /// 3×3 on the skip connection.
    pub skip_conv: Conv,
    /// The block after the sum.
    pub out_conv: GroupResBlock,
}

impl UpsampleBlock {
    /// Loads `skip_conv` and `out_conv` under `l`.
    pub fn load(l: &Loader) -> Result<Self> {
        Ok(UpsampleBlock {
            skip_conv: Conv::load(&l.pp("skip_conv"), 1)?,
            out_conv: GroupResBlock::load(&l.pp("out_conv"))?,
        })
    }

    /// `skip` at twice `g`'s resolution.
    pub fn forward(&self, skip: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        let skip = self.skip_conv.forward(skip)?;
        let (_, _, h, w) = skip.dims4()?;
        let g = crate::model::resample::upsample_bilinear(g, h, w)?;
        self.out_conv.forward(&(skip + g)?)
    }
}

/// `F.interpolate(mode='area')` by an integer factor: average pooling.
pub fn area_down(x: &Tensor, factor: usize) -> candle_core::Result<Tensor> {
    x.avg_pool2d_with_stride(factor, factor)
}
