//! What to load and how, parsed once at the edge: the checkpoint and CLIP tower (a folder or a
//! hub id), per-component dtypes and the device. `segment`, `eval` (and any later caller) load
//! VideoLISA through [`LoadSpec::load`].

use crate::error::{Error, Result};
use crate::hub::{self, RepoKind};
use crate::model::parse_dtype;
use crate::model::videolisa::{LoadOptions, ModelPaths, VideoLisa, VideoLisaConfig};
use candle_core::{DType, Device};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// Where the model runs: `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}`: expected cpu, cuda or cuda:N");
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(bad),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Opens the device; a CUDA request in a build without CUDA is a usage error.
    pub fn device(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(Error::Invalid(
                        "--device cuda: this build has no CUDA support; rebuild with `--features cuda`"
                            .into(),
                    ));
                }
                Device::new_cuda(n).map_err(|e| {
                    // candle's message carries a backtrace: keep its first line
                    let why = e.to_string().lines().next().unwrap_or_default().to_string();
                    Error::Invalid(format!(
                        "--device cuda:{n}: no usable CUDA device ({why}); run where an NVIDIA GPU and its \
                         driver are, or use --device cpu"
                    ))
                })
            }
        }
    }
}

/// Free memory of a GPU in bytes; `None` on the CPU (or when the driver cannot say).
pub fn free_memory(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let Ok(cuda) = device.as_cuda_device() {
        return cuda
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, _total)| free as u64);
    }
    let _ = device;
    None
}

/// `--dtype`: one dtype for everything (`bf16`) or per component (`llm=bf16,clip=f32,sam=f32`);
/// components not named keep the device's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DtypeSpec {
    /// Phi-3, projector and `text_hidden_fcs`.
    pub llm: Option<DType>,
    /// The CLIP tower.
    pub clip: Option<DType>,
    /// SAM.
    pub sam: Option<DType>,
}

impl FromStr for DtypeSpec {
    type Err = String;

    fn from_str(spec: &str) -> std::result::Result<Self, String> {
        let mut d = DtypeSpec::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, val) = part.split_once('=').unwrap_or(("all", part));
            let t =
                parse_dtype(val.trim()).ok_or_else(|| format!("unknown dtype `{val}` (bf16, f16, f32)"))?;
            match key.trim() {
                "all" => (d.llm, d.clip, d.sam) = (Some(t), Some(t), Some(t)),
                "llm" => d.llm = Some(t),
                "clip" => d.clip = Some(t),
                "sam" => d.sam = Some(t),
                k => return Err(format!("unknown component `{k}` (llm, clip, sam)")),
            }
        }
        Ok(d)
    }
}

impl DtypeSpec {
    /// The device defaults with the named components replaced.
    pub fn options(&self, device: Device) -> LoadOptions {
        let mut o = LoadOptions::defaults(device);
        o.llm = self.llm.unwrap_or(o.llm);
        o.clip = self.clip.unwrap_or(o.clip);
        o.sam = self.sam.unwrap_or(o.sam);
        o
    }
}

/// Everything needed to load VideoLISA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSpec {
    /// VideoLISA checkpoint: a folder or a hub id.
    pub model: String,
    /// CLIP tower: a folder or a hub id (default: the checkpoint's `vision_tower`).
    pub clip: Option<String>,
    /// Never touch the network.
    pub offline: bool,
    /// Per-component dtypes.
    pub dtype: DtypeSpec,
    /// Where it runs.
    pub device: DeviceSpec,
}

impl LoadSpec {
    /// Resolves the checkpoint and the CLIP tower to local folders (downloading when allowed).
    pub fn resolve(&self) -> Result<ModelPaths> {
        let model_dir = hub::resolve(&self.model, RepoKind::VideoLisa, self.offline)?;
        let clip_spec = match &self.clip {
            Some(c) => c.clone(),
            None => {
                let cfg = VideoLisaConfig::open(&model_dir)?;
                match cfg.vision_tower {
                    Some(v) if Path::new(&v).is_dir() => v,
                    Some(v) if model_dir.join(&v).is_dir() => model_dir.join(&v).display().to_string(),
                    Some(v) if hub::is_hub_id(&v) => v,
                    _ => hub::DEFAULT_CLIP.to_string(),
                }
            }
        };
        let clip_dir = hub::resolve(&clip_spec, RepoKind::Clip, self.offline)?;
        Ok(ModelPaths {
            model: model_dir,
            clip: clip_dir,
        })
    }

    /// Opens the device and returns the dtypes and device everything loads with.
    pub fn options(&self) -> Result<LoadOptions> {
        Ok(self.dtype.options(self.device.device()?))
    }

    /// Opens the device, resolves the folders and loads every component.
    pub fn load(&self) -> Result<VideoLisa> {
        let options = self.options()?;
        load_resolved(&self.resolve()?, options)
    }
}

/// Loads every component from resolved folders (with a spinner on the terminal).
pub fn load_resolved(paths: &ModelPaths, options: LoadOptions) -> Result<VideoLisa> {
    let spinner = crate::progress::bar(0, "loading VideoLISA");
    let model = VideoLisa::load(paths, options)?;
    spinner.finish_and_clear();
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_and_dtype_specs_parse_once() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert!("gpu".parse::<DeviceSpec>().is_err() && "cuda:x".parse::<DeviceSpec>().is_err());
        let d: DtypeSpec = "bf16".parse().unwrap();
        assert_eq!(
            (d.llm, d.clip, d.sam),
            (Some(DType::BF16), Some(DType::BF16), Some(DType::BF16))
        );
        let d: DtypeSpec = "clip=f32, sam=bf16".parse().unwrap();
        assert_eq!(
            (d.llm, d.clip, d.sam),
            (None, Some(DType::F32), Some(DType::BF16))
        );
        let o = d.options(Device::Cpu);
        assert_eq!((o.llm, o.clip, o.sam), (DType::BF16, DType::F32, DType::BF16));
        assert!("vit=f32".parse::<DtypeSpec>().unwrap_err().contains("vit"));
        assert!("f64".parse::<DtypeSpec>().unwrap_err().contains("f64"));
    }
}

/// Where XMem++'s weights come from (`--xmem`): `XMem.pth` (or a safetensors copy), a folder
/// holding one, or a hub id whose repository holds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMemSpec {
    /// The path or hub id as given.
    pub spec: String,
    /// Never touch the network.
    pub offline: bool,
}

impl XMemSpec {
    /// The weight file, downloading a hub repository when allowed.
    pub fn resolve(&self) -> Result<std::path::PathBuf> {
        let path = Path::new(&self.spec);
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        let missing = |p: &Path| Error::MissingFile {
            path: p.to_path_buf(),
            what: format!("XMem's weights, XMem.pth (download {})", hub::XMEM_URL),
        };
        if !path.exists() && hub::local_path_reason(&self.spec).is_some() {
            return Err(missing(path));
        }
        let dir = if path.is_dir() {
            path.to_path_buf()
        } else {
            hub::resolve(&self.spec, RepoKind::XMem, self.offline)?
        };
        hub::XMEM_FILES
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| missing(&dir.join(hub::XMEM_FILES[0])))
    }

    /// Loads the network in f32 on `device`.
    pub fn load(&self, device: &Device) -> Result<crate::model::xmem::XMem> {
        crate::model::xmem::XMem::open(&self.resolve()?, device)
    }
}
