//! `videolisa eval`: run VideoLISA over a benchmark split, write predictions in the layout the
//! official scorers and servers expect, resume finished expressions, split the work into shards,
//! and score where ground truth exists.

use super::datasets::{Dataset, DatasetKind, Expression, VideoEntry};
use super::score::{score, write_reports, Protocol, ScoreOptions, ScoreReport};
use crate::error::{Error, Result};
use crate::model::videolisa::VideoLisa;
use crate::output::{write_atomic, OutputFormats};
use crate::run_manifest::{
    clear_item, input_fingerprint, item_fingerprint, item_state, mark_done, settings_fingerprint, ItemState,
};
use crate::segment::{segment, PromptSpec, SegmentOptions};
use crate::shard::Shard;
use crate::video::Video;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What defines a video's predictions beyond each expression: its name, its frames (names,
/// sizes and modification times, stat'ed once per video) and the run settings (`settings`,
/// [`settings_fingerprint`] of the output folder). Done markers carry it, so an edited dataset,
/// a frame changed in place, or other run settings are never taken as finished.
fn video_key(v: &VideoEntry, settings: &str) -> String {
    let frames: Vec<&Path> = v.frame_paths.iter().map(PathBuf::as_path).collect();
    item_fingerprint(&serde_json::json!({
        "video": v.name, "frames": v.frames, "input": input_fingerprint(&frames), "settings": settings,
    }))
}

/// What defines an expression's predictions: its video's key and its own text and template.
fn expression_fingerprint(video_key: &str, e: &Expression) -> String {
    item_fingerprint(&serde_json::json!({"video": video_key, "text": e.text, "template": e.template}))
}

/// Whether an expression's predictions are complete for its video as keyed by [`video_key`].
fn is_done(out: &Path, video_key: &str, e: &Expression) -> bool {
    matches!(
        item_state(&out.join(&e.out_dir), &expression_fingerprint(video_key, e)),
        ItemState::Done(_)
    )
}

/// What `eval` does.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The videos this run handles (every n-th video starting at i).
    pub shard: Shard,
    /// Scoring protocol (Ref-DAVIS).
    pub protocol: Protocol,
    /// Pipeline options (frames, batch, XMem++ for post-optimization).
    pub segment: SegmentOptions,
}

/// What an `eval` run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalSummary {
    /// Videos in this shard.
    pub videos: usize,
    /// Expressions run now.
    pub ran: usize,
    /// Expressions skipped because their outputs were complete.
    pub resumed: usize,
    /// When the results were resumed: the Unix time the run that began them started (same
    /// settings, checked against its run manifest).
    pub resumed_run: Option<u64>,
    /// Seconds.
    pub seconds: f64,
    /// Scores, when this run covered the whole split and it has ground truth.
    pub score: Option<ScoreReport>,
    /// Submission zip written (server-scored splits).
    pub submission: Option<PathBuf>,
}

/// Whether the dataset split is scored locally.
pub fn has_ground_truth(ds: &Dataset) -> bool {
    ds.videos
        .iter()
        .flat_map(|v| &v.expressions)
        .any(|e| !matches!(e.gt, super::datasets::GroundTruth::None))
}

fn run_video(
    model: &VideoLisa,
    v: &VideoEntry,
    out: &Path,
    opts: &SegmentOptions,
    settings: &str,
) -> Result<(usize, usize)> {
    let key = video_key(v, settings);
    let todo: Vec<_> = v.expressions.iter().filter(|e| !is_done(out, &key, e)).collect();
    let resumed = v.expressions.len() - todo.len();
    if todo.is_empty() {
        return Ok((0, resumed));
    }
    for e in &todo {
        clear_item(&out.join(&e.out_dir))?; // partial or stale outputs
    }
    let video = Video::from_files(&out.join(&v.name), v.frame_paths.clone())?;
    let specs: Vec<PromptSpec> = todo
        .iter()
        .map(|e| PromptSpec {
            text: e.text.clone(),
            template: e.template,
            dir: e.out_dir.clone(),
        })
        .collect();
    // the frame files are `<frame>.jpg`, so the output names are the dataset's frame names
    let opts = SegmentOptions {
        write_summary: false,
        ..opts.clone()
    };
    let r = segment(model, &video, &specs, Some(out), &opts)?;
    // one summary per video (shards may run at the same time on one --out)
    crate::json::write_json(
        &out.join(".summaries").join(format!("{}.json", v.name)),
        &r.summary,
    )?;
    for (e, p) in todo.iter().zip(&r.summary.prompts) {
        let record = serde_json::json!({"frames": r.summary.frames, "foreground": p.foreground});
        mark_done(&out.join(&e.out_dir), &expression_fingerprint(&key, e), &record)?;
    }
    Ok((todo.len(), resumed))
}

/// Runs (this shard of) the split, then scores or packs a submission when the run covers it all.
pub fn eval(model: &VideoLisa, ds: &Dataset, out: &Path, opts: &EvalOptions) -> Result<EvalSummary> {
    let t0 = Instant::now();
    let videos = ds.shard(opts.shard);
    let settings = settings_fingerprint(out)?;
    let mut seg = opts.segment.clone();
    seg.formats = OutputFormats {
        mask_value: 255,
        ..OutputFormats::default()
    };
    let bar = crate::progress::bar(videos.len() as u64, "videos");
    let (mut ran, mut resumed) = (0, 0);
    for v in &videos {
        let (r, s) = run_video(model, v, out, &seg, &settings)?;
        ran += r;
        resumed += s;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let (score, submission) = if opts.shard.is_whole() {
        finish(ds, out, opts.protocol)?
    } else {
        (None, None)
    };
    Ok(EvalSummary {
        videos: videos.len(),
        ran,
        resumed,
        resumed_run: None,
        seconds: t0.elapsed().as_secs_f64(),
        score,
        submission,
    })
}

/// After all shards: score (writing reports to `<out>/scores`) or write the submission zip.
pub fn finish(
    ds: &Dataset,
    out: &Path,
    protocol: Protocol,
) -> Result<(Option<ScoreReport>, Option<PathBuf>)> {
    let settings = settings_fingerprint(out)?;
    let missing: Vec<String> = ds
        .videos
        .iter()
        .flat_map(|v| {
            let key = video_key(v, &settings);
            v.expressions
                .iter()
                .filter(move |e| !is_done(out, &key, e))
                .map(|e| e.out_dir.clone())
                .collect::<Vec<_>>()
        })
        .take(5)
        .collect();
    if !missing.is_empty() {
        return Err(Error::Usage(format!(
            "{}: not every expression is finished (e.g. {}); run the remaining shards first",
            out.display(),
            missing.join(", ")
        )));
    }
    if has_ground_truth(ds) {
        let options = ScoreOptions {
            protocol,
            ..ScoreOptions::default()
        };
        let r = score(ds, out, &options, Some(&out.join("scores")))?;
        write_reports(&r, &out.join("scores"))?;
        Ok((Some(r), None))
    } else {
        Ok((None, Some(write_submission(ds, out)?)))
    }
}

/// The server zip: Ref-YouTube-VOS `Annotations/<video>/<exp_id>/<frame>.png`; MeViS the video
/// folders at the zip root.
pub fn write_submission(ds: &Dataset, out: &Path) -> Result<PathBuf> {
    let path = out.join("submission.zip");
    let prefix = match ds.kind {
        DatasetKind::RefYtvos => "Annotations/",
        _ => "",
    };
    write_atomic(&path, |w| {
        // PNGs are compressed already: store them
        let mut zip = zip::ZipWriter::new(w);
        let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for v in &ds.videos {
            for e in &v.expressions {
                for f in &v.frames {
                    let src = out.join(&e.out_dir).join(format!("{f}.png"));
                    let bytes = std::fs::read(&src).map_err(|er| Error::io(&src, er))?;
                    zip.start_file(format!("{prefix}{}/{f}.png", e.out_dir), o)
                        .map_err(|er| Error::Runtime(format!("zip: {er}")))?;
                    zip.write_all(&bytes).map_err(|er| Error::io(&path, er))?;
                }
            }
        }
        zip.finish().map_err(|er| Error::Runtime(format!("zip: {er}")))?;
        Ok(())
    })?;
    Ok(path)
}
