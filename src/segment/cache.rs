//! The prompt stage's results, kept in a `--propagate` run's folder
//! (`prompt_stage.safetensors`): each prompt's `[SEG]` prompt embedding and SAM's masks of the
//! seed frames, with the key of everything that decided them (weights, dtypes, device,
//! sampling, template, prompts, the video's bytes) and the run's summary. A rerun whose key
//! matches (only `--annotate` changed) skips CLIP, the LLM and SAM: one XMem++ pass.

use super::summary::SegmentSummary;
use crate::error::{Error, Result};
use crate::output::write_atomic;
use candle_core::{DType, Device, Tensor};
use image::GrayImage;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The file name inside the output folder.
pub const CACHE_FILE: &str = "prompt_stage.safetensors";

/// What the prompt stage of a `--propagate` run computed.
#[derive(Debug, Clone)]
pub struct PromptStageCache {
    /// Fingerprint of everything that decided it.
    pub key: String,
    /// The seed (dense) frames.
    pub seed_frames: Vec<usize>,
    /// Per prompt, SAM's prompt embedding `[1, 1, D]` (f32, on the CPU).
    pub embeddings: Vec<Tensor>,
    /// Per prompt, SAM's 0/255 mask of each seed frame.
    pub seeds: Vec<BTreeMap<usize, GrayImage>>,
    /// The summary of the run that computed it.
    pub summary: SegmentSummary,
}

/// What the folder's cache says about a run with a given key.
#[derive(Debug)]
pub enum Lookup {
    /// Usable.
    Hit(Box<PromptStageCache>),
    /// No cache (or an unreadable one): computed afresh.
    Missing,
    /// Made for other inputs.
    Stale,
}

fn bad(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Runtime(format!("{}: {e}", path.display()))
}

impl PromptStageCache {
    /// Writes the cache into `dir` (atomically).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let cpu = Device::Cpu;
        let mut t: HashMap<String, Tensor> = HashMap::new();
        for (k, (e, seeds)) in self.embeddings.iter().zip(&self.seeds).enumerate() {
            t.insert(
                format!("prompt_{k}.embedding"),
                e.to_dtype(DType::F32)?.to_device(&cpu)?,
            );
            for (i, m) in seeds {
                let (w, h) = m.dimensions();
                let mask = Tensor::from_vec(m.as_raw().clone(), (h as usize, w as usize), &cpu)?;
                t.insert(format!("prompt_{k}.seed.{i}"), mask);
            }
        }
        let path = dir.join(CACHE_FILE);
        let summary = serde_json::to_string(&self.summary).map_err(|e| bad(&path, e))?;
        let meta = HashMap::from([
            ("key".to_string(), self.key.clone()),
            ("prompts".to_string(), self.embeddings.len().to_string()),
            (
                "seed_frames".to_string(),
                serde_json::json!(self.seed_frames).to_string(),
            ),
            ("summary".to_string(), summary),
        ]);
        let mut bytes = safetensors::serialize(t.iter(), Some(meta)).map_err(|e| bad(&path, e))?;
        crate::output::sort_safetensors_header(&mut bytes)?;
        write_atomic(&path, |w| {
            std::io::Write::write_all(w, &bytes).map_err(|e| Error::io(&path, e))
        })
    }

    /// Reads `dir`'s cache for a run with `key`.
    pub fn read(dir: &Path, key: &str) -> Result<Lookup> {
        let path = dir.join(CACHE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Lookup::Missing),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let Ok((_, header)) = safetensors::SafeTensors::read_metadata(&bytes) else {
            return Ok(Lookup::Missing);
        };
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("key").map(String::as_str) != Some(key) {
            return Ok(Lookup::Stale);
        }
        match Self::parse(&bytes, &meta, key) {
            Ok(c) => Ok(Lookup::Hit(Box::new(c))),
            Err(_) => Ok(Lookup::Missing),
        }
    }

    fn parse(bytes: &[u8], meta: &HashMap<String, String>, key: &str) -> Result<Self> {
        let field = |k: &str| {
            meta.get(k)
                .ok_or_else(|| Error::Internal(format!("{CACHE_FILE}: no `{k}`")))
        };
        let json = |k: &str| -> Result<serde_json::Value> {
            serde_json::from_str(field(k)?).map_err(|e| Error::Internal(format!("{CACHE_FILE}: {k}: {e}")))
        };
        let n: usize = field("prompts")?
            .parse()
            .map_err(|_| Error::Internal(format!("{CACHE_FILE}: prompts")))?;
        let seed_frames: Vec<usize> = serde_json::from_value(json("seed_frames")?)
            .map_err(|e| Error::Internal(format!("{CACHE_FILE}: seed_frames: {e}")))?;
        let summary: SegmentSummary = serde_json::from_value(json("summary")?)
            .map_err(|e| Error::Internal(format!("{CACHE_FILE}: summary: {e}")))?;
        let mut t = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        let mut take = |name: String| {
            t.remove(&name)
                .ok_or_else(|| Error::Internal(format!("{CACHE_FILE}: no tensor {name}")))
        };
        let mut embeddings = Vec::with_capacity(n);
        let mut seeds = Vec::with_capacity(n);
        for k in 0..n {
            embeddings.push(take(format!("prompt_{k}.embedding"))?);
            let mut masks = BTreeMap::new();
            for &i in &seed_frames {
                let m = take(format!("prompt_{k}.seed.{i}"))?;
                let (h, w) = m.dims2()?;
                let raw: Vec<u8> = m.flatten_all()?.to_vec1()?;
                let img = GrayImage::from_raw(w as u32, h as u32, raw)
                    .ok_or_else(|| Error::Internal(format!("{CACHE_FILE}: seed {i}")))?;
                masks.insert(i, img);
            }
            seeds.push(masks);
        }
        Ok(PromptStageCache {
            key: key.to_string(),
            seed_frames,
            embeddings,
            seeds,
            summary,
        })
    }
}
