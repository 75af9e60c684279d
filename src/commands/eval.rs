//! `videolisa eval` and `videolisa score`: benchmark runs and scoring of any tool's predictions.

use crate::error::Result;
use crate::eval::datasets::{Dataset, DatasetKind};
use crate::eval::run::{eval, finish, EvalOptions, EvalSummary};
use crate::eval::score::{score, write_reports, Protocol, ScoreReport};
use std::path::Path;

/// Scores `pred` against a dataset split; writes reports to `out` when given.
pub fn run_score(
    kind: DatasetKind,
    root: &Path,
    split: &str,
    pred: &Path,
    protocol: Protocol,
    out: Option<&Path>,
) -> Result<ScoreReport> {
    let ds = Dataset::load(kind, root, split)?;
    if !pred.is_dir() {
        return Err(crate::Error::NotFound {
            path: pred.to_path_buf(),
        });
    }
    let r = score(&ds, pred, protocol, out)?;
    if let Some(o) = out {
        write_reports(&r, o)?;
    }
    Ok(r)
}

/// Runs (a shard of) a split with a loaded model.
pub fn run_eval(
    model: &crate::model::videolisa::VideoLisa,
    ds: &Dataset,
    out: &Path,
    opts: &EvalOptions,
) -> Result<EvalSummary> {
    std::fs::create_dir_all(out).map_err(|e| crate::Error::io(out, e))?;
    eval(model, ds, out, opts)
}

/// `--merge`: the shards are done; score or pack the submission.
pub fn run_merge(ds: &Dataset, out: &Path, protocol: Protocol) -> Result<EvalSummary> {
    let t = std::time::Instant::now();
    let (score, submission) = finish(ds, out, protocol)?;
    Ok(EvalSummary {
        videos: ds.videos.len(),
        ran: 0,
        resumed: ds.expression_count(),
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
