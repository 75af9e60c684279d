//! `videolisa batch`: reads and checks every job, prepares the output folder's run manifest,
//! loads the model once and runs the jobs (or answers JSON jobs from stdin one by one).

use crate::batch::{
    check_job, check_jobs, parse_json_line, read_folder, read_manifest, resumed, run, run_job, BatchOptions,
    BatchSummary, Job, JobDefaults, JobResult, JobStatus, Problem, ResultsLog, RESULTS_FILE,
};
use crate::error::{Error, Result};
use crate::load::XMemSpec;
use crate::load::{load_resolved, LoadSpec};
use crate::model::videolisa::VideoLisa;
use crate::model::xmem::XMem;
use crate::run_manifest::{add_propagation, model_settings, prepare_resume, RunManifest};
use crate::sampling::Sampling;
use crate::segment::SegmentOptions;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Where the jobs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchInput {
    /// A `.csv` or `.jsonl` manifest.
    Manifest(PathBuf),
    /// Every video, image and frame folder in a folder, with the same prompts.
    Folder {
        /// The folder.
        dir: PathBuf,
        /// The sentences for every video.
        prompts: Vec<String>,
    },
    /// JSON jobs on stdin, answered one by one on stdout.
    Stdin,
}

/// Everything `batch` needs from the command line.
#[derive(Debug, Clone)]
pub struct BatchArgs {
    /// The jobs.
    pub input: BatchInput,
    /// Output folder.
    pub out: PathBuf,
    /// Which model, dtypes, device.
    pub load: LoadSpec,
    /// Per-job options rows may leave out.
    pub defaults: JobDefaults,
    /// Shard, fail-fast, sampling, SAM batch.
    pub options: BatchOptions,
    /// Run the valid jobs when some rows are bad (else nothing runs).
    pub skip_invalid: bool,
    /// Discard results in `--out` made with other settings.
    pub fresh: bool,
    /// Post-optimization with these XMem++ weights (`--propagate --xmem`).
    pub xmem: Option<XMemSpec>,
}

/// Loads the model (and XMem++ when propagating) after checking the output folder's run
/// manifest (so a folder made with other settings is refused before the load); returns the
/// model and the per-job pipeline options.
fn prepare_and_load(a: &BatchArgs, owned: Vec<String>) -> Result<(VideoLisa, SegmentOptions)> {
    let o = &a.options.segment;
    Sampling::check(o.n_sparse, o.n_dense)?;
    let options = a.load.options()?;
    let paths = a.load.resolve()?;
    let (mut settings, mut info) = model_settings(&paths, &options, o.n_sparse, o.n_dense)?;
    let xmem_path = a.xmem.as_ref().map(XMemSpec::resolve).transpose()?;
    if let Some(x) = &xmem_path {
        add_propagation(&mut settings, &mut info, x)?;
    }
    let mut manifest = RunManifest::new("batch", settings, info);
    manifest.entries = owned;
    prepare_resume(&a.out, &manifest, a.fresh, &manifest.entries)?;
    let model = load_resolved(&paths, options)?;
    let mut segment = a.options.segment.clone();
    if let Some(x) = &xmem_path {
        segment.propagate = Some(std::sync::Arc::new(XMem::open(x, &model.options.device)?));
    }
    Ok((model, segment))
}

/// The result line of a row that is not a job at all.
fn unparsed(p: &Problem, out: &Path) -> JobResult {
    let job = Job {
        origin: p.origin.clone(),
        id: String::new(),
        video: PathBuf::new(),
        prompts: Vec::new(),
        template: Default::default(),
        mask_value: 255,
        overlay: false,
        rle: false,
    };
    JobResult::invalid(&job, out, p)
}

/// Runs a manifest or folder batch; `on_result` sees every result as it is known.
fn run_listed(a: &BatchArgs, on_result: &mut dyn FnMut(&JobResult) -> Result<()>) -> Result<BatchSummary> {
    let (jobs, mut problems) = match &a.input {
        BatchInput::Manifest(p) => read_manifest(p, &a.defaults)?,
        BatchInput::Folder { dir, prompts } => (read_folder(dir, prompts, &a.defaults)?, Vec::new()),
        BatchInput::Stdin => unreachable!("stdin jobs are answered one by one"),
    };
    let (i, n) = a.options.shard.unwrap_or((0, 1));
    let jobs: Vec<Job> = jobs
        .into_iter()
        .enumerate()
        .filter(|(k, _)| k % n == i)
        .map(|(_, j)| j)
        .collect();
    if i != 0 {
        problems.clear(); // rows that are not jobs at all are the first shard's to report
    }
    problems.extend(check_jobs(&jobs));
    if !problems.is_empty() && !a.skip_invalid {
        let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        return Err(Error::Invalid(format!(
            "{} problem(s) in the batch; nothing was run:\n{}\nfix them, or pass --skip-invalid to run the other jobs",
            problems.len(),
            list.join("\n")
        )));
    }
    let bad: std::collections::HashSet<&str> = problems.iter().map(|p| p.origin.as_str()).collect();
    let (good, invalid): (Vec<&Job>, Vec<&Job>) = jobs.iter().partition(|j| !bad.contains(j.origin.as_str()));
    let mut owned: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    owned.push(RESULTS_FILE.into());
    let (model, segment) = prepare_and_load(a, owned)?;
    let mut log = ResultsLog::open(&a.out)?;
    let mut report = |r: &JobResult| -> Result<()> {
        log.append(r)?;
        on_result(r)
    };
    let mut summary = BatchSummary::default();
    for p in &problems {
        let r = match invalid.iter().find(|j| j.origin == p.origin) {
            Some(j) => JobResult::invalid(j, &a.out, p),
            None => unparsed(p, &a.out),
        };
        summary.add(&r);
        report(&r)?;
    }
    let good: Vec<Job> = good.into_iter().cloned().collect();
    let opts = BatchOptions {
        shard: None,
        segment,
        ..a.options.clone()
    };
    let ran = run(&model, &good, &a.out, &opts, &mut report)?;
    summary.jobs += ran.jobs;
    summary.done += ran.done;
    summary.resumed += ran.resumed;
    summary.failed += ran.failed;
    summary.seconds = ran.seconds;
    if summary.failed == 0 && summary.invalid == 0 && n == 1 {
        if let Some(mut m) = RunManifest::read(&a.out)? {
            m.finish(&a.out)?;
        }
    }
    Ok(summary)
}

/// Answers JSON jobs from `input`, one result per job, in order, with the model loaded once.
fn run_stdin(
    a: &BatchArgs,
    input: &mut dyn BufRead,
    on_result: &mut dyn FnMut(&JobResult) -> Result<()>,
) -> Result<BatchSummary> {
    let (model, segment) = prepare_and_load(a, vec![RESULTS_FILE.into()])?;
    let mut log = ResultsLog::open(&a.out)?;
    let mut summary = BatchSummary::default();
    let t0 = std::time::Instant::now();
    let base = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    for (k, line) in input.lines().enumerate() {
        let line = line.map_err(|e| Error::io("stdin", e))?;
        if line.trim().is_empty() {
            continue;
        }
        let r = match parse_json_line(&line, format!("stdin line {}", k + 1), &base, &a.defaults) {
            Err(p) => unparsed(&p, &a.out),
            Ok(j) => match check_job(&j) {
                Err(p) => JobResult::invalid(&j, &a.out, &p),
                Ok(()) => match resumed(&j, &a.out)? {
                    Some(r) => r,
                    None => run_job(&model, &j, &a.out, &segment),
                },
            },
        };
        summary.add(&r);
        log.append(&r)?;
        on_result(&r)?;
        if a.options.fail_fast && r.status == JobStatus::Failed {
            break;
        }
    }
    summary.seconds = t0.elapsed().as_secs_f64();
    Ok(summary)
}

/// Runs the command; `on_result` sees each job's result as soon as it is known.
pub fn execute(a: &BatchArgs, on_result: &mut dyn FnMut(&JobResult) -> Result<()>) -> Result<BatchSummary> {
    match a.input {
        BatchInput::Stdin => run_stdin(a, &mut std::io::stdin().lock(), on_result),
        _ => run_listed(a, on_result),
    }
}

/// One line for the terminal.
pub fn render_result(r: &JobResult) -> String {
    match r.status {
        JobStatus::Done | JobStatus::Resumed => format!(
            "{}: {} ({} frames, {:.1} s) → {}{}",
            r.id,
            if r.status == JobStatus::Done {
                "done"
            } else {
                "already done"
            },
            r.frames,
            r.seconds.total,
            r.out.display(),
            r.error
                .as_ref()
                .map_or(String::new(), |e| format!(" (warning: {e})"))
        ),
        JobStatus::Failed | JobStatus::Invalid => format!(
            "{}: {}: {}",
            if r.id.is_empty() { &r.origin } else { &r.id },
            if r.status == JobStatus::Failed {
                "FAILED"
            } else {
                "INVALID"
            },
            r.error.as_deref().unwrap_or("")
        ),
    }
}
