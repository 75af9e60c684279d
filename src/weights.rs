//! Checkpoint loading: sharded safetensors with `model.safetensors.index.json`, single
//! safetensors files, and PyTorch pickles (`.pth`, `pytorch_model*.bin`). Tensors are looked up
//! by their reference state-dict names; a missing or mis-shaped tensor is a typed error that
//! names the file, the tensor, and the expected and found shapes.

use crate::error::{Error, Result};
use candle_core::pickle::PthTensors;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;

enum Store {
    Safetensors(Vec<MmapedSafetensors>),
    Pth(Vec<PthTensors>),
    Memory(HashMap<String, Tensor>),
}

/// Where one tensor lives.
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    shape: Vec<usize>,
}

/// An opened checkpoint (one or several files), indexed by tensor name.
pub struct Weights {
    files: Vec<PathBuf>,
    entries: HashMap<String, Entry>,
    store: Store,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("files", &self.files)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

fn is_pickle(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("pth" | "pt" | "bin" | "ckpt")
    )
}

/// A sharded checkpoint's `*.index.json`: which file holds each tensor.
#[derive(Debug, serde::Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

/// Shard files named by a `*.index.json` (`{"weight_map": {tensor: file}}`), checked to exist.
fn shards_from_index(index: &Path) -> Result<Vec<PathBuf>> {
    let map = crate::json::read_json::<ShardIndex>(index, Error::Checkpoint)?.weight_map;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<String> = map.into_values().collect();
    files.sort();
    files.dedup();
    let mut out = Vec::new();
    for f in files {
        if f.contains("..") || f.contains('/') || f.contains('\\') {
            return Err(Error::Checkpoint(format!(
                "{}: shard name `{f}` is not a plain file name",
                index.display()
            )));
        }
        let p = dir.join(&f);
        if !p.is_file() {
            return Err(Error::NoWeights {
                path: p,
                expected: format!("the shard `{f}` listed in {}", index.display()),
            });
        }
        out.push(p);
    }
    Ok(out)
}

impl Weights {
    /// Opens a checkpoint: a weight file, or a folder holding `model.safetensors.index.json`,
    /// `model.safetensors`, `pytorch_model.bin.index.json`, `pytorch_model.bin` or `*.safetensors`.
    pub fn open(path: impl AsRef<Path>) -> Result<Weights> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::NotFound {
                path: path.to_path_buf(),
            });
        }
        let files = if path.is_dir() {
            let candidates = [
                "model.safetensors.index.json",
                "model.safetensors",
                "pytorch_model.bin.index.json",
                "pytorch_model.bin",
            ];
            match candidates.iter().map(|c| path.join(c)).find(|p| p.is_file()) {
                Some(p) if p.extension().is_some_and(|e| e == "json") => shards_from_index(&p)?,
                Some(p) => vec![p],
                None => {
                    let mut st: Vec<PathBuf> = std::fs::read_dir(path)
                        .map_err(|e| Error::io(path, e))?
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                        .collect();
                    st.sort();
                    if st.is_empty() {
                        return Err(Error::NoWeights {
                            path: path.to_path_buf(),
                            expected: candidates.join(", ") + " or *.safetensors",
                        });
                    }
                    st
                }
            }
        } else {
            vec![path.to_path_buf()]
        };
        Self::from_files(files)
    }

    /// Opens exactly these files (all safetensors, or all PyTorch pickles).
    pub fn from_files(files: Vec<PathBuf>) -> Result<Weights> {
        let mut entries = HashMap::new();
        let store = if files.iter().all(|f| is_pickle(f)) {
            let mut stores = Vec::new();
            for (i, f) in files.iter().enumerate() {
                let pth = PthTensors::new(f, None).map_err(|e| {
                    Error::Checkpoint(format!("{}: not a readable PyTorch checkpoint: {e}", f.display()))
                })?;
                for (name, info) in pth.tensor_infos() {
                    entries.insert(
                        name.clone(),
                        Entry {
                            file: i,
                            shape: info.layout.shape().dims().to_vec(),
                        },
                    );
                }
                stores.push(pth);
            }
            Store::Pth(stores)
        } else {
            let mut stores = Vec::new();
            for (i, f) in files.iter().enumerate() {
                // SAFETY: the files are memory-mapped read-only; like every mmap user we rely on
                // them not being truncated while the model is loaded.
                let one = unsafe { MmapedSafetensors::new(f) }.map_err(|e| {
                    Error::Checkpoint(format!("{}: not a readable safetensors file: {e}", f.display()))
                })?;
                for (name, view) in one.tensors() {
                    entries.insert(
                        name,
                        Entry {
                            file: i,
                            shape: view.shape().to_vec(),
                        },
                    );
                }
                stores.push(one);
            }
            Store::Safetensors(stores)
        };
        Ok(Weights {
            files,
            entries,
            store,
        })
    }

    /// The files of the checkpoint.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Every tensor name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    fn describe_files(&self) -> String {
        match self.files.as_slice() {
            [one] => one.display().to_string(),
            many => format!(
                "{} (+{} more shards)",
                many.first().map(|p| p.display().to_string()).unwrap_or_default(),
                many.len().saturating_sub(1)
            ),
        }
    }

    /// Tensors already in memory (benchmarks with random full-size weights); `label` stands in
    /// for the file name in messages.
    pub fn from_tensors(label: &str, tensors: HashMap<String, Tensor>) -> Weights {
        let entries = tensors
            .iter()
            .map(|(k, t)| {
                let entry = Entry {
                    file: 0,
                    shape: t.dims().to_vec(),
                };
                (k.clone(), entry)
            })
            .collect();
        Weights {
            files: vec![PathBuf::from(label)],
            entries,
            store: Store::Memory(tensors),
        }
    }

    /// File holding `name` (or all files, for messages about missing tensors).
    pub fn file_of(&self, name: &str) -> String {
        match self.entries.get(name) {
            Some(e) => self.files[e.file].display().to_string(),
            None => self.describe_files(),
        }
    }

    /// Loads `name` as stored.
    pub fn load(&self, name: &str, device: &Device) -> Result<Tensor> {
        let missing = || Error::MissingTensor {
            file: self.describe_files(),
            tensor: name.to_string(),
        };
        let entry = self.entries.get(name).ok_or_else(missing)?;
        let t = match &self.store {
            Store::Safetensors(st) => {
                let t = st[entry.file].load(name, device)?;
                if let Ok(view) = st[entry.file].get(name) {
                    release_mapped_pages(view.data());
                }
                t
            }
            Store::Pth(p) => p[entry.file].get(name)?.ok_or_else(missing)?.to_device(device)?,
            Store::Memory(m) => m.get(name).ok_or_else(missing)?.to_device(device)?,
        };
        Ok(t)
    }
}

/// Drops the whole pages of a tensor's bytes from this process's view of a memory-mapped file
/// once they have been copied out: otherwise a model's file stays resident next to its copy
/// while the model loads (VideoLISA-3.8B: 18.1 GB peak instead of ~12 GB). The pages stay in
/// the page cache and are read again if the tensor is loaded again.
fn release_mapped_pages(data: &[u8]) {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads a constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let start = data.as_ptr() as usize;
        let (lo, hi) = (start.div_ceil(page) * page, (start + data.len()) / page * page);
        if hi > lo {
            // SAFETY: [lo, hi) lies inside a read-only file mapping that stays mapped; dropping
            // its pages only makes a later read fault them in again from the file.
            unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_DONTNEED) };
        }
    }
}

/// A view of a checkpoint under a name prefix, loading tensors in one dtype onto one device:
/// the counterpart of a PyTorch module path (`model.visual_model.image_encoder.blocks.0`).
#[derive(Clone)]
pub struct Loader {
    weights: Arc<Weights>,
    prefix: String,
    dtype: DType,
    device: Device,
}

impl Loader {
    /// A loader at the root of `weights`.
    pub fn new(weights: Arc<Weights>, dtype: DType, device: Device) -> Self {
        Loader {
            weights,
            prefix: String::new(),
            dtype,
            device,
        }
    }

    /// The loader of a sub-module (`pp("blocks").pp(3)`).
    pub fn pp(&self, s: impl Display) -> Loader {
        let prefix = if self.prefix.is_empty() {
            s.to_string()
        } else {
            format!("{}.{s}", self.prefix)
        };
        Loader {
            prefix,
            ..self.clone()
        }
    }

    /// The same view with another dtype.
    pub fn with_dtype(&self, dtype: DType) -> Loader {
        Loader {
            dtype,
            ..self.clone()
        }
    }

    /// Full name of `s` under this prefix.
    pub fn name(&self, s: &str) -> String {
        if self.prefix.is_empty() {
            s.to_string()
        } else {
            format!("{}.{s}", self.prefix)
        }
    }

    /// The dtype tensors are converted to.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device tensors are loaded onto.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The underlying checkpoint.
    pub fn weights(&self) -> &Arc<Weights> {
        &self.weights
    }

    /// Whether `s` exists under this prefix.
    pub fn contains(&self, s: &str) -> bool {
        self.weights.shape(&self.name(s)).is_some()
    }

    /// Shape of `s`, or a [`Error::MissingTensor`].
    pub fn shape(&self, s: &str) -> Result<Vec<usize>> {
        let name = self.name(s);
        self.weights
            .shape(&name)
            .map(<[usize]>::to_vec)
            .ok_or_else(|| Error::MissingTensor {
                file: self.weights.file_of(&name),
                tensor: name,
            })
    }

    /// Loads `s`, checking it has `shape`, converted to this loader's dtype and device.
    pub fn get(&self, s: &str, shape: &[usize]) -> Result<Tensor> {
        let name = self.name(s);
        let found = self.shape(s)?;
        if found != shape {
            return Err(Error::TensorShape {
                file: self.weights.file_of(&name),
                tensor: name,
                expected: shape.to_vec(),
                found,
            });
        }
        Ok(self.weights.load(&name, &self.device)?.to_dtype(self.dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_missing_errors_name_everything() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let t = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        candle_core::safetensors::save(&HashMap::from([("a.weight".to_string(), t)]), &p).unwrap();
        let w = Arc::new(Weights::open(&p).unwrap());
        let l = Loader::new(w, DType::F32, Device::Cpu).pp("a");
        let e = l.get("weight", &[3, 2]).unwrap_err().to_string();
        assert!(
            e.contains("w.safetensors")
                && e.contains("a.weight")
                && e.contains("[2, 3]")
                && e.contains("[3, 2]"),
            "{e}"
        );
        let e = l.get("bias", &[3]).unwrap_err().to_string();
        assert!(e.contains("a.bias") && e.contains("missing"), "{e}");
        assert!(matches!(
            Weights::open(dir.path().join("nope")),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn missing_shard_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"weight_map": {"x": "model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let e = Weights::open(dir.path()).unwrap_err();
        assert!(matches!(e, Error::NoWeights { .. }), "{e}");
        assert!(e.to_string().contains("model-00001-of-00002.safetensors"));
    }
}
