//! A `--propagate` rerun that reuses the folder's prompt stage ([`super::cache`]): SAM's seed
//! masks and the user's corrections go into XMem++'s permanent memory and one XMem++ pass
//! writes every frame; CLIP, the LLM and SAM do not run (VideoLISA is not even loaded).

use super::cache::PromptStageCache;
use super::prompt::PromptSpec;
use super::sink::MaskSink;
use super::stage::StageSeconds;
use super::summary::SegmentSummary;
use super::xmem::{run_pass, Pass, Seeds};
use crate::error::{Error, Result};
use crate::model::xmem::run_on_video::RunOnVideo;
use crate::model::xmem::XMem;
use crate::output::OutputFormats;
use crate::video::FrameSource;
use image::{GrayImage, RgbImage};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Propagates the cached seeds plus `annotations` (per prompt, frame → 0/255 mask) through
/// `video` into `out` with `formats`; writes `summary.json` (the computing run's, with this
/// pass's masks, XMem++ report and seconds, and `prompt_stage` saying it was reused) and the
/// cache again. `prompts` must be the cached run's.
pub fn rerun(
    xmem: &XMem,
    video: &dyn FrameSource,
    cache: PromptStageCache,
    annotations: &[BTreeMap<usize, GrayImage>],
    prompts: &[PromptSpec],
    out: &Path,
    formats: &OutputFormats,
) -> Result<SegmentSummary> {
    let t0 = Instant::now();
    if cache.seeds.len() != prompts.len() {
        return Err(Error::Internal(
            "the prompt-stage cache holds other prompts".into(),
        ));
    }
    let mut sec = StageSeconds::default();
    let mut seeds = Seeds::of(cache.seed_frames.clone(), cache.seeds.clone());
    seeds.annotate(annotations, video, &mut sec)?;
    let dirs: Vec<&str> = prompts.iter().map(|p| p.dir.as_str()).collect();
    let info = video.info().clone();
    let mut sink = MaskSink::new(Some(out), &dirs, &info, formats, false)?;
    let pass = Pass {
        video,
        keep_frames: formats.needs_frames(),
        dump: None,
    };
    let texts: Vec<String> = prompts.iter().map(|p| p.text.clone()).collect();
    let mut nothing = |_: &mut RunOnVideo<'_>, _: usize, _: &RgbImage, _: &mut StageSeconds| Ok(());
    let propagation = run_pass(xmem, &pass, seeds, &texts, &mut sink, &mut sec, &mut nothing)?;
    let t = Instant::now();
    let totals = sink.finish()?;
    sec.write += t.elapsed().as_secs_f64();
    let mut summary = cache.summary.clone();
    let plane_total = (u64::from(info.width) * u64::from(info.height) * info.frames as u64).max(1) as f64;
    for (p, fg) in summary.prompts.iter_mut().zip(&totals.foreground) {
        p.foreground = *fg as f64 / plane_total;
    }
    summary.video = info;
    summary.warnings = totals.warnings;
    summary.propagation = Some(propagation);
    summary.prompt_stage = Some(
        "reused: CLIP, the LLM and SAM's seed masks from the earlier run in this folder (only the \
         corrections changed)"
            .into(),
    );
    sec.total = t0.elapsed().as_secs_f64();
    summary.seconds = sec;
    crate::json::write_json(&out.join("summary.json"), &summary)?;
    cache.write(out)?;
    Ok(summary)
}
