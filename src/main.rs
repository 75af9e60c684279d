//! The `videolisa` command line: parses arguments and dispatches to the library.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use videolisa::batch::{BatchOptions, JobDefaults, JobResult};
use videolisa::commands::batch::{BatchArgs, BatchInput};
use videolisa::commands::probe::{self, FrameSelection, ProbeOptions};
use videolisa::commands::segment::{self as seg, SegmentArgs};
use videolisa::eval::datasets::{parse_shard, Dataset, DatasetKind};
use videolisa::eval::run::EvalOptions;
use videolisa::eval::score::{MissingExpression, Protocol, ScoreOptions};
use videolisa::load::XMemSpec;
use videolisa::load::{DeviceSpec, DtypeSpec, LoadSpec};
use videolisa::output::OutputFormats;
use videolisa::segment::SegmentOptions;
use videolisa::tokenizer::Template;

/// A count that must be at least 1.
fn positive(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a whole number of at least 1")),
    }
}

/// `i/n` with 0 ≤ i < n.
fn shard(s: &str) -> std::result::Result<(usize, usize), String> {
    parse_shard(s).map_err(|e| e.to_string())
}

/// Which benchmark split (shared by `eval` and `score`).
#[derive(Args, Clone)]
struct DatasetArgs {
    /// Benchmark.
    #[arg(long, value_enum)]
    dataset: DatasetKind,
    /// Dataset root.
    #[arg(long)]
    root: PathBuf,
    /// Split (`valid` for Ref-YouTube-VOS / Ref-DAVIS, `valid_u` or `valid` for MeViS; ignored for ReasonVOS).
    #[arg(long, default_value = "valid")]
    split: String,
}

/// Where the weights come from and how they run (shared by `segment` and `eval`).
#[derive(Args, Clone)]
struct ModelArgs {
    /// VideoLISA checkpoint: a directory or a Hugging Face hub id.
    #[arg(long, default_value = videolisa::hub::DEFAULT_MODEL)]
    model: String,
    /// CLIP tower: a directory or a hub id (default: the checkpoint's vision_tower).
    #[arg(long)]
    clip: Option<String>,
    /// Use only the local Hugging Face cache (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// dtypes: `bf16`, `f32`, or per component `llm=bf16,clip=f32,sam=f32` (default: LLM bf16;
    /// CLIP and SAM f32 on CPU, bf16 on CUDA).
    #[arg(long)]
    dtype: Option<DtypeSpec>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Number of sparse frames (T_sparse).
    #[arg(long, default_value_t = videolisa::sampling::DEFAULT_SPARSE, value_parser = positive)]
    sparse: usize,
    /// Number of dense frames (T_dense; at most --sparse).
    #[arg(long, default_value_t = videolisa::sampling::DEFAULT_DENSE, value_parser = positive)]
    dense: usize,
    /// Frames per SAM image-encoder batch [default: 1 on the CPU; on CUDA as many as half the
    /// free GPU memory holds, at most 16].
    #[arg(long, value_parser = positive)]
    sam_batch: Option<usize>,
}

impl ModelArgs {
    /// What to load, as the library takes it.
    fn load_spec(&self) -> LoadSpec {
        LoadSpec {
            model: self.model.clone(),
            clip: self.clip.clone(),
            offline: self.offline,
            dtype: self.dtype.unwrap_or_default(),
            device: self.device,
        }
    }
}

/// Segment the object a sentence describes in every frame of a video (VideoLISA on candle).
#[derive(Parser)]
#[command(name = "videolisa", version, about, propagate_version = true)]
struct Cli {
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a video's frames, size, fps, codec and the frames VideoLISA samples from it.
    Probe {
        /// An mp4, a folder of jpg/png frames, or a single image.
        video: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Decode every frame (checks the whole file, measures decode speed).
        #[arg(long)]
        decode: bool,
        /// Write the CLIP and SAM input tensors of the chosen frames to DIR as safetensors.
        #[arg(long, value_name = "DIR")]
        dump: Option<PathBuf>,
        /// Frames to dump (with --dump): `dense`, `sparse`, `all` or a list such as `0,5,9`.
        #[arg(long, default_value = "dense", requires = "dump")]
        frames: FrameSelection,
        /// Number of sparse frames (T_sparse).
        #[arg(long, default_value_t = videolisa::sampling::DEFAULT_SPARSE, value_parser = positive)]
        sparse: usize,
        /// Number of dense frames (T_dense; at most --sparse).
        #[arg(long, default_value_t = videolisa::sampling::DEFAULT_DENSE, value_parser = positive)]
        dense: usize,
    },
    /// Segment what each prompt describes in every frame of a video.
    Segment {
        /// An mp4, a folder of jpg/png frames, or a single image.
        #[arg(long)]
        video: PathBuf,
        /// A sentence; repeat for several objects (they share the decoded frames and SAM's encodings).
        #[arg(long = "prompt", short, required = true)]
        prompts: Vec<String>,
        /// Output folder: prompt_<k>/<frame>.png per prompt, summary.json and the run manifest.
        /// A folder holding an earlier segment run is replaced; any other non-empty folder is
        /// refused unless --force.
        #[arg(long)]
        out: PathBuf,
        /// Write into a non-empty folder that holds other files (prompt_*/ and summary.json are
        /// replaced; other files are left alone).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        m: ModelArgs,
        /// How the prompt is worded for the model.
        #[arg(long, value_enum, default_value_t = Template::Referring)]
        template: Template,
        /// Also write overlay PNGs and an overlay mp4.
        #[arg(long)]
        overlay: bool,
        /// Also write COCO RLE JSON (masks.rle.json) per prompt.
        #[arg(long)]
        rle: bool,
        /// Foreground value of the mask PNGs, 1–255 (100 for the Ref-DAVIS raw layout).
        #[arg(long, default_value_t = 255, value_parser = clap::value_parser!(u8).range(1..))]
        mask_value: u8,
        /// Write intermediates (ids, sampled indices, visual tokens, prompt, logits; with
        /// --propagate also XMem++'s of the first unseeded and the last frame) to DIR.
        #[arg(long, value_name = "DIR")]
        dump: Option<PathBuf>,
        /// Post-optimization: SAM segments only the 4 dense frames, and XMem++ propagates their
        /// masks through the video (the paper's "Post-optimization" rows). Needs --xmem.
        #[arg(long)]
        propagate: bool,
        /// XMem++ weights: XMem.pth (or a safetensors copy), a folder holding it, or a hub id.
        #[arg(long, value_name = "PATH|HUB_ID", requires = "propagate")]
        xmem: Option<String>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Segment many videos with one model load: a CSV/JSONL manifest, a folder, or JSON jobs on stdin.
    Batch {
        /// A `.csv` or `.jsonl` manifest (columns/keys: video, prompt, id, template, mask_value,
        /// overlay, rle), or `-` to answer JSON jobs from stdin one by one.
        #[arg(required_unless_present = "videos", conflicts_with = "videos")]
        jobs: Option<String>,
        /// Every video, image and frame folder in DIR, each with the --prompt sentences.
        #[arg(long, value_name = "DIR", requires = "prompts")]
        videos: Option<PathBuf>,
        /// A sentence for every video of --videos (repeat for several).
        #[arg(long = "prompt", short)]
        prompts: Vec<String>,
        /// Output folder: <id>/prompt_<k>/… per job, results.jsonl, the run manifest.
        #[arg(long)]
        out: PathBuf,
        /// Template for jobs that do not name one.
        #[arg(long, value_enum, default_value_t = Template::Referring)]
        template: Template,
        /// Mask foreground value for jobs that do not set one (1–255).
        #[arg(long, default_value_t = 255, value_parser = clap::value_parser!(u8).range(1..))]
        mask_value: u8,
        /// Overlays for jobs that do not say.
        #[arg(long)]
        overlay: bool,
        /// COCO RLE JSON for jobs that do not say.
        #[arg(long)]
        rle: bool,
        /// Run only shard i of n (`--shard 3/8`): every n-th job.
        #[arg(long, value_parser = shard)]
        shard: Option<(usize, usize)>,
        /// Stop at the first failed job (the exit code says whether any failed either way).
        #[arg(long)]
        fail_fast: bool,
        /// Run the valid jobs when some rows are bad (recorded as invalid); without it nothing runs.
        #[arg(long)]
        skip_invalid: bool,
        /// Discard results in --out made with other settings and start over.
        #[arg(long)]
        fresh: bool,
        /// Do not read the next video while the current one runs (to measure what that saves).
        #[arg(long)]
        no_prefetch: bool,
        /// Post-optimization (XMem++ from the dense frames' masks) for every job, as
        /// `segment --propagate`.
        #[arg(long)]
        propagate: bool,
        /// XMem++ weights: XMem.pth (or a safetensors copy), a folder holding it, or a hub id.
        #[arg(long, value_name = "PATH|HUB_ID", requires = "propagate")]
        xmem: Option<String>,
        #[command(flatten)]
        m: ModelArgs,
        /// Print each job's result as a JSON line as it finishes, then a summary line.
        #[arg(long)]
        json: bool,
    },
    /// Run a benchmark split: predictions in the official layout, scores where ground truth exists.
    Eval {
        #[command(flatten)]
        d: DatasetArgs,
        /// Output folder (predictions, scores/, submission.zip).
        #[arg(long)]
        out: PathBuf,
        /// Run only shard i of n (`--shard 3/8`): every n-th video.
        #[arg(long, value_parser = shard)]
        shard: Option<(usize, usize)>,
        /// Do not run the model: combine the finished shards under --out and score them.
        #[arg(long)]
        merge: bool,
        /// Discard results in --out made with other settings (or without a run manifest) and
        /// start over; without it such a folder is refused and matching results are resumed.
        #[arg(long, conflicts_with = "merge")]
        fresh: bool,
        /// Ref-DAVIS protocol.
        #[arg(long, value_enum, default_value_t = Protocol::Default)]
        protocol: Protocol,
        /// Post-optimization (XMem++ from the dense frames' masks), as `segment --propagate`.
        #[arg(long, conflicts_with = "merge")]
        propagate: bool,
        /// XMem++ weights: XMem.pth (or a safetensors copy), a folder holding it, or a hub id.
        #[arg(long, value_name = "PATH|HUB_ID", requires = "propagate")]
        xmem: Option<String>,
        #[command(flatten)]
        m: ModelArgs,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Score predictions from any tool against a benchmark split.
    Score {
        #[command(flatten)]
        d: DatasetArgs,
        /// Prediction root (`<video>/<exp_id>/<frame>.png`).
        #[arg(long)]
        pred: PathBuf,
        /// Ref-DAVIS protocol.
        #[arg(long, value_enum, default_value_t = Protocol::Default)]
        protocol: Protocol,
        /// MeViS: an expression folder missing from a present video is an `error`, or `drop`ped
        /// from the mean as the official eval_mevis.py does.
        #[arg(long, value_enum, default_value_t = MissingExpression::Error)]
        missing_expression: MissingExpression,
        /// Write results.json, per_item.csv, per_video.csv, report.md here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the full report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a small synthetic dataset in a benchmark's layout (for trying eval/score).
    Synthetic {
        /// Layout.
        #[arg(long, value_enum)]
        dataset: DatasetKind,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
        /// Videos.
        #[arg(long, default_value_t = 3)]
        videos: usize,
        /// Frames per video.
        #[arg(long, default_value_t = 6)]
        frames: usize,
    },
}

fn run(cli: Cli) -> Result<()> {
    videolisa::progress::set_quiet(cli.quiet);
    match cli.command {
        Command::Probe {
            video,
            json,
            decode,
            dump,
            frames,
            sparse,
            dense,
        } => {
            let opts = ProbeOptions {
                sparse,
                dense,
                decode,
                dump,
                frames,
            };
            probe_cmd(&video, &opts, json)
        }
        Command::Segment {
            video,
            prompts,
            out,
            force,
            m,
            template,
            overlay,
            rle,
            mask_value,
            dump,
            propagate,
            xmem,
            json,
        } => {
            let propagate = xmem_spec(propagate, xmem, m.offline)?;
            let formats = OutputFormats {
                mask_value,
                overlay_png: overlay,
                // the rate is read from the video once it is opened
                overlay_mp4: overlay.then_some(0.0),
                rle,
                ..OutputFormats::default()
            };
            let args = SegmentArgs {
                formats,
                video,
                prompts,
                out,
                force,
                load: m.load_spec(),
                template,
                sparse: m.sparse,
                dense: m.dense,
                sam_batch: m.sam_batch,
                dump,
                propagate,
            };
            segment_cmd(&args, json)
        }
        Command::Batch {
            jobs,
            videos,
            prompts,
            out,
            template,
            mask_value,
            overlay,
            rle,
            shard,
            fail_fast,
            skip_invalid,
            fresh,
            no_prefetch,
            propagate,
            xmem,
            m,
            json,
        } => {
            let xmem = xmem_spec(propagate, xmem, m.offline)?;
            let input = match (jobs.as_deref(), videos) {
                (Some("-"), _) => BatchInput::Stdin,
                (Some(p), _) => BatchInput::Manifest(PathBuf::from(p)),
                (None, Some(dir)) => BatchInput::Folder { dir, prompts },
                (None, None) => unreachable!("clap requires one"),
            };
            let json = json || input == BatchInput::Stdin;
            let args = BatchArgs {
                input,
                out,
                load: m.load_spec(),
                defaults: JobDefaults {
                    template,
                    mask_value,
                    overlay,
                    rle,
                },
                options: BatchOptions {
                    shard,
                    fail_fast,
                    prefetch: !no_prefetch,
                    segment: SegmentOptions {
                        n_sparse: m.sparse,
                        n_dense: m.dense,
                        sam_batch: m.sam_batch,
                        ..SegmentOptions::default()
                    },
                },
                skip_invalid,
                fresh,
                xmem,
            };
            batch_cmd(&args, json)
        }
        Command::Eval {
            d,
            out,
            shard,
            merge,
            fresh,
            protocol,
            propagate,
            xmem,
            m,
            json,
        } => {
            let opts = EvalOptions {
                xmem: xmem_spec(propagate, xmem, m.offline)?,
                shard,
                protocol,
                segment: SegmentOptions {
                    n_sparse: m.sparse,
                    n_dense: m.dense,
                    sam_batch: m.sam_batch,
                    ..SegmentOptions::default()
                },
            };
            eval_cmd(&d, &out, (!merge).then_some((&m, fresh)), &opts, json)
        }
        Command::Score {
            d,
            pred,
            protocol,
            missing_expression,
            out,
            json,
        } => {
            let options = ScoreOptions {
                protocol,
                missing_expression,
            };
            score_cmd(&d, &pred, &options, out.as_deref(), json)
        }
        Command::Synthetic {
            dataset,
            out,
            videos,
            frames,
        } => {
            let spec = videolisa::eval::synthetic::SyntheticSpec {
                videos,
                frames,
                ..Default::default()
            };
            let split = videolisa::eval::synthetic::write(dataset, &out, &spec)?;
            println!("wrote {} (split `{split}`)", out.display());
            Ok(())
        }
    }
}

fn probe_cmd(video: &std::path::Path, opts: &ProbeOptions, json: bool) -> Result<()> {
    let report = probe::run(video, opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", probe::render_text(&report));
    }
    Ok(())
}

fn batch_cmd(args: &BatchArgs, json: bool) -> Result<()> {
    use std::io::Write;
    let mut print = |r: &JobResult| -> videolisa::Result<()> {
        let line = if json {
            serde_json::to_string(r).map_err(|e| videolisa::Error::Runtime(e.to_string()))?
        } else {
            videolisa::commands::batch::render_result(r)
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| videolisa::Error::io("stdout", e))
    };
    let s = videolisa::commands::batch::execute(args, &mut print)?;
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
            args.out.join(videolisa::batch::RESULTS_FILE).display()
        );
    }
    if s.failed + s.invalid > 0 {
        anyhow::bail!(
            "{} of {} jobs failed or were invalid (see above)",
            s.failed + s.invalid,
            s.jobs
        );
    }
    Ok(())
}

/// `--propagate` / `--xmem` as a typed spec; `--propagate` alone is a usage error.
fn xmem_spec(propagate: bool, xmem: Option<String>, offline: bool) -> Result<Option<XMemSpec>> {
    match (propagate, xmem) {
        (false, _) => Ok(None),
        (true, Some(spec)) => Ok(Some(XMemSpec { spec, offline })),
        (true, None) => Err(videolisa::Error::Invalid(format!(
            "--propagate needs --xmem PATH: XMem's weights, XMem.pth ({})",
            videolisa::hub::XMEM_URL
        ))
        .into()),
    }
}

fn segment_cmd(args: &SegmentArgs, json: bool) -> Result<()> {
    let summary = seg::run(args)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", seg::render_text(&summary, &args.out));
    }
    for note in summary.propagation.iter().flat_map(|p| &p.notes) {
        eprintln!("note: {note}");
    }
    if summary.warnings.is_empty() {
        return Ok(());
    }
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
    anyhow::bail!(
        "{} output(s) could not be written (above); the masks and summary.json in {} are complete",
        summary.warnings.len(),
        args.out.display()
    )
}

/// `model`: the model and `--fresh` for a run, None for `--merge`.
fn eval_cmd(
    d: &DatasetArgs,
    out: &std::path::Path,
    model: Option<(&ModelArgs, bool)>,
    opts: &EvalOptions,
    json: bool,
) -> Result<()> {
    let ds = Dataset::load(d.dataset, &d.root, &d.split)?;
    let summary = match model {
        None => videolisa::commands::eval::run_merge(&ds, out, opts.protocol)?,
        Some((m, fresh)) => videolisa::commands::eval::run_eval(&ds, out, &m.load_spec(), opts, fresh)?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
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
        print!("{}", videolisa::commands::eval::render_score(r));
        println!("reports: {}", out.join("scores").display());
    }
    if let Some(z) = &summary.submission {
        println!("no local ground truth: upload {}", z.display());
    }
    Ok(())
}

fn score_cmd(
    d: &DatasetArgs,
    pred: &std::path::Path,
    options: &ScoreOptions,
    out: Option<&std::path::Path>,
    json: bool,
) -> Result<()> {
    let r = videolisa::commands::eval::run_score(d.dataset, &d.root, &d.split, pred, options, out)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", videolisa::commands::eval::render_score(&r));
        println!("missing predictions: {}", r.missing_policy);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e
                .downcast_ref::<videolisa::Error>()
                .map_or(1, videolisa::Error::exit_code);
            ExitCode::from(code as u8)
        }
    }
}
