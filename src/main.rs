//! The `videolisa` command line: parses the arguments into one typed struct per subcommand and
//! runs it; errors become exit codes (0 ok, 1 runtime failure, 2 bad usage or input).

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use videolisa::commands::batch::BatchArgs;
use videolisa::commands::eval::{EvalArgs, ScoreArgs};
use videolisa::commands::probe::ProbeArgs;
use videolisa::commands::propagate::PropagateArgs;
use videolisa::commands::segment::SegmentArgs;
use videolisa::commands::synthetic::SyntheticArgs;

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

/// One variant per subcommand; each argument struct's doc comment is its help.
#[derive(Subcommand)]
enum Command {
    Probe(ProbeArgs),
    Segment(SegmentArgs),
    Propagate(PropagateArgs),
    Batch(BatchArgs),
    Eval(EvalArgs),
    Score(ScoreArgs),
    Synthetic(SyntheticArgs),
}

impl Command {
    fn run(&self) -> anyhow::Result<()> {
        match self {
            Command::Probe(a) => a.run()?,
            Command::Segment(a) => a.run()?,
            Command::Propagate(a) => a.run()?,
            Command::Batch(a) => a.run()?,
            Command::Eval(a) => a.run()?,
            Command::Score(a) => a.run()?,
            Command::Synthetic(a) => a.run()?,
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    videolisa::device::keep_large_allocations();
    videolisa::progress::set_quiet(cli.quiet);
    match cli.command.run() {
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
