//! `videolisa synthetic`: a small dataset in a benchmark's layout, with known masks, for
//! trying `eval` and `score` without downloading a benchmark.

use super::count;
use crate::error::Result;
use crate::eval::datasets::DatasetKind;
use crate::eval::synthetic::{write, SyntheticSpec};
use clap::Args;
use std::path::PathBuf;

/// Write a small synthetic dataset in a benchmark's layout (for trying eval/score).
#[derive(Args, Debug, Clone)]
pub struct SyntheticArgs {
    /// Layout.
    #[arg(long, value_enum)]
    pub dataset: DatasetKind,
    /// Where to write it.
    #[arg(long)]
    pub out: PathBuf,
    /// Videos (at most 10000).
    #[arg(long, default_value_t = 3, value_parser = count::<10_000>)]
    pub videos: usize,
    /// Frames per video (at most 10000).
    #[arg(long, default_value_t = 6, value_parser = count::<10_000>)]
    pub frames: usize,
}

impl SyntheticArgs {
    /// Writes the dataset and says where.
    pub fn run(&self) -> Result<()> {
        let spec = SyntheticSpec {
            videos: self.videos,
            frames: self.frames,
            ..Default::default()
        };
        crate::run_manifest::ensure_writable(&self.out)?;
        let split = write(self.dataset, &self.out, &spec)?;
        println!("wrote {} (split `{split}`)", self.out.display());
        Ok(())
    }
}
