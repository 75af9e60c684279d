//! `videolisa segment`: checks everything cheap (options, prompts, the video, the output
//! folder), loads VideoLISA, and segments one video for one or more prompts into an output
//! folder that holds exactly this run's results, with its run manifest.

use super::{print_json, ModelArgs, OutputArgs, PropagationArgs};
use crate::error::{Error, Result};
use crate::live::feed::Input;
use crate::live::stream::StreamFormat;
use crate::live::{is_stream, segment_online, OnlineOptions};
use crate::lock::FolderLock;
use crate::model::xmem::XMem;
use crate::run_manifest::{
    check_writable, ensure_writable, entry_holding, fingerprint_files, input_fingerprint, item_fingerprint,
    prepare_replace, RunManifest, MANIFEST_FILE,
};
use crate::sampling::Sampling;
use crate::segment::annotation::{read_annotations, Annotation};
use crate::segment::cache::{Lookup, PromptStageCache, CACHE_FILE};
use crate::segment::rerun::rerun;
use crate::segment::{segment, PromptSpec, SegmentOptions, SegmentSummary};
use crate::setup::{Models, RunSetup};
use crate::shard::Shard;
use crate::tokenizer::check_instruction;
use crate::video::Video;
use clap::Args;
use image::GrayImage;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Segment what each prompt describes in every frame of a video.
#[derive(Args, Debug, Clone)]
pub struct SegmentArgs {
    /// An mp4, a y4m file, a folder of jpg/png frames, a single image, or a y4m stream: `-`
    /// (stdin) or a FIFO (read to its end first, unless --online).
    #[arg(long)]
    pub video: PathBuf,
    /// A sentence; repeat for several objects (they share the decoded frames and SAM's encodings).
    #[arg(long = "prompt", short, required = true)]
    pub prompts: Vec<String>,
    /// Output folder: prompt_<k>/<frame>.png per prompt, summary.json and the run manifest.
    /// A folder holding an earlier segment run is replaced; any other non-empty folder is
    /// refused unless --force.
    #[arg(long)]
    pub out: PathBuf,
    /// Write into a non-empty folder that holds other files (prompt_*/ and summary.json are
    /// replaced; other files are left alone).
    #[arg(long)]
    pub force: bool,
    /// Which weights, how they run, how frames are sampled.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt wording and output files.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Write intermediates (ids, sampled indices, visual tokens, prompt, logits; with
    /// --propagate also XMem++'s of the first unseeded and the last frame) to DIR.
    #[arg(long, value_name = "DIR")]
    pub dump: Option<PathBuf>,
    /// XMem++ post-optimization.
    #[command(flatten)]
    pub propagation: PropagationArgs,
    /// With --propagate: your mask of a frame (nonzero = the object), added to XMem++'s
    /// permanent memory with the dense frames' (on a dense frame it replaces SAM's). FRAME is a
    /// frame number or name; PROMPT the prompt's number (default 0). Repeatable. Rerun into the
    /// same --out with only corrections changed and CLIP, the LLM and SAM are not run again.
    #[arg(
        long = "annotate",
        value_name = "[PROMPT:]FRAME=MASK.png",
        requires = "propagate"
    )]
    pub annotate: Vec<Annotation>,
    /// Live input.
    #[command(flatten)]
    pub live: LiveArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Segmenting frames as they arrive (`--online`).
#[derive(Args, Debug, Clone)]
pub struct LiveArgs {
    /// Segment as frames arrive: the prompt is computed from the first --window frames
    /// (sampled as an offline run samples a video that long), then every frame is segmented as
    /// soon as it is read. Ctrl-C ends the run cleanly (exit 130).
    #[arg(long)]
    pub online: bool,
    /// Frames the prompt stage waits for and samples (--online).
    #[arg(long, default_value_t = 32, value_name = "N", value_parser = super::count::<100000>, requires = "online")]
    pub window: usize,
    /// Frames the input queue holds (--online).
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = super::count::<100000>, requires = "online")]
    pub queue: usize,
    /// Recompute the prompts every K frames after the window from the last --window frames
    /// (sampled as the first window was); with --propagate the new dense frames' masks join
    /// XMem++'s permanent memory. Each refresh runs CLIP and the LLM again.
    #[arg(long, value_name = "K", value_parser = super::count::<1000000>, requires = "online")]
    pub refresh: Option<usize>,
    /// Skip frames that arrive while the queue is full (for live sources; recorded in the
    /// summary) instead of making the producer wait.
    #[arg(long, requires = "online")]
    pub drop: bool,
    /// Also write each frame to stdout as soon as its masks exist: `jsonl` (one JSON line per
    /// frame: index, times, per prompt RLE and foreground) or `y4m` (the overlay video, e.g.
    /// `| ffplay -`). The summary then goes to stderr.
    #[arg(long, value_name = "FORMAT", requires = "online")]
    pub stream: Option<StreamFormat>,
}

impl SegmentArgs {
    /// Runs the command: segments into `--out`, prints the summary, notes and warnings; an
    /// output that could not be written is a failure (the masks are complete regardless).
    pub fn run(&self) -> Result<()> {
        let (summary, ended) = if self.live.online {
            self.segment_live()?
        } else {
            (self.segment()?, Ok(()))
        };
        if self.json {
            print_json(&summary)?;
        } else if self.live.stream.is_some() {
            eprint!("{}", render_text(&summary, &self.out));
        } else {
            print!("{}", render_text(&summary, &self.out));
        }
        for note in summary.propagation.iter().flat_map(|p| &p.notes) {
            eprintln!("note: {note}");
        }
        ended?;
        super::report_warnings(&summary.warnings, &self.out)
    }

    /// `--online`: checks as [`SegmentArgs::segment`] does, then segments frames as they
    /// arrive; returns the summary and how the input ended (an input error or Ctrl-C is an
    /// error after the summary is written).
    fn segment_live(&self) -> Result<(SegmentSummary, Result<()>)> {
        if self.dump.is_some() {
            return Err(Error::Usage("--dump is not available with --online".into()));
        }
        if self.json && self.live.stream.is_some() {
            return Err(Error::Usage(
                "--json and --stream both write to stdout; choose one".into(),
            ));
        }
        let mut run = self.prepare(|| Input::open(&self.video))?;
        let opts = SegmentOptions {
            formats: self.output.formats(run.input.info().fps),
            propagate: run.models.xmem.clone(),
            refresh: self.live.refresh,
            ..self.model.segment_options()
        };
        let online = OnlineOptions {
            window: self.live.window,
            queue: self.live.queue,
            drop: self.live.drop,
            stream: self.live.stream,
        };
        crate::live::catch_interrupts()?;
        let videolisa = &run.models.videolisa;
        let summary = segment_online(videolisa, run.input, &run.prompts, &self.out, &opts, &online)?;
        run.setup.manifest.finish(&self.out)?;
        let ended = how_it_ended(&summary);
        Ok((summary, ended))
    }

    /// Checks everything cheap (options, prompts, the video, the output folder), loads the
    /// models, and segments into `--out`, which then holds exactly this run's results with
    /// its run manifest; returns the summary (also written to `<out>/summary.json`). With
    /// --propagate the prompt stage is kept in the folder and reused by a rerun whose only
    /// change is --annotate (then only XMem++ is loaded and run).
    pub fn segment(&self) -> Result<SegmentSummary> {
        let mut run = self.check(|| open_video(&self.video))?;
        let annotations = self.annotations(run.input.0.info(), run.prompts.len())?;
        let key = self.prompt_stage_key(&run)?;
        if let Some(k) = &key {
            match PromptStageCache::read(&self.out, k)? {
                Lookup::Hit(cache) => return self.rerun(run, *cache, &annotations),
                Lookup::Missing => run.note_prompt_stage("computed (no earlier prompt stage in this folder)"),
                Lookup::Stale => {
                    let why = self.why_recomputed(&run.setup.manifest)?;
                    run.note_prompt_stage(&format!("recomputed: {why}"));
                }
            }
        }
        let mut run = self.finish_prepare(run)?;
        let (video, _spool) = &run.input;
        let opts = SegmentOptions {
            formats: self.output.formats(video.info().fps),
            dump: self.dump.clone(),
            propagate: run.models.xmem.clone(),
            annotations,
            prompt_stage_key: key.zip(run.setup.manifest.info.get("prompt_stage").cloned()),
            ..self.model.segment_options()
        };
        let summary = segment(&run.models.videolisa, video, &run.prompts, Some(&self.out), &opts)?.summary;
        run.setup.manifest.finish(&self.out)?;
        Ok(summary)
    }

    /// The rerun that reuses the folder's prompt stage: loads only XMem++, replaces the earlier
    /// run, and propagates its seeds with this run's corrections.
    fn rerun(
        &self,
        mut run: Checked<(Video, Option<tempfile::TempPath>)>,
        cache: PromptStageCache,
        annotations: &[BTreeMap<usize, GrayImage>],
    ) -> Result<SegmentSummary> {
        run.note_prompt_stage("reused from the earlier run in this folder (only --annotate changed)");
        let xmem_path = run
            .setup
            .xmem
            .clone()
            .ok_or_else(|| Error::Internal("a rerun without XMem's weights".into()))?;
        let xmem = XMem::open(&xmem_path, &run.setup.options.device)?;
        prepare_replace(&self.out, &mut run.setup.manifest, self.force)?;
        let (video, _spool) = &run.input;
        let formats = self.output.formats(video.info().fps);
        let summary = rerun(
            &xmem,
            video,
            cache,
            annotations,
            &run.prompts,
            &self.out,
            &formats,
        )?;
        run.setup.manifest.finish(&self.out)?;
        Ok(summary)
    }

    /// The key of what decides the prompt stage of a --propagate run into a folder (None
    /// otherwise, or for a stream, which has no identity to compare).
    fn prompt_stage_key<T>(&self, run: &Checked<T>) -> Result<Option<String>> {
        if !self.propagation.propagate || is_stream(&self.video) {
            return Ok(None);
        }
        let mut settings = run.setup.manifest.settings.clone();
        settings.remove("annotate");
        let prompts: Vec<(&str, String)> = run
            .prompts
            .iter()
            .map(|p| (p.text.as_str(), format!("{:?}", p.template)))
            .collect();
        let video = input_fingerprint(&[&self.video]);
        Ok(Some(item_fingerprint(&serde_json::json!({
            "settings": settings,
            "prompts": prompts,
            "video": video,
        }))))
    }

    /// Why the folder's prompt stage cannot be reused: the settings that differ from the
    /// earlier run's manifest (corrections aside), or the video or prompts.
    fn why_recomputed(&self, now: &RunManifest) -> Result<String> {
        let Some(previous) = RunManifest::read(&self.out)? else {
            return Ok("the folder's earlier run has no manifest".into());
        };
        let diffs: Vec<String> = now
            .differences(&previous)
            .into_iter()
            .filter(|d| !d.starts_with("annotate:"))
            .collect();
        Ok(if diffs.is_empty() {
            "the video or the prompts changed".into()
        } else {
            diffs.join("; ")
        })
    }

    /// The --annotate masks per prompt (frame → 0/255 mask), each checked against the video.
    fn annotations(
        &self,
        info: &crate::video::VideoInfo,
        prompts: usize,
    ) -> Result<Vec<BTreeMap<usize, GrayImage>>> {
        read_annotations(&self.annotate, info, prompts)
    }

    /// What both modes do before segmenting, in order: the options and prompts, the output
    /// folder, the input (`open`), the dump folder, the folder lock, the manifest (refusing an
    /// input inside what the run replaces), the models, then the earlier run is cleared.
    fn prepare<T>(&self, open: impl FnOnce() -> Result<T>) -> Result<Prepared<T>> {
        let checked = self.check(open)?;
        self.finish_prepare(checked)
    }

    /// [`SegmentArgs::prepare`] up to the models: options, prompts, folder, input, lock,
    /// manifest.
    fn check<T>(&self, open: impl FnOnce() -> Result<T>) -> Result<Checked<T>> {
        let xmem = self.propagation.spec(self.model.offline)?;
        let prompts = self.prompts()?;
        let (sparse, dense) = (self.model.sparse, self.model.dense);
        Sampling::check(sparse, dense)?;
        check_output_folder(&self.out, self.force)?;
        let input = open()?;
        if let Some(dump) = &self.dump {
            check_writable(dump)?;
        }
        let lock = FolderLock::acquire(&self.out, "segment", Shard::WHOLE)?;
        let mut setup = RunSetup::new("segment", &self.model.load_spec(), xmem.as_ref(), sparse, dense)?;
        self.describe(&mut setup.manifest, &prompts)?;
        if !is_stream(&self.video) {
            self.check_input_is_kept(&setup.manifest)?;
        }
        Ok(Checked {
            input,
            prompts,
            setup,
            lock,
        })
    }

    /// Loads the models and clears the earlier run.
    fn finish_prepare<T>(&self, mut c: Checked<T>) -> Result<Prepared<T>> {
        let models = c.setup.load()?;
        prepare_replace(&self.out, &mut c.setup.manifest, self.force)?;
        Ok(Prepared {
            input: c.input,
            prompts: c.prompts,
            setup: c.setup,
            models,
            _lock: c.lock,
        })
    }

    /// Refuses an input inside what this run replaces in `--out` (its own entries, and those of
    /// the earlier run it replaces).
    fn check_input_is_kept(&self, manifest: &RunManifest) -> Result<()> {
        let earlier = RunManifest::read(&self.out)?
            .map(|m| m.entries)
            .unwrap_or_default();
        let entries = manifest.entries.iter().chain(&earlier).map(String::as_str);
        match entry_holding(&self.video, &self.out, entries) {
            Some(entry) => Err(Error::Usage(format!(
                "{}: the video lies inside {}, which this run replaces; move it out of --out or \
                 choose another --out",
                self.video.display(),
                entry.display()
            ))),
            None => Ok(()),
        }
    }

    /// The prompts, each non-empty and free of the special tokens the template places.
    fn prompts(&self) -> Result<Vec<PromptSpec>> {
        if self.prompts.iter().any(|p| p.trim().is_empty()) {
            return Err(Error::Usage("--prompt must not be empty".into()));
        }
        let prompts = PromptSpec::numbered(&self.prompts, self.output.template);
        for p in &prompts {
            check_instruction(&p.template.instruction(&p.text))?;
        }
        Ok(prompts)
    }

    /// Adds what decides a `segment` run's masks (template, mask value) to its manifest, what
    /// it was run on, and the entries it writes.
    fn describe(&self, m: &mut RunManifest, prompts: &[PromptSpec]) -> Result<()> {
        m.settings.insert(
            "template".into(),
            format!("{:?}", self.output.template).to_lowercase(),
        );
        m.settings
            .insert("mask_value".into(), self.output.mask_value.to_string());
        if self.live.online {
            let refresh = self
                .live
                .refresh
                .map(|k| format!(", refresh every {k}"))
                .unwrap_or_default();
            m.settings
                .insert("online".into(), format!("window {}{refresh}", self.live.window));
        }
        m.info.insert("video".into(), self.video.display().to_string());
        for (k, p) in prompts.iter().enumerate() {
            m.info.insert(format!("prompt_{k}"), p.text.clone());
        }
        m.entries = prompts.iter().map(|p| p.dir.clone()).collect();
        m.entries.push("summary.json".into());
        if self.propagation.propagate {
            m.entries.push(CACHE_FILE.into());
        }
        if !self.annotate.is_empty() {
            let files: Vec<PathBuf> = self.annotate.iter().map(|a| a.mask.clone()).collect();
            let given: Vec<String> = self
                .annotate
                .iter()
                .map(|a| format!("{}:{}", a.prompt, a.frame))
                .collect();
            m.settings.insert(
                "annotate".into(),
                format!("{} ({})", given.join(","), fingerprint_files(files)?),
            );
        }
        Ok(())
    }
}

/// A `segment` run checked and holding its folder, before the models load.
struct Checked<T> {
    input: T,
    prompts: Vec<PromptSpec>,
    setup: RunSetup,
    lock: FolderLock,
}

impl<T> Checked<T> {
    /// Records in the manifest what happened to the prompt stage.
    fn note_prompt_stage(&mut self, what: &str) {
        self.setup
            .manifest
            .info
            .insert("prompt_stage".into(), what.into());
    }
}

/// A `segment` run ready to segment: what [`SegmentArgs::prepare`] checked, opened and loaded.
struct Prepared<T> {
    input: T,
    prompts: Vec<PromptSpec>,
    setup: RunSetup,
    models: Models,
    _lock: FolderLock,
}

/// A live run's outcome as an error after its summary is written: Ctrl-C (exit 130) or an
/// input that broke mid-stream (exit 2).
fn how_it_ended(summary: &SegmentSummary) -> Result<()> {
    match summary.online.as_ref().map(|o| (o.status.as_str(), &o.error)) {
        Some(("interrupted", _)) => Err(Error::Interrupted),
        Some((_, Some(e))) => Err(Error::Usage(format!(
            "the input failed after {} frames (their masks and summary.json are written): {e}",
            summary.frames
        ))),
        _ => Ok(()),
    }
}

/// Opens `path` for an offline run; a stream (`-`, a FIFO) is first read to its end into a
/// temporary file (removed when the returned handle drops), so memory stays flat.
pub(crate) fn open_video(path: &Path) -> Result<(Video, Option<tempfile::TempPath>)> {
    if !is_stream(path) {
        return Ok((Video::open(path)?, None));
    }
    let spool = tempfile::NamedTempFile::new()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?
        .into_temp_path();
    let mut to = std::fs::File::create(&spool).map_err(|e| Error::io(&spool, e))?;
    let copied = if path == Path::new("-") {
        std::io::copy(&mut std::io::stdin().lock(), &mut to)
    } else {
        let mut from = std::fs::File::open(path).map_err(|e| Error::input(path, e))?;
        std::io::copy(&mut from, &mut to)
    };
    copied.map_err(|e| Error::io(&spool, e))?;
    let video = Video::open(&spool)
        .map_err(|e| e.relabel(&spool, path))?
        .labelled(path);
    Ok((video, Some(spool)))
}

/// Refuses, before the model loads, an output folder that holds something other than an earlier
/// `segment` run (unless `force`), and proves it writable.
fn check_output_folder(out: &Path, force: bool) -> Result<()> {
    ensure_writable(out)?;
    if force {
        return Ok(());
    }
    match RunManifest::read(out)? {
        Some(m) if m.command == "segment" => Ok(()),
        Some(m) => Err(Error::Usage(format!(
            "{}: the output folder holds a videolisa `{}` run; choose another --out (or pass --force)",
            out.display(),
            m.command
        ))),
        None => {
            let foreign = std::fs::read_dir(out)
                .map_err(|e| Error::io(out, e))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n != MANIFEST_FILE && !crate::lock::is_lock_file(n));
            match foreign {
                None => Ok(()),
                Some(name) => Err(Error::Usage(format!(
                    "{}: the output folder is not empty (it holds `{name}`) and is not an earlier videolisa \
                     segment run; choose a new or empty folder, or pass --force to write into it (prompt_*/ \
                     and summary.json are replaced, other files are left alone)",
                    out.display()
                ))),
            }
        }
    }
}

/// Human-readable summary.
pub fn render_text(s: &SegmentSummary, out: &Path) -> String {
    let mut t = format!(
        "{} frames of {} ({}x{}) on {}; sparse {:?}, dense {:?}\n",
        s.frames,
        s.video.path.display(),
        s.video.width,
        s.video.height,
        s.device,
        s.sparse,
        s.dense
    );
    for p in &s.prompts {
        t += &format!(
            "  {:?} → {} ({} tokens, foreground {:.1}%)\n",
            p.text,
            out.join(&p.dir).display(),
            p.seq_len,
            100.0 * p.foreground
        );
    }
    let c = &s.seconds;
    let xmem = c.xmem.map(|x| format!(", xmem++ {x:.2}")).unwrap_or_default();
    t += &format!(
        "seconds: decode {:.2}, preprocess {:.2}, clip {:.2}, llm {:.2}, sam encode {:.2}, sam decode {:.2}{xmem}, write {:.2}, total {:.2}\n",
        c.decode, c.preprocess, c.clip, c.llm, c.sam_encode, c.sam_decode, c.write, c.total
    );
    t
}
