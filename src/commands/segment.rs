//! `videolisa segment`: resolves the checkpoint (directory or hub id), loads VideoLISA with the
//! requested dtypes and device, and segments one video for one or more prompts.

use crate::error::{Error, Result};
use crate::hub::{self, RepoKind};
use crate::model::parse_dtype;
use crate::model::videolisa::{LoadOptions, ModelPaths, VideoLisa, VideoLisaConfig};
use crate::output::OutputFormats;
use crate::segment::{segment, PromptSpec, SegmentOptions, SegmentSummary};
use crate::tokenizer::Template;
use crate::video::Video;
use candle_core::Device;
use std::path::{Path, PathBuf};

/// Everything `segment` needs from the command line.
#[derive(Debug, Clone)]
pub struct SegmentArgs {
    /// Input video.
    pub video: PathBuf,
    /// Sentences.
    pub prompts: Vec<String>,
    /// Output dir.
    pub out: PathBuf,
    /// VideoLISA dir or hub id.
    pub model: String,
    /// CLIP dir or hub id (default: the checkpoint's `vision_tower`).
    pub clip: Option<String>,
    /// Never touch the network.
    pub offline: bool,
    /// `--dtype` spec (`bf16`, `f32`, or `llm=bf16,clip=f32,sam=f32`).
    pub dtype: Option<String>,
    /// `cpu` or `cuda[:N]`.
    pub device: String,
    /// Template.
    pub template: Template,
    /// Output formats.
    pub formats: OutputFormats,
    /// Pipeline options (frames, batch, dump).
    pub sparse: usize,
    /// Dense frames.
    pub dense: usize,
    /// SAM batch.
    pub sam_batch: usize,
    /// Dump dir.
    pub dump: Option<PathBuf>,
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        _ if s == "cuda" || s.starts_with("cuda:") => {
            let n = s
                .strip_prefix("cuda:")
                .map_or(Ok(0), str::parse::<usize>)
                .map_err(|_| Error::Invalid(format!("--device {s}: expected cpu, cuda or cuda:N")))?;
            if !candle_core::utils::cuda_is_available() {
                return Err(Error::Invalid(
                    "--device cuda: this build has no CUDA support; rebuild with `--features cuda`".into(),
                ));
            }
            Ok(Device::new_cuda(n)?)
        }
        _ => Err(Error::Invalid(format!(
            "--device {s}: expected cpu, cuda or cuda:N"
        ))),
    }
}

/// Applies a `--dtype` spec to the defaults: one dtype for everything, or per component.
pub fn apply_dtype(spec: &str, o: &mut LoadOptions) -> Result<()> {
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, val) = part.split_once('=').unwrap_or(("all", part));
        let d = parse_dtype(val.trim()).ok_or_else(|| {
            Error::Invalid(format!("--dtype {spec}: unknown dtype {val:?} (bf16, f16, f32)"))
        })?;
        match key.trim() {
            "all" => {
                o.llm = d;
                o.clip = d;
                o.sam = d;
            }
            "llm" => o.llm = d,
            "clip" => o.clip = d,
            "sam" => o.sam = d,
            k => {
                return Err(Error::Invalid(format!(
                    "--dtype {spec}: unknown component {k:?} (llm, clip, sam)"
                )))
            }
        }
    }
    Ok(())
}

/// Resolves the checkpoint and the CLIP tower to local directories.
pub fn resolve_paths(model: &str, clip: Option<&str>, offline: bool) -> Result<ModelPaths> {
    let model_dir = hub::resolve(model, RepoKind::VideoLisa, offline)?;
    let clip_spec = match clip {
        Some(c) => c.to_string(),
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
    let clip_dir = hub::resolve(&clip_spec, RepoKind::Clip, offline)?;
    Ok(ModelPaths {
        model: model_dir,
        clip: clip_dir,
    })
}

/// Resolves, configures and loads VideoLISA (shared by `segment` and `eval`).
pub fn load_model(
    model: &str,
    clip: Option<&str>,
    offline: bool,
    dtype: Option<&str>,
    device: &str,
) -> Result<VideoLisa> {
    let device = parse_device(device)?;
    let mut options = LoadOptions::defaults(device);
    if let Some(d) = dtype {
        apply_dtype(d, &mut options)?;
    }
    let paths = resolve_paths(model, clip, offline)?;
    let spinner = crate::progress::bar(0, "loading VideoLISA");
    let model = VideoLisa::load(&paths, options)?;
    spinner.finish_and_clear();
    Ok(model)
}

/// Runs the command; returns the summary (also written to `<out>/summary.json`).
pub fn run(a: &SegmentArgs) -> Result<SegmentSummary> {
    if a.prompts.iter().any(|p| p.trim().is_empty()) {
        return Err(Error::Invalid("--prompt must not be empty".into()));
    }
    let video = Video::open(&a.video)?;
    let model = load_model(
        &a.model,
        a.clip.as_deref(),
        a.offline,
        a.dtype.as_deref(),
        &a.device,
    )?;
    let opts = SegmentOptions {
        n_sparse: a.sparse,
        n_dense: a.dense,
        formats: a.formats.clone(),
        sam_batch: a.sam_batch,
        dump: a.dump.clone(),
        keep_logits: false,
        write_summary: true,
    };
    Ok(segment(
        &model,
        &video,
        &PromptSpec::numbered(&a.prompts, a.template),
        Some(&a.out),
        &opts,
    )?
    .summary)
}

/// Human-readable summary.
pub fn render_text(s: &SegmentSummary, out: &Path) -> String {
    let mut t = format!(
        "{} frames of {} ({}x{}) on {}; sparse {:?}, dense {:?}\n",
        s.frames,
        s.video.path.display(),
        s.video.width,
        s.video.height,
        s.device,
        s.sparse,
        s.dense
    );
    for p in &s.prompts {
        t += &format!(
            "  {:?} → {} ({} tokens, foreground {:.1}%)\n",
            p.text,
            out.join(&p.dir).display(),
            p.seq_len,
            100.0 * p.foreground
        );
    }
    let c = &s.seconds;
    t += &format!(
        "seconds: decode {:.2}, preprocess {:.2}, clip {:.2}, llm {:.2}, sam encode {:.2}, sam decode {:.2}, write {:.2}, total {:.2}\n",
        c.decode, c.preprocess, c.clip, c.llm, c.sam_encode, c.sam_decode, c.write, c.total
    );
    t
}
