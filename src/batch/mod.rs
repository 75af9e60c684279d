//! `videolisa batch`: many videos, each with its sentences, through one loaded model. Jobs come
//! from a manifest, a folder or stdin ([`jobs`]); each writes what `segment` writes under
//! `<out>/<id>/`, and one line of `results.jsonl`. While one video is on the model, the next
//! one's sampled frames are decoded and preprocessed on another thread. Finished jobs are
//! recognised by the same done markers and run manifest as `eval`, so a rerun resumes, and
//! shards can share one output folder.

pub mod jobs;

use crate::error::{Error, Result};
use crate::model::videolisa::VideoLisa;
use crate::output::{overlay_fps, OutputFormats};
use crate::run_manifest::{
    clear_item, entry_holding, input_fingerprint, is_item_folder, item_fingerprint, item_state, mark_done,
    mark_started, path_key, ItemState,
};
use crate::segment::annotation::read_annotations;
use crate::segment::{segment_prepared, PromptSpec, SegmentOptions, SparseInputs, StageSeconds};
use crate::video::Video;
pub use jobs::{
    check_job, duplicate_ids, parse_json_line, read_folder, read_manifest, Job, JobDefaults, Problem,
};
use serde::Serialize;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The results file under `--out`: one JSON line per finished (or failed) job.
pub const RESULTS_FILE: &str = "results.jsonl";

/// What happened to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Computed now.
    Done,
    /// Finished by an earlier run with the same job and settings; not recomputed.
    Resumed,
    /// Failed (the error says why); its partial outputs were removed.
    Failed,
    /// Refused before running (bad row, unreadable video).
    Invalid,
}

/// One line of `results.jsonl` (and of `--json` output).
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    /// The job's id (its folder under `--out`; empty for a row that is not a job).
    pub id: String,
    /// Where the job came from (`jobs.csv row 4`, `stdin line 2`, a file name).
    pub origin: String,
    /// The video.
    pub video: PathBuf,
    /// The sentences.
    pub prompts: Vec<String>,
    /// Done, resumed, failed or invalid.
    pub status: JobStatus,
    /// Frames segmented.
    pub frames: usize,
    /// Fraction of foreground pixels per prompt.
    pub foreground: Vec<f64>,
    /// Seconds per stage.
    pub seconds: StageSeconds,
    /// The output folder.
    pub out: PathBuf,
    /// Why the job failed.
    pub error: Option<String>,
}

impl JobResult {
    fn new(job: &Job, out: &Path, status: JobStatus) -> Self {
        JobResult {
            id: job.id.clone(),
            origin: job.origin.clone(),
            video: job.video.clone(),
            prompts: job.prompts.clone(),
            status,
            frames: 0,
            foreground: Vec::new(),
            seconds: StageSeconds::default(),
            out: out.join(&job.id),
            error: None,
        }
    }

    /// The result of a job refused before running.
    pub fn invalid(job: &Job, out: &Path, problem: &Problem) -> Self {
        JobResult {
            error: Some(problem.what.clone()),
            ..Self::new(job, out, JobStatus::Invalid)
        }
    }
}

/// How a batch runs.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Stop at the first failed job.
    pub fail_fast: bool,
    /// Read the next job's frames while the current one runs (off only to measure the gain).
    pub prefetch: bool,
    /// Sampling and SAM batch (formats come from each job).
    pub segment: SegmentOptions,
    /// The run settings' fingerprint ([`crate::run_manifest::settings_fingerprint`]), part of
    /// every done marker.
    pub settings: String,
}

/// Counts over a batch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchSummary {
    /// Jobs in this shard.
    pub jobs: usize,
    /// Computed now.
    pub done: usize,
    /// Finished earlier.
    pub resumed: usize,
    /// Failed.
    pub failed: usize,
    /// Refused before running.
    pub invalid: usize,
    /// Wall time.
    pub seconds: f64,
}

impl BatchSummary {
    /// Adds the counts of `later`, a run of the remaining jobs; its wall time is the batch's.
    pub fn merge(&mut self, later: &BatchSummary) {
        self.jobs += later.jobs;
        self.done += later.done;
        self.resumed += later.resumed;
        self.failed += later.failed;
        self.invalid += later.invalid;
        self.seconds = later.seconds;
    }

    /// Counts one result.
    pub fn add(&mut self, r: &JobResult) {
        self.jobs += 1;
        match r.status {
            JobStatus::Done => self.done += 1,
            JobStatus::Resumed => self.resumed += 1,
            JobStatus::Failed => self.failed += 1,
            JobStatus::Invalid => self.invalid += 1,
        }
    }
}

/// What defines a job's outputs (its done marker holds it): a changed prompt or option, a
/// changed video file or frame (size or modification time), or other run settings (`settings`,
/// the run manifest's fingerprint) make the job run again.
pub fn job_fingerprint(job: &Job, settings: &str) -> String {
    let mut defining = serde_json::json!({
        "video": path_key(&job.video), "input": input_fingerprint(&[&job.video]), "settings": settings,
        "prompts": job.prompts, "template": job.template, "mask_value": job.mask_value,
        "overlay": job.overlay, "rle": job.rle,
    });
    if !job.annotate.is_empty() {
        let given: Vec<_> = job
            .annotate
            .iter()
            .map(|a| (a.prompt, &a.frame, input_fingerprint(&[&a.mask])))
            .collect();
        defining["annotate"] = serde_json::json!(given);
    }
    item_fingerprint(&defining)
}

/// Whether `job` may write its folder under `out`: the folder is absent or videolisa's (else
/// it is the user's, kept unless `force`), and the video does not lie inside a folder this run
/// replaces (`ids`: every job id of the run).
pub fn check_place(job: &Job, out: &Path, force: bool, ids: &[&str]) -> std::result::Result<(), Problem> {
    let bad = |what: String| Problem {
        origin: job.origin.clone(),
        what,
    };
    let dir = out.join(&job.id);
    if !force && !is_item_folder(&dir) {
        return Err(bad(format!(
            "{} exists and was not made by videolisa; move it away, give the job another `id`, or \
             pass --force to replace it",
            dir.display()
        )));
    }
    match entry_holding(&job.video, out, ids.iter().copied()) {
        Some(entry) => Err(bad(format!(
            "the video lies inside {}, which this run replaces; move it out of --out",
            entry.display()
        ))),
        None => Ok(()),
    }
}

/// Appends result lines to `results.jsonl` (one `write` per line, so shards can share it).
pub struct ResultsLog {
    path: PathBuf,
    /// Ids that already have a `done` line.
    logged: HashSet<String>,
}

impl ResultsLog {
    /// Opens (reads) the log under `out`.
    pub fn open(out: &Path) -> Result<Self> {
        let path = out.join(RESULTS_FILE);
        let logged = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["status"] == "done")
            .filter_map(|v| v["id"].as_str().map(str::to_string))
            .collect();
        Ok(ResultsLog { path, logged })
    }

    /// Appends `r` (a resumed job only when its `done` line is missing, e.g. after a kill
    /// between its done marker and its line).
    pub fn append(&mut self, r: &JobResult) -> Result<()> {
        let mut line = match r.status {
            JobStatus::Resumed if self.logged.contains(&r.id) => return Ok(()),
            JobStatus::Resumed => serde_json::to_value(JobResult {
                status: JobStatus::Done,
                ..r.clone()
            }),
            _ => serde_json::to_value(r),
        }
        .map_err(|e| Error::Internal(format!("JSON: {e}")))?
        .to_string();
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        f.write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))?;
        if matches!(r.status, JobStatus::Done | JobStatus::Resumed) {
            self.logged.insert(r.id.clone());
        }
        Ok(())
    }
}

/// A job's video opened and its sampled frames read, ready for the model.
struct Prepared {
    video: Video,
    sparse: SparseInputs,
}

fn prepare(model: &VideoLisa, job: &Job, opts: &SegmentOptions) -> Result<Prepared> {
    let video = Video::open(&job.video)?;
    let sparse = SparseInputs::read(&model.clip_transform, &video, opts.n_sparse, opts.n_dense)?;
    Ok(Prepared { video, sparse })
}

/// Runs one job whose inputs are prepared: outputs under `<out>/<id>/`, done marker last.
fn run_prepared(
    model: &VideoLisa,
    job: &Job,
    prepared: Prepared,
    out: &Path,
    opts: &BatchOptions,
) -> Result<JobResult> {
    let (settings, opts) = (&opts.settings, &opts.segment);
    let dir = out.join(&job.id);
    mark_started(&dir)?;
    let formats = OutputFormats {
        mask_value: job.mask_value,
        overlay_png: job.overlay,
        overlay_mp4: job.overlay.then(|| overlay_fps(prepared.video.info().fps)),
        rle: job.rle,
        ..OutputFormats::default()
    };
    let prompts = PromptSpec::numbered(&job.prompts, job.template);
    if !job.annotate.is_empty() && opts.propagate.is_none() {
        return Err(Error::Usage(
            "`annotate` corrects XMem++'s masks: run the batch with --propagate".into(),
        ));
    }
    let annotations = read_annotations(&job.annotate, prepared.video.info(), prompts.len())?;
    let opts = SegmentOptions {
        formats,
        write_summary: true,
        annotations,
        ..opts.clone()
    };
    let s = segment_prepared(
        model,
        &prepared.video,
        Some(prepared.sparse),
        &prompts,
        Some(&dir),
        &opts,
    )?
    .summary;
    if !s.warnings.is_empty() {
        // an output the job asked for is missing: the job is not done (a rerun makes it)
        return Err(Error::Runtime(format!(
            "{} output(s) could not be written: {}",
            s.warnings.len(),
            s.warnings.join("; ")
        )));
    }
    let mut r = JobResult::new(job, out, JobStatus::Done);
    r.frames = s.frames;
    r.foreground = s.prompts.iter().map(|p| p.foreground).collect();
    r.seconds = s.seconds;
    let record = serde_json::to_value(&r).map_err(|e| Error::Internal(format!("JSON: {e}")))?;
    mark_done(&dir, &job_fingerprint(job, settings), &record)?;
    Ok(r)
}

/// The result of a job finished earlier for exactly this job and these settings, if it is;
/// nothing is changed on disk.
pub fn finished(job: &Job, out: &Path, settings: &str) -> Option<JobResult> {
    match item_state(&out.join(&job.id), &job_fingerprint(job, settings)) {
        ItemState::Done(record) => {
            let mut r: JobResult = JobResult::new(job, out, JobStatus::Resumed);
            r.frames = record["frames"].as_u64().unwrap_or(0) as usize;
            r.foreground = serde_json::from_value(record["foreground"].clone()).unwrap_or_default();
            Some(r)
        }
        ItemState::Missing | ItemState::Stale => None,
    }
}

/// The result of a job finished earlier (see [`finished`]); otherwise its folder is cleared for
/// a fresh run.
pub fn resumed(job: &Job, out: &Path, settings: &str) -> Result<Option<JobResult>> {
    match finished(job, out, settings) {
        Some(r) => Ok(Some(r)),
        None => clear_item(&out.join(&job.id)).map(|()| None),
    }
}

/// The result line of a job its run did not finish (`--merge`).
pub fn unfinished(job: &Job, out: &Path) -> JobResult {
    JobResult {
        error: Some(
            "not done: the run (or shard) that had this job did not finish it; see its log, and run \
             that shard again"
                .into(),
        ),
        ..JobResult::new(job, out, JobStatus::Failed)
    }
}

/// Runs one job now (no prefetch): the stdin mode's unit of work.
pub fn run_job(model: &VideoLisa, job: &Job, out: &Path, opts: &BatchOptions) -> JobResult {
    let t = Instant::now();
    let result = prepare(model, job, &opts.segment).and_then(|p| run_prepared(model, job, p, out, opts));
    finish_job(job, out, result, t)
}

/// Turns a job's outcome into its result; a failure removes the partial outputs.
fn finish_job(job: &Job, out: &Path, result: Result<JobResult>, t: Instant) -> JobResult {
    match result {
        Ok(mut r) => {
            r.seconds.total = t.elapsed().as_secs_f64();
            r
        }
        Err(e) => {
            let _ = clear_item(&out.join(&job.id));
            JobResult {
                error: Some(e.report()),
                ..JobResult::new(job, out, JobStatus::Failed)
            }
        }
    }
}

/// Runs `jobs` with one model: finished jobs are resumed, the next job's frames are read while
/// the current one runs, each result goes to `on_result` as it is known.
pub fn run(
    model: &VideoLisa,
    jobs: &[Job],
    out: &Path,
    opts: &BatchOptions,
    on_result: &mut dyn FnMut(&JobResult) -> Result<()>,
) -> Result<BatchSummary> {
    let t0 = Instant::now();
    let mut summary = BatchSummary::default();
    let bar = crate::progress::bar(jobs.len() as u64, "videos");
    let mut todo = Vec::new();
    for job in jobs {
        match resumed(job, out, &opts.settings)? {
            Some(r) => {
                summary.add(&r);
                on_result(&r)?;
                bar.inc(1);
            }
            None => todo.push(job),
        }
    }
    std::thread::scope(|scope| -> Result<()> {
        let mut next = todo.first().map(|j| {
            let job: &Job = j;
            scope.spawn(move || prepare(model, job, &opts.segment))
        });
        for (k, job) in todo.iter().enumerate() {
            let t = Instant::now();
            let prepared = next
                .take()
                .expect("spawned for every job")
                .join()
                .expect("reading frames does not panic");
            next = todo.get(k + 1).map(|j| {
                let job: &Job = j;
                scope.spawn(move || prepare(model, job, &opts.segment))
            });
            let result = prepared.and_then(|p| run_prepared(model, job, p, out, opts));
            let r = finish_job(job, out, result, t);
            summary.add(&r);
            on_result(&r)?;
            bar.inc(1);
            if opts.fail_fast && r.status == JobStatus::Failed {
                break;
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    summary.seconds = t0.elapsed().as_secs_f64();
    Ok(summary)
}
