//! `videolisa batch`: reads and checks every job, prepares the output folder's run manifest,
//! loads the model once and runs the jobs (or answers JSON jobs from stdin one by one).

use super::{ModelArgs, OutputArgs, PropagationArgs};
use crate::batch::{
    check_job, check_place, duplicate_ids, finished, parse_json_line, read_folder, read_manifest, resumed,
    run, run_job, unfinished, BatchOptions, BatchSummary, Job, JobDefaults, JobResult, JobStatus, Problem,
    ResultsLog, RESULTS_FILE,
};
use crate::error::{Error, Result};
use crate::load::XMemSpec;
use crate::lock::FolderLock;
use crate::model::videolisa::VideoLisa;
use crate::run_manifest::{ensure_writable, prepare_resume, RunManifest, MANIFEST_FILE};
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
    /// Replace folders under --out named like a job that videolisa did not make.
    #[arg(long)]
    pub force: bool,
    /// Do not run the model: check that the shards finished every job, report those they did
    /// not (exit 1), and mark the folder's run complete when all are done (the shards' other
    /// options may be given; they are not used).
    #[arg(long, conflicts_with_all = ["fresh", "shard", "force"])]
    pub merge: bool,
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

/// A batch ready to run: the model, how the jobs run, and the output folder held for this run.
struct Ready {
    model: VideoLisa,
    options: BatchOptions,
    _lock: FolderLock,
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
        let (sparse, dense) = (self.model.sparse, self.model.dense);
        Sampling::check(sparse, dense)?;
        if self.jobs.is_some() && !self.prompts.is_empty() {
            return Err(Error::Usage(
                "--prompt goes with --videos: the jobs of a manifest or of stdin give their own prompts"
                    .into(),
            ));
        }
        match &self.jobs {
            _ if self.merge => self.run_merge(on_result),
            Some(JobList::Stdin) => {
                if let Some(shard) = self.shard {
                    return Err(Error::Usage(format!(
                        "--shard {shard} does not apply to jobs on stdin (they are answered as they \
                         come); give each process its own stream"
                    )));
                }
                self.run_stdin(&mut std::io::stdin().lock(), xmem, on_result)
            }
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

    /// Takes the output folder for this run (refusing a second run on it), checks its run
    /// manifest (a folder made with other settings is refused before the load), then loads the
    /// model (and XMem++ when propagating). `owned`: the names this run writes under `--out`.
    fn prepare_and_load(&self, owned: Vec<String>, xmem: Option<XMemSpec>) -> Result<Ready> {
        ensure_writable(&self.out)?;
        let lock = FolderLock::acquire(&self.out, "batch", self.shard.unwrap_or_default())?;
        let (sparse, dense) = (self.model.sparse, self.model.dense);
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
            settings: setup.manifest.settings_fingerprint(),
        };
        Ok(Ready {
            model: models.videolisa,
            options,
            _lock: lock,
        })
    }

    /// This shard's jobs, and the problems found in them before any model work: rows that are
    /// not jobs (the first shard reports those), ids used twice anywhere in the list, and each
    /// job's own checks.
    fn read_jobs(&self) -> Result<(Vec<Job>, Vec<Problem>)> {
        let defaults = self.defaults();
        let (all, mut unparsed) = match (&self.jobs, &self.videos) {
            (Some(JobList::Manifest(p)), _) => read_manifest(p, &defaults)?,
            (_, Some(dir)) => read_folder(dir, &self.prompts, &defaults)?,
            _ => {
                return Err(Error::Internal(
                    "batch jobs come from a manifest or a folder".into(),
                ))
            }
        };
        let shard = self.shard.unwrap_or_default();
        if shard.index != 0 {
            unparsed.clear();
        }
        let ids: Vec<&str> = all.iter().map(|j| j.id.as_str()).collect();
        let jobs: Vec<Job> = shard.take(&all).into_iter().cloned().collect();
        let mine = |p: &Problem| jobs.iter().any(|j| j.origin == p.origin);
        let mut problems = unparsed;
        problems.extend(duplicate_ids(&all).into_iter().filter(mine));
        for j in &jobs {
            problems.extend(check_job(j).err());
            problems.extend(check_place(j, &self.out, self.force, &ids).err());
        }
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
        let is_bad = |j: &Job| problems.iter().any(|p| p.origin == j.origin);
        let mut owned: Vec<String> = jobs.iter().filter(|j| !is_bad(j)).map(|j| j.id.clone()).collect();
        owned.push(RESULTS_FILE.into());
        let ready = self.prepare_and_load(owned, xmem)?;
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
        let good: Vec<Job> = jobs.iter().filter(|j| !is_bad(j)).cloned().collect();
        summary.merge(&run(&ready.model, &good, &self.out, &ready.options, &mut report)?);
        let whole = self.shard.is_none_or(|s| s.is_whole());
        if summary.failed == 0 && summary.invalid == 0 && whole {
            if let Some(mut m) = RunManifest::read(&self.out)? {
                m.finish(&self.out)?;
            }
        }
        Ok(summary)
    }

    /// `--merge`: every job of the list is done (for the settings in the folder's run manifest)
    /// or reported; no model is loaded.
    fn run_merge(&self, on_result: &mut dyn FnMut(&JobResult) -> Result<()>) -> Result<BatchSummary> {
        if self.jobs == Some(JobList::Stdin) {
            return Err(Error::Usage(
                "--merge checks a job list: give the manifest or --videos the shards ran".into(),
            ));
        }
        let t0 = std::time::Instant::now();
        let mut manifest = RunManifest::read(&self.out)?.ok_or_else(|| {
            Error::Usage(format!(
                "{}: no {MANIFEST_FILE}: not the output folder of a videolisa batch run",
                self.out.display()
            ))
        })?;
        let _lock = FolderLock::acquire(&self.out, "batch --merge", Shard::WHOLE)?;
        let settings = manifest.settings_fingerprint();
        let (jobs, problems) = self.read_jobs()?;
        let mut summary = BatchSummary::default();
        for j in &jobs {
            let r = match problems.iter().find(|p| p.origin == j.origin) {
                Some(p) => JobResult::invalid(j, &self.out, p),
                None => finished(j, &self.out, &settings).unwrap_or_else(|| unfinished(j, &self.out)),
            };
            summary.add(&r);
            on_result(&r)?;
        }
        summary.seconds = t0.elapsed().as_secs_f64();
        if summary.failed == 0 && summary.invalid == 0 {
            manifest.finish(&self.out)?;
        }
        Ok(summary)
    }

    /// Answers JSON jobs from `input`, one result per line, in order, with the model loaded
    /// once; a line that is not a job (or not UTF-8), or whose id an earlier line of this
    /// stream used, is answered `invalid` and the stream goes on.
    fn run_stdin(
        &self,
        input: &mut dyn BufRead,
        xmem: Option<XMemSpec>,
        on_result: &mut dyn FnMut(&JobResult) -> Result<()>,
    ) -> Result<BatchSummary> {
        let ready = self.prepare_and_load(vec![RESULTS_FILE.into()], xmem)?;
        let mut log = ResultsLog::open(&self.out)?;
        let mut summary = BatchSummary::default();
        let t0 = std::time::Instant::now();
        let base = std::env::current_dir().map_err(|e| Error::io(".", e))?;
        let defaults = self.defaults();
        let mut seen: Vec<(String, String)> = Vec::new();
        let mut line = Vec::new();
        for k in 1.. {
            line.clear();
            if input
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::io("stdin", e))?
                == 0
            {
                break;
            }
            let origin = format!("stdin line {k}");
            let job = match std::str::from_utf8(&line) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => parse_json_line(text, origin, &base, &defaults),
                Err(e) => Err(Problem {
                    origin,
                    what: format!("not a job: the line is not UTF-8 text ({e})"),
                }),
            };
            let r = match job {
                Err(p) => unparsed(&p, &self.out),
                Ok(j) => match self.stdin_problem(&j, &seen) {
                    Some(p) => JobResult::invalid(&j, &self.out, &p),
                    None => {
                        seen.push((j.id.clone(), j.origin.clone()));
                        match resumed(&j, &self.out, &ready.options.settings)? {
                            Some(r) => r,
                            None => run_job(&ready.model, &j, &self.out, &ready.options),
                        }
                    }
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

    /// What keeps a stdin job from running: its own checks, its place under `--out`, or an id
    /// an earlier job of the stream took (`seen`: id and origin).
    fn stdin_problem(&self, j: &Job, seen: &[(String, String)]) -> Option<Problem> {
        if let Some((_, first)) = seen.iter().find(|(id, _)| *id == j.id) {
            return Some(Problem {
                origin: j.origin.clone(),
                what: format!(
                    "id {:?} is also used by {first}; give each job its own `id`",
                    j.id
                ),
            });
        }
        let ids: Vec<&str> = seen
            .iter()
            .map(|(id, _)| id.as_str())
            .chain([j.id.as_str()])
            .collect();
        check_job(j)
            .err()
            .or_else(|| check_place(j, &self.out, self.force, &ids).err())
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
        annotate: Vec::new(),
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
