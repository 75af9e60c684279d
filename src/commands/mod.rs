//! The subcommands: one typed argument struct per subcommand (clap parses every option into
//! its type once, at the edge), each with its `run()`. Argument groups shared by several
//! subcommands are here; `main.rs` only parses and dispatches.

pub mod batch;
pub mod eval;
pub mod probe;
pub mod propagate;
pub mod segment;
pub mod synthetic;

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::load::{DtypeSpec, LoadSpec, XMemSpec};
use crate::output::{overlay_fps, OutputFormats};
use crate::segment::SegmentOptions;
use crate::tokenizer::Template;
use clap::Args;

/// A count from 1 to `MAX` (every count option is bounded, so no value can ask for an
/// allocation the machine cannot make).
pub fn count<const MAX: usize>(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX).contains(&n) => Ok(n),
        _ => Err(format!("`{s}` is not a whole number from 1 to {MAX}")),
    }
}

/// `--sparse` / `--dense`: at most [`crate::sampling::MAX_SPARSE`].
pub fn frames(s: &str) -> std::result::Result<usize, String> {
    count::<{ crate::sampling::MAX_SPARSE }>(s)
}

/// Most frames per SAM image-encoder batch (`--sam-batch`).
pub const MAX_SAM_BATCH: usize = 256;

/// Where the weights come from and how they run (`segment`, `batch`, `eval`).
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// VideoLISA checkpoint: a directory or a Hugging Face hub id.
    #[arg(long, default_value = crate::hub::DEFAULT_MODEL)]
    pub model: String,
    /// CLIP tower: a directory or a hub id (default: the checkpoint's vision_tower).
    #[arg(long)]
    pub clip: Option<String>,
    /// Use only the local Hugging Face cache (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// dtypes: `bf16`, `f32`, or per component `llm=bf16,clip=f32,sam=f32` (default: LLM bf16;
    /// CLIP and SAM f32 on CPU, bf16 on CUDA).
    #[arg(long)]
    pub dtype: Option<DtypeSpec>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Number of sparse frames (T_sparse).
    #[arg(long, default_value_t = crate::sampling::DEFAULT_SPARSE, value_parser = frames)]
    pub sparse: usize,
    /// Number of dense frames (T_dense; at most --sparse).
    #[arg(long, default_value_t = crate::sampling::DEFAULT_DENSE, value_parser = frames)]
    pub dense: usize,
    /// Frames per SAM image-encoder batch [default: 1 on the CPU; on CUDA as many as half the
    /// free GPU memory holds, at most 16].
    #[arg(long, value_parser = count::<MAX_SAM_BATCH>)]
    pub sam_batch: Option<usize>,
}

impl ModelArgs {
    /// What to load, as the library takes it.
    pub fn load_spec(&self) -> LoadSpec {
        LoadSpec {
            model: self.model.clone(),
            clip: self.clip.clone(),
            offline: self.offline,
            dtype: self.dtype.unwrap_or_default(),
            device: self.device,
        }
    }

    /// The pipeline options these set (sampling, SAM batch); the rest at their defaults.
    pub fn segment_options(&self) -> SegmentOptions {
        SegmentOptions {
            n_sparse: self.sparse,
            n_dense: self.dense,
            sam_batch: self.sam_batch,
            ..SegmentOptions::default()
        }
    }
}

/// VideoLISA's post-optimization (`segment`, `batch`, `eval`).
#[derive(Args, Debug, Clone)]
pub struct PropagationArgs {
    /// Post-optimization: SAM segments only the 4 dense frames, and XMem++ propagates their
    /// masks through the video (the paper's "Post-optimization" rows). Needs --xmem.
    #[arg(long)]
    pub propagate: bool,
    /// XMem++ weights: XMem.pth (or a safetensors copy), a folder holding it, or a hub id.
    #[arg(long, value_name = "PATH|HUB_ID", requires = "propagate")]
    pub xmem: Option<String>,
}

impl PropagationArgs {
    /// The XMem++ weights to propagate with (None without `--propagate`); `--propagate` alone
    /// is a usage error naming where the weights are.
    pub fn spec(&self, offline: bool) -> Result<Option<XMemSpec>> {
        match (self.propagate, &self.xmem) {
            (false, _) => Ok(None),
            (true, Some(spec)) => Ok(Some(XMemSpec {
                spec: spec.clone(),
                offline,
            })),
            (true, None) => Err(Error::Usage(format!(
                "--propagate needs --xmem PATH: XMem's weights, XMem.pth ({})",
                crate::hub::XMEM_URL
            ))),
        }
    }
}

/// How prompts are worded and which files each one gets (`segment`; in `batch`, for the jobs
/// that do not say).
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// How the prompt is worded for the model.
    #[arg(long, value_enum, default_value_t = Template::Referring)]
    pub template: Template,
    /// Also write overlay PNGs and an overlay mp4.
    #[arg(long)]
    pub overlay: bool,
    /// Also write COCO RLE JSON (masks.rle.json) per prompt.
    #[arg(long)]
    pub rle: bool,
    /// Foreground value of the mask PNGs, 1–255 (100 for the Ref-DAVIS raw layout).
    #[arg(long, default_value_t = 255, value_parser = clap::value_parser!(u8).range(1..))]
    pub mask_value: u8,
}

impl OutputArgs {
    /// The files these ask for, an overlay video at `fps` (the input's rate).
    pub fn formats(&self, fps: Option<f64>) -> OutputFormats {
        OutputFormats {
            mask_value: self.mask_value,
            overlay_png: self.overlay,
            overlay_mp4: self.overlay.then(|| overlay_fps(fps)),
            rle: self.rle,
            ..OutputFormats::default()
        }
    }
}

/// Prints each output that could not be written; any is a runtime failure (the masks and
/// `summary.json` in `out` are complete regardless).
pub fn report_warnings(warnings: &[String], out: &std::path::Path) -> Result<()> {
    if warnings.is_empty() {
        return Ok(());
    }
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Err(Error::Runtime(format!(
        "{} output(s) could not be written (above); the masks and summary.json in {} are complete",
        warnings.len(),
        out.display()
    )))
}

/// Prints `value` on stdout as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let bytes = crate::json::to_pretty(value)?;
    println!("{}", String::from_utf8_lossy(&bytes));
    Ok(())
}
