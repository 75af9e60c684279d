//! `videolisa eval` and `videolisa score`: benchmark runs and scoring of any tool's predictions.
//! `eval` checks the split (frame files, names, prompts) and the output folder's run manifest
//! before the model loads, so a run either resumes exactly the computation it finds or stops
//! at once saying why.

use crate::error::{Error, Result};
use crate::eval::datasets::{Dataset, DatasetKind};
use crate::eval::run::{eval, finish, EvalOptions, EvalSummary};
use crate::eval::score::{score, write_reports, Protocol, ScoreOptions, ScoreReport};
use crate::load::XMemSpec;
use crate::load::{load_resolved, LoadSpec};
use crate::model::videolisa::VideoLisa;
use crate::model::xmem::XMem;
use crate::run_manifest::{
    add_propagation, model_settings, prepare_resume, Resume, RunManifest, MANIFEST_FILE,
};
use crate::sampling::Sampling;
use crate::tokenizer::check_instruction;
use std::path::Path;

/// Scores `pred` against a dataset split; writes reports to `out` when given.
pub fn run_score(
    kind: DatasetKind,
    root: &Path,
    split: &str,
    pred: &Path,
    options: &ScoreOptions,
    out: Option<&Path>,
) -> Result<ScoreReport> {
    let ds = Dataset::load(kind, root, split)?;
    if !pred.is_dir() {
        return Err(crate::Error::NotFound {
            path: pred.to_path_buf(),
        });
    }
    let r = score(&ds, pred, options, out)?;
    if let Some(o) = out {
        write_reports(&r, o)?;
    }
    Ok(r)
}

/// Top-level names an `eval` run writes under its output folder (what `--fresh` removes).
fn owned_entries(ds: &Dataset) -> Vec<String> {
    let mut names: Vec<String> = ds
        .videos
        .iter()
        .flat_map(|v| &v.expressions)
        .filter_map(|e| e.out_dir.split('/').next().map(str::to_string))
        .collect();
    names.extend([".summaries", "scores", "submission.zip"].map(String::from));
    names.sort();
    names.dedup();
    names
}

/// Everything cheap about the shard: frame files present, prompts free of typed special tokens,
/// sampling sane.
fn check_shard(ds: &Dataset, opts: &EvalOptions) -> Result<()> {
    let (i, n) = opts.shard.unwrap_or((0, 1));
    let videos = ds.shard(i, n);
    Dataset::check_frames(&videos)?;
    for e in videos.iter().flat_map(|v| &v.expressions) {
        check_instruction(&e.template.instruction(&e.text))
            .map_err(|er| Error::Invalid(format!("{}: {er}", e.out_dir)))?;
    }
    Sampling::check(opts.segment.n_sparse, opts.segment.n_dense)
}

/// Every expression of the shard fits the model's context (tokenized once, before any frame).
fn check_sequences(model: &VideoLisa, ds: &Dataset, opts: &EvalOptions) -> Result<()> {
    let (i, n) = opts.shard.unwrap_or((0, 1));
    let n_visual = model.visual_token_count(opts.segment.n_sparse, opts.segment.n_dense);
    for e in ds.shard(i, n).iter().flat_map(|v| &v.expressions) {
        let ids = model.input_ids(&e.template.instruction(&e.text))?;
        model
            .check_sequence(&ids, n_visual)
            .map_err(|er| Error::Invalid(format!("{}: {er}", e.out_dir)))?;
    }
    Ok(())
}

/// Runs (a shard of) a split: checks, output-folder manifest, model load, inference, scoring.
pub fn run_eval(
    ds: &Dataset,
    out: &Path,
    load: &LoadSpec,
    opts: &EvalOptions,
    fresh: bool,
) -> Result<EvalSummary> {
    check_shard(ds, opts)?;
    let options = load.options()?;
    let paths = load.resolve()?;
    let (mut settings, mut info) =
        model_settings(&paths, &options, opts.segment.n_sparse, opts.segment.n_dense)?;
    settings.insert("dataset".into(), format!("{} {}", ds.kind.name(), ds.split));
    info.insert("root".into(), ds.root.display().to_string());
    let xmem_path = opts.xmem.as_ref().map(XMemSpec::resolve).transpose()?;
    if let Some(x) = &xmem_path {
        add_propagation(&mut settings, &mut info, x)?;
    }
    let mut manifest = RunManifest::new("eval", settings, info);
    manifest.entries = owned_entries(ds);
    let resume = prepare_resume(out, &manifest, fresh, &manifest.entries)?;
    let model = load_resolved(&paths, options)?;
    check_sequences(&model, ds, opts)?;
    let mut opts = opts.clone();
    if let Some(x) = &xmem_path {
        opts.segment.propagate = Some(std::sync::Arc::new(XMem::open(x, &model.options.device)?));
    }
    let mut summary = eval(&model, ds, out, &opts)?;
    summary.resumed_run = match resume {
        Resume::Continue(prev) => Some(prev.started),
        _ => None,
    };
    if summary.score.is_some() || summary.submission.is_some() {
        let mut m = RunManifest::read(out)?.unwrap_or(manifest);
        m.finish(out)?;
    }
    Ok(summary)
}

/// `--merge`: the shards are done; score or pack the submission.
pub fn run_merge(ds: &Dataset, out: &Path, protocol: Protocol) -> Result<EvalSummary> {
    let t = std::time::Instant::now();
    let mut manifest = RunManifest::read(out)?.ok_or_else(|| {
        Error::Invalid(format!(
            "{}: no {MANIFEST_FILE}: not the output folder of a videolisa eval run (score another tool's \
             predictions with `videolisa score`)",
            out.display()
        ))
    })?;
    let (score, submission) = finish(ds, out, protocol)?;
    manifest.finish(out)?;
    Ok(EvalSummary {
        videos: ds.videos.len(),
        ran: 0,
        resumed: ds.expression_count(),
        resumed_run: Some(manifest.started),
        seconds: t.elapsed().as_secs_f64(),
        score,
        submission,
    })
}

/// One line for the terminal.
pub fn render_score(r: &ScoreReport) -> String {
    let mut keys: Vec<_> = r.counts.iter().collect();
    keys.sort();
    format!(
        "{:?} {} ({:?}): J&F {:.2}  J {:.2}  F {:.2}  [{}]\n",
        r.dataset,
        r.split,
        r.protocol,
        100.0 * r.jf,
        100.0 * r.j,
        100.0 * r.f,
        keys.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}
