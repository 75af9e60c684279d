//! `videolisa eval` and `videolisa score`: benchmark runs and scoring of any tool's predictions.
//! `eval` checks the split (frame files, names, prompts) and the output folder's run manifest
//! before the model loads, so a run either resumes exactly the computation it finds or stops
//! at once saying why.

use super::{print_json, ModelArgs, PropagationArgs};
use crate::error::{Error, Result};
use crate::eval::datasets::{Dataset, DatasetKind};
use crate::eval::run::{eval, finish, EvalOptions, EvalSummary};
use crate::eval::score::{score, write_reports, MissingExpression, Protocol, ScoreOptions, ScoreReport};
use crate::load::XMemSpec;
use crate::lock::FolderLock;
use crate::model::videolisa::VideoLisa;
use crate::run_manifest::{ensure_writable, prepare_resume, Resume, RunManifest, MANIFEST_FILE};
use crate::sampling::Sampling;
use crate::segment::SegmentOptions;
use crate::setup::RunSetup;
use crate::shard::Shard;
use crate::tokenizer::check_instruction;
use clap::Args;
use std::path::{Path, PathBuf};

/// Which benchmark split (shared by `eval` and `score`).
#[derive(Args, Debug, Clone)]
pub struct DatasetArgs {
    /// Benchmark.
    #[arg(long, value_enum)]
    pub dataset: DatasetKind,
    /// Dataset root.
    #[arg(long)]
    pub root: PathBuf,
    /// Split (`valid` for Ref-YouTube-VOS / Ref-DAVIS, `valid_u` or `valid` for MeViS; ignored for ReasonVOS).
    #[arg(long, default_value = "valid")]
    pub split: String,
}

impl DatasetArgs {
    /// Reads and checks the split.
    pub fn load(&self) -> Result<Dataset> {
        Dataset::load(self.dataset, &self.root, &self.split)
    }
}

/// Run a benchmark split: predictions in the official layout, scores where ground truth exists.
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// The benchmark split.
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Output folder (predictions, scores/, submission.zip).
    #[arg(long)]
    pub out: PathBuf,
    /// Run only shard i of n (`--shard 3/8`): every n-th video.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Do not run the model: combine the finished shards under --out and score them (the
    /// shards' other options may be given; they are not used).
    #[arg(long, conflicts_with_all = ["fresh", "shard"])]
    pub merge: bool,
    /// Discard results in --out made with other settings (or without a run manifest) and
    /// start over; without it such a folder is refused and matching results are resumed.
    #[arg(long)]
    pub fresh: bool,
    /// Ref-DAVIS protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Default)]
    pub protocol: Protocol,
    /// XMem++ post-optimization.
    #[command(flatten)]
    pub propagation: PropagationArgs,
    /// Which weights, how they run, how frames are sampled.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl EvalArgs {
    /// Runs (or with `--merge` combines) the split and prints what was done and the scores.
    pub fn run(&self) -> Result<()> {
        let xmem = self.propagation.spec(self.model.offline)?;
        let ds = self.dataset.load()?;
        let summary = if self.merge {
            run_merge(&ds, &self.out, self.protocol)?
        } else {
            self.run_eval(&ds, xmem)?
        };
        if self.json {
            return print_json(&summary);
        }
        let resumed = match summary.resumed_run {
            Some(_) if summary.resumed > 0 => " (same settings, checked against the run manifest)",
            _ => "",
        };
        println!(
            "{} videos, {} expressions run, {} already done{resumed}, {:.1} s",
            summary.videos, summary.ran, summary.resumed, summary.seconds
        );
        if let Some(r) = &summary.score {
            print!("{}", render_score(r));
            println!("reports: {}", self.out.join("scores").display());
        }
        if let Some(z) = &summary.submission {
            println!("no local ground truth: upload {}", z.display());
        }
        Ok(())
    }

    /// Runs (a shard of) a split: checks, output-folder manifest, model load, inference,
    /// scoring.
    fn run_eval(&self, ds: &Dataset, xmem: Option<XMemSpec>) -> Result<EvalSummary> {
        let mut opts = EvalOptions {
            shard: self.shard.unwrap_or_default(),
            protocol: self.protocol,
            segment: self.model.segment_options(),
        };
        check_shard(ds, &opts)?;
        ensure_writable(&self.out)?;
        let _lock = FolderLock::acquire(&self.out, "eval", opts.shard)?;
        let (sparse, dense) = (self.model.sparse, self.model.dense);
        let mut setup = RunSetup::new("eval", &self.model.load_spec(), xmem.as_ref(), sparse, dense)?;
        let m = &mut setup.manifest;
        m.settings
            .insert("dataset".into(), format!("{} {}", ds.kind.name(), ds.split));
        m.info.insert("root".into(), ds.root.display().to_string());
        m.entries = owned_entries(ds);
        let resume = prepare_resume(&self.out, m, self.fresh, &m.entries)?;
        let models = setup.load()?;
        check_sequences(&models.videolisa, ds, &opts)?;
        opts.segment = SegmentOptions {
            propagate: models.xmem,
            ..opts.segment
        };
        let mut summary = eval(&models.videolisa, ds, &self.out, &opts)?;
        summary.resumed_run = match resume {
            Resume::Continue(prev) => Some(prev.started),
            _ => None,
        };
        if summary.score.is_some() || summary.submission.is_some() {
            let mut m = RunManifest::read(&self.out)?.unwrap_or(setup.manifest);
            m.finish(&self.out)?;
        }
        Ok(summary)
    }
}

/// Score predictions from any tool against a benchmark split.
#[derive(Args, Debug, Clone)]
pub struct ScoreArgs {
    /// The benchmark split.
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Prediction root (`<video>/<exp_id>/<frame>.png`).
    #[arg(long)]
    pub pred: PathBuf,
    /// Ref-DAVIS protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Default)]
    pub protocol: Protocol,
    /// MeViS: an expression folder missing from a present video is an `error`, or `drop`ped
    /// from the mean as the official eval_mevis.py does.
    #[arg(long, value_enum, default_value_t = MissingExpression::Error)]
    pub missing_expression: MissingExpression,
    /// Write results.json, per_item.csv, per_video.csv, report.md here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the full report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl ScoreArgs {
    /// Scores `--pred` and prints the report; writes the report files to `--out` when given.
    pub fn run(&self) -> Result<()> {
        let ds = self.dataset.load()?;
        if !self.pred.is_dir() {
            return Err(Error::NotFound {
                path: self.pred.clone(),
            });
        }
        let options = ScoreOptions {
            protocol: self.protocol,
            missing_expression: self.missing_expression,
        };
        let r = score(&ds, &self.pred, &options, self.out.as_deref())?;
        if let Some(o) = &self.out {
            write_reports(&r, o)?;
        }
        if self.json {
            return print_json(&r);
        }
        print!("{}", render_score(&r));
        println!("missing predictions: {}", r.missing_policy);
        Ok(())
    }
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
    let videos = ds.shard(opts.shard);
    Dataset::check_frames(&videos)?;
    for e in videos.iter().flat_map(|v| &v.expressions) {
        check_instruction(&e.template.instruction(&e.text))
            .map_err(|er| Error::Dataset(format!("{}: {er}", e.out_dir)))?;
    }
    Sampling::check(opts.segment.n_sparse, opts.segment.n_dense)
}

/// Every expression of the shard fits the model's context (tokenized once, before any frame).
fn check_sequences(model: &VideoLisa, ds: &Dataset, opts: &EvalOptions) -> Result<()> {
    let n_visual = model.visual_token_count(opts.segment.n_sparse, opts.segment.n_dense);
    for e in ds.shard(opts.shard).iter().flat_map(|v| &v.expressions) {
        let ids = model.input_ids(&e.template.instruction(&e.text))?;
        model
            .check_sequence(&ids, n_visual)
            .map_err(|er| Error::Usage(format!("{}: {er}", e.out_dir)))?;
    }
    Ok(())
}

/// `--merge`: the shards are done; score or pack the submission.
pub fn run_merge(ds: &Dataset, out: &Path, protocol: Protocol) -> Result<EvalSummary> {
    let t = std::time::Instant::now();
    let mut manifest = RunManifest::read(out)?.ok_or_else(|| {
        Error::Usage(format!(
            "{}: no {MANIFEST_FILE}: not the output folder of a videolisa eval run (score another tool's \
             predictions with `videolisa score`)",
            out.display()
        ))
    })?;
    let _lock = FolderLock::acquire(out, "eval --merge", Shard::WHOLE)?;
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
    format!(
        "{:?} {} ({:?}): J&F {:.2}  J {:.2}  F {:.2}  [{}]\n",
        r.dataset,
        r.split,
        r.protocol,
        100.0 * r.jf,
        100.0 * r.j,
        100.0 * r.f,
        r.counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}
