//! `videolisa batch`: reads and checks every job, prepares the output folder's run manifest,
//! loads the model once and runs the jobs (or answers JSON jobs from stdin one by one).

use super::{ModelArgs, OutputArgs, PropagationArgs};
use crate::batch::{
    check_job, check_jobs, parse_json_line, read_folder, read_manifest, resumed, run, run_job, BatchOptions,
    BatchSummary, Job, JobDefaults, JobResult, JobStatus, Problem, ResultsLog, RESULTS_FILE,
};
use crate::error::{Error, Result};
use crate::load::XMemSpec;
use crate::model::videolisa::VideoLisa;
use crate::run_manifest::{prepare_resume, RunManifest};
use crate::sampling::Sampling;
use crate::segment::SegmentOptions;
use crate::setup::RunSetup;
use crate::shard::Shard;
use clap::Args;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Segment many videos with one model load: a CSV/JSONL manifest, a folder, or JSON jobs on stdin.
#[derive(Args, Debug, Clone)]
pub struct BatchArgs {
    /// A `.csv` or `.jsonl` manifest (columns/keys: video, prompt, id, template, mask_value,
    /// overlay, rle), or `-` to answer JSON jobs from stdin one by one.
    #[arg(required_unless_present = "videos", conflicts_with = "videos")]
    pub jobs: Option<JobList>,
    /// Every video, image and frame folder in DIR, each with the --prompt sentences.
    #[arg(long, value_name = "DIR", requires = "prompts")]
    pub videos: Option<PathBuf>,
    /// A sentence for every video of --videos (repeat for several).
    #[arg(long = "prompt", short)]
    pub prompts: Vec<String>,
    /// Output folder: <id>/prompt_<k>/… per job, results.jsonl, the run manifest.
    #[arg(long)]
    pub out: PathBuf,
    /// Run only shard i of n (`--shard 3/8`): every n-th job.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Stop at the first failed job (the exit code says whether any failed either way).
    #[arg(long)]
    pub fail_fast: bool,
    /// Run the valid jobs when some rows are bad (recorded as invalid); without it nothing runs.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Discard results in --out made with other settings and start over.
    #[arg(long)]
    pub fresh: bool,
    /// Do not read the next video while the current one runs (to measure what that saves).
    #[arg(long)]
    pub no_prefetch: bool,
    /// XMem++ post-optimization.
    #[command(flatten)]
    pub propagation: PropagationArgs,
    /// Which weights, how they run, how frames are sampled.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print each job's result as a JSON line as it finishes, then a summary line.
    #[arg(long)]
    pub json: bool,
    // last: a help heading also covers the arguments declared after it
    /// Prompt wording and output files of the jobs whose row does not say.
    #[command(flatten, next_help_heading = "Defaults for jobs whose row does not set them")]
    pub output: OutputArgs,
}

/// The jobs argument: a manifest file, or `-` for JSON jobs on stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobList {
    /// A `.csv` or `.jsonl` manifest.
    Manifest(PathBuf),
    /// JSON jobs on stdin, answered one by one on stdout.
    Stdin,
}

impl FromStr for JobList {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "-" => JobList::Stdin,
            _ => JobList::Manifest(PathBuf::from(s)),
        })
    }
}

impl BatchArgs {
    /// Runs the command: each job's result is printed as soon as it is known, then a summary;
    /// any failed or invalid job makes the command fail.
    pub fn run(&self) -> Result<()> {
        let json = self.json || self.jobs == Some(JobList::Stdin);
        let mut print = |r: &JobResult| -> Result<()> {
            let line = if json {
                serde_json::to_string(r).map_err(|e| Error::Internal(format!("JSON: {e}")))?
            } else {
                render_result(r)
            };
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")
                .and_then(|()| out.flush())
                .map_err(|e| Error::io("stdout", e))
        };
        let s = self.execute(&mut print)?;
        if json {
            println!("{}", serde_json::json!({ "summary": s }));
        } else {
            println!(
                "{} jobs: {} done, {} already done, {} failed, {} invalid, {:.1} s; results: {}",
                s.jobs,
                s.done,
                s.resumed,
                s.failed,
                s.invalid,
                s.seconds,
                self.out.join(RESULTS_FILE).display()
            );
        }
        if s.failed + s.invalid > 0 {
            return Err(Error::Runtime(format!(
                "{} of {} jobs failed or were invalid (see above)",
                s.failed + s.invalid,
                s.jobs
            )));
        }
        Ok(())
    }

    /// Runs the jobs; `on_result` sees each job's result as soon as it is known.
    pub fn execute(&self, on_result: &mut dyn FnMut(&JobResult) -> Result<()>) -> Result<BatchSummary> {
        let xmem = self.propagation.spec(self.model.offline)?;
        match &self.jobs {
            Some(JobList::Stdin) => self.run_stdin(&mut std::io::stdin().lock(), xmem, on_result),
            _ => self.run_listed(xmem, on_result),
        }
    }

    /// Per-job options rows may leave out.
    fn defaults(&self) -> JobDefaults {
        JobDefaults {
            template: self.output.template,
            mask_value: self.output.mask_value,
            overlay: self.output.overlay,
            rle: self.output.rle,
        }
    }

    /// Loads the model (and XMem++ when propagating) after checking the output folder's run
    /// manifest (so a folder made with other settings is refused before the load); returns the
    /// model and how the jobs run.
    fn prepare_and_load(
        &self,
        owned: Vec<String>,
        xmem: Option<XMemSpec>,
    ) -> Result<(VideoLisa, BatchOptions)> {
        let (sparse, dense) = (self.model.sparse, self.model.dense);
        Sampling::check(sparse, dense)?;
        let mut setup = RunSetup::new("batch", &self.model.load_spec(), xmem.as_ref(), sparse, dense)?;
        setup.manifest.entries = owned;
        prepare_resume(&self.out, &setup.manifest, self.fresh, &setup.manifest.entries)?;
        let models = setup.load()?;
        let options = BatchOptions {
            fail_fast: self.fail_fast,
            prefetch: !self.no_prefetch,
            segment: SegmentOptions {
                propagate: models.xmem,
                ..self.model.segment_options()
            },
        };
        Ok((models.videolisa, options))
    }

    /// This shard's jobs, and the problems found in them before any model work (rows that are
    /// not jobs at all are the first shard's to report).
    fn read_jobs(&self) -> Result<(Vec<Job>, Vec<Problem>)> {
        let defaults = self.defaults();
        let (jobs, mut problems) = match (&self.jobs, &self.videos) {
            (Some(JobList::Manifest(p)), _) => read_manifest(p, &defaults)?,
            (_, Some(dir)) => (read_folder(dir, &self.prompts, &defaults)?, Vec::new()),
            _ => {
                return Err(Error::Internal(
                    "batch jobs come from a manifest or a folder".into(),
                ))
            }
        };
        let shard = self.shard.unwrap_or_default();
        let jobs: Vec<Job> = shard.take(&jobs).into_iter().cloned().collect();
        if shard.index != 0 {
            problems.clear();
        }
        problems.extend(check_jobs(&jobs));
        if !problems.is_empty() && !self.skip_invalid {
            let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
            return Err(Error::Usage(format!(
                "{} problem(s) in the batch; nothing was run:\n{}\nfix them, or pass --skip-invalid to run the other jobs",
                problems.len(),
                list.join("\n")
            )));
        }
        Ok((jobs, problems))
    }

    /// Runs a manifest or folder batch.
    fn run_listed(
        &self,
        xmem: Option<XMemSpec>,
        on_result: &mut dyn FnMut(&JobResult) -> Result<()>,
    ) -> Result<BatchSummary> {
        let (jobs, problems) = self.read_jobs()?;
        let mut owned: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
        owned.push(RESULTS_FILE.into());
        let (model, options) = self.prepare_and_load(owned, xmem)?;
        let mut log = ResultsLog::open(&self.out)?;
        let mut report = |r: &JobResult| -> Result<()> {
            log.append(r)?;
            on_result(r)
        };
        let mut summary = BatchSummary::default();
        for p in &problems {
            let r = match jobs.iter().find(|j| j.origin == p.origin) {
                Some(j) => JobResult::invalid(j, &self.out, p),
                None => unparsed(p, &self.out),
            };
            summary.add(&r);
            report(&r)?;
        }
        let good: Vec<Job> = jobs
            .into_iter()
            .filter(|j| !problems.iter().any(|p| p.origin == j.origin))
            .collect();
        summary.merge(&run(&model, &good, &self.out, &options, &mut report)?);
        let whole = self.shard.is_none_or(|s| s.is_whole());
        if summary.failed == 0 && summary.invalid == 0 && whole {
            if let Some(mut m) = RunManifest::read(&self.out)? {
                m.finish(&self.out)?;
            }
        }
        Ok(summary)
    }

    /// Answers JSON jobs from `input`, one result per job, in order, with the model loaded once.
    fn run_stdin(
        &self,
        input: &mut dyn BufRead,
        xmem: Option<XMemSpec>,
        on_result: &mut dyn FnMut(&JobResult) -> Result<()>,
    ) -> Result<BatchSummary> {
        let (model, options) = self.prepare_and_load(vec![RESULTS_FILE.into()], xmem)?;
        let mut log = ResultsLog::open(&self.out)?;
        let mut summary = BatchSummary::default();
        let t0 = std::time::Instant::now();
        let base = std::env::current_dir().map_err(|e| Error::io(".", e))?;
        let defaults = self.defaults();
        for (k, line) in input.lines().enumerate() {
            let line = line.map_err(|e| Error::io("stdin", e))?;
            if line.trim().is_empty() {
                continue;
            }
            let r = match parse_json_line(&line, format!("stdin line {}", k + 1), &base, &defaults) {
                Err(p) => unparsed(&p, &self.out),
                Ok(j) => match check_job(&j) {
                    Err(p) => JobResult::invalid(&j, &self.out, &p),
                    Ok(()) => match resumed(&j, &self.out)? {
                        Some(r) => r,
                        None => run_job(&model, &j, &self.out, &options.segment),
                    },
                },
            };
            summary.add(&r);
            log.append(&r)?;
            on_result(&r)?;
            if self.fail_fast && r.status == JobStatus::Failed {
                break;
            }
        }
        summary.seconds = t0.elapsed().as_secs_f64();
        Ok(summary)
    }
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
