//! The `videolisa` command line: parses arguments and dispatches to the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use videolisa::commands::probe::{self, FrameSelection, ProbeOptions};

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
