//! `videolisa segment`: checks everything cheap (options, prompts, the video, the output
//! folder), loads VideoLISA, and segments one video for one or more prompts into an output
//! folder that holds exactly this run's results, with its run manifest.

use crate::error::{Error, Result};
use crate::load::{LoadSpec, XMemSpec};
use crate::model::videolisa::VideoLisa;
use crate::output::OutputFormats;
use crate::run_manifest::{
    add_propagation, ensure_writable, model_settings, prepare_replace, RunManifest, MANIFEST_FILE,
};
use crate::sampling::Sampling;
use crate::segment::{segment, PromptSpec, SegmentOptions, SegmentSummary};
use crate::tokenizer::{check_instruction, Template};
use crate::video::Video;
use std::path::{Path, PathBuf};

/// Everything `segment` needs from the command line.
#[derive(Debug, Clone)]
pub struct SegmentArgs {
    /// Input video.
    pub video: PathBuf,
    /// Sentences.
    pub prompts: Vec<String>,
    /// Output folder.
    pub out: PathBuf,
    /// Write into a folder that holds other files (this run's own entries are replaced).
    pub force: bool,
    /// Which model, dtypes, device.
    pub load: LoadSpec,
    /// Template.
    pub template: Template,
    /// Output formats (a requested overlay video takes the input's frame rate).
    pub formats: OutputFormats,
    /// Sparse frames.
    pub sparse: usize,
    /// Dense frames.
    pub dense: usize,
    /// Frames per SAM batch (`None`: chosen from free GPU memory).
    pub sam_batch: Option<usize>,
    /// Dump dir.
    pub dump: Option<PathBuf>,
    /// Post-optimization with these XMem++ weights (`--propagate --xmem`).
    pub propagate: Option<XMemSpec>,
}

/// The run manifest of a `segment` run: what decides its masks, and the entries it writes.
fn manifest(
    a: &SegmentArgs,
    model: &VideoLisa,
    prompts: &[PromptSpec],
    xmem: Option<&Path>,
) -> Result<RunManifest> {
    let (mut settings, mut info) = model_settings(&model.paths, &model.options, a.sparse, a.dense)?;
    if let Some(x) = xmem {
        add_propagation(&mut settings, &mut info, x)?;
    }
    settings.insert("template".into(), format!("{:?}", a.template).to_lowercase());
    settings.insert("mask_value".into(), a.formats.mask_value.to_string());
    info.insert("video".into(), a.video.display().to_string());
    for (k, p) in prompts.iter().enumerate() {
        info.insert(format!("prompt_{k}"), p.text.clone());
    }
    let mut m = RunManifest::new("segment", settings, info);
    m.entries = prompts.iter().map(|p| p.dir.clone()).collect();
    m.entries.push("summary.json".into());
    Ok(m)
}

/// Refuses, before the model loads, an output folder that holds something other than an earlier
/// `segment` run (unless `force`), and proves it writable.
fn check_output_folder(out: &Path, force: bool) -> Result<()> {
    ensure_writable(out)?;
    if force {
        return Ok(());
    }
    match RunManifest::read(out)? {
        Some(m) if m.command == "segment" => Ok(()),
        Some(m) => Err(Error::Invalid(format!(
            "{}: the output folder holds a videolisa `{}` run; choose another --out (or pass --force)",
            out.display(),
            m.command
        ))),
        None => {
            let foreign = std::fs::read_dir(out)
                .map_err(|e| Error::io(out, e))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n != MANIFEST_FILE);
            match foreign {
                None => Ok(()),
                Some(name) => Err(Error::Invalid(format!(
                    "{}: the output folder is not empty (it holds `{name}`) and is not an earlier videolisa \
                     segment run; choose a new or empty folder, or pass --force to write into it (prompt_*/ \
                     and summary.json are replaced, other files are left alone)",
                    out.display()
                ))),
            }
        }
    }
}

/// Runs the command; returns the summary (also written to `<out>/summary.json`).
pub fn run(a: &SegmentArgs) -> Result<SegmentSummary> {
    if a.prompts.iter().any(|p| p.trim().is_empty()) {
        return Err(Error::Invalid("--prompt must not be empty".into()));
    }
    let prompts = PromptSpec::numbered(&a.prompts, a.template);
    for p in &prompts {
        check_instruction(&p.template.instruction(&p.text))?;
    }
    Sampling::check(a.sparse, a.dense)?;
    let video = Video::open(&a.video)?;
    check_output_folder(&a.out, a.force)?;
    let xmem_path = a.propagate.as_ref().map(XMemSpec::resolve).transpose()?;
    let model = a.load.load()?;
    let xmem = xmem_path
        .as_deref()
        .map(|p| crate::model::xmem::XMem::open(p, &model.options.device).map(std::sync::Arc::new))
        .transpose()?;
    let mut manifest = manifest(a, &model, &prompts, xmem_path.as_deref())?;
    prepare_replace(&a.out, &mut manifest, a.force)?;
    let mut formats = a.formats.clone();
    if formats.overlay_mp4.is_some() {
        formats.overlay_mp4 = Some(video.info().fps.filter(|f| *f > 0.0).unwrap_or(10.0));
    }
    let opts = SegmentOptions {
        n_sparse: a.sparse,
        n_dense: a.dense,
        formats,
        sam_batch: a.sam_batch,
        dump: a.dump.clone(),
        keep_logits: false,
        write_summary: true,
        propagate: xmem,
    };
    let summary = segment(&model, &video, &prompts, Some(&a.out), &opts)?.summary;
    manifest.finish(&a.out)?;
    Ok(summary)
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
    let xmem = c.xmem.map(|x| format!(", xmem++ {x:.2}")).unwrap_or_default();
    t += &format!(
        "seconds: decode {:.2}, preprocess {:.2}, clip {:.2}, llm {:.2}, sam encode {:.2}, sam decode {:.2}{xmem}, write {:.2}, total {:.2}\n",
        c.decode, c.preprocess, c.clip, c.llm, c.sam_encode, c.sam_decode, c.write, c.total
    );
    t
}
