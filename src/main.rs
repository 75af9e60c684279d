//! The `videolisa` command line: parses arguments and dispatches to the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use videolisa::commands::probe::{self, FrameSelection, ProbeOptions};
use videolisa::commands::segment::{self as seg, SegmentArgs};
use videolisa::output::OutputFormats;
use videolisa::tokenizer::Template;

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
        /// Frames to dump: `dense`, `sparse`, `all` or a list such as `0,5,9`.
        #[arg(long, default_value = "dense")]
        frames: FrameSelection,
        /// Number of sparse frames (T_sparse).
        #[arg(long, default_value_t = videolisa::sampling::DEFAULT_SPARSE)]
        sparse: usize,
        /// Number of dense frames (T_dense).
        #[arg(long, default_value_t = videolisa::sampling::DEFAULT_DENSE)]
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
        /// Output folder: prompt_<k>/<frame>.png per prompt and summary.json.
        #[arg(long)]
        out: PathBuf,
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
        dtype: Option<String>,
        /// `cpu`, `cuda` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// How the prompt is worded for the model.
        #[arg(long, value_enum, default_value_t = Template::Referring)]
        template: Template,
        /// Also write overlay PNGs and an overlay mp4.
        #[arg(long)]
        overlay: bool,
        /// Also write COCO RLE JSON (masks.rle.json) per prompt.
        #[arg(long)]
        rle: bool,
        /// Foreground value of the mask PNGs (100 for the Ref-DAVIS raw layout).
        #[arg(long, default_value_t = 255)]
        mask_value: u8,
        /// Write intermediates (ids, sampled indices, visual tokens, prompt, logits) to DIR.
        #[arg(long, value_name = "DIR")]
        dump: Option<PathBuf>,
        /// Number of sparse frames (T_sparse).
        #[arg(long, default_value_t = videolisa::sampling::DEFAULT_SPARSE)]
        sparse: usize,
        /// Number of dense frames (T_dense).
        #[arg(long, default_value_t = videolisa::sampling::DEFAULT_DENSE)]
        dense: usize,
        /// Frames per SAM image-encoder batch.
        #[arg(long, default_value_t = 1)]
        sam_batch: usize,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
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
            let report = probe::run(&video, &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", probe::render_text(&report));
            }
        }
        Command::Segment {
            video,
            prompts,
            out,
            model,
            clip,
            offline,
            dtype,
            device,
            template,
            overlay,
            rle,
            mask_value,
            dump,
            sparse,
            dense,
            sam_batch,
            json,
        } => {
            let fps = videolisa::video::Video::open(&video)?.info().fps.unwrap_or(10.0);
            let args = SegmentArgs {
                formats: OutputFormats {
                    mask_value,
                    overlay_png: overlay,
                    overlay_mp4: overlay.then_some(fps),
                    rle,
                    ..OutputFormats::default()
                },
                video,
                prompts,
                out: out.clone(),
                model,
                clip,
                offline,
                dtype,
                device,
                template,
                sparse,
                dense,
                sam_batch,
                dump,
            };
            let summary = seg::run(&args)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", seg::render_text(&summary, &out));
            }
        }
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
