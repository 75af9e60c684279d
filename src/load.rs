//! What to load and how, parsed once at the edge: the checkpoint and CLIP tower (a folder or a
//! hub id), per-component dtypes and the device, XMem++'s weights. A run resolves and loads
//! them through [`crate::setup::RunSetup`].

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::hub::{self, RepoKind};
use crate::model::parse_dtype;
use crate::model::videolisa::{LoadOptions, ModelPaths, VideoLisa, VideoLisaConfig};
use candle_core::{DType, Device};
use std::path::Path;
use std::str::FromStr;

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
                match cfg.vision_tower().map(str::to_string) {
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
}

/// Loads every component from resolved folders (with a spinner on the terminal).
pub fn load_resolved(paths: &ModelPaths, options: LoadOptions) -> Result<VideoLisa> {
    let spinner = crate::progress::bar(0, "loading VideoLISA");
    let model = VideoLisa::load(paths, options)?;
    spinner.finish_and_clear();
    Ok(model)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_specs_parse_once() {
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
