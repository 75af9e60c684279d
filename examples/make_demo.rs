//! Generates the demo clip (`examples/demo/`) or a long synthetic mp4 for benchmarks.
//!
//! `cargo run --release --example make_demo -- [OUT_DIR] [FRAMES WIDTH HEIGHT FPS] [--mp4-only]`
//! With no arguments it rewrites the committed demo (40 frames, 320×240, 10 fps).

use std::path::PathBuf;
use videolisa::demo::DemoClip;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mp4_only = args.iter().any(|a| a == "--mp4-only");
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let out = pos
        .first()
        .map_or_else(|| PathBuf::from("examples/demo"), PathBuf::from);
    let mut clip = DemoClip::default();
    if pos.len() >= 5 {
        clip.frames = pos[1].parse()?;
        clip.width = pos[2].parse()?;
        clip.height = pos[3].parse()?;
        clip.fps = pos[4].parse()?;
    }
    let pb = videolisa::progress::bar(clip.frames as u64, "render");
    clip.write(&out, mp4_only, |_| pb.inc(1))?;
    pb.finish_and_clear();
    println!(
        "wrote {} frames of {}x{} to {}",
        clip.frames,
        clip.width,
        clip.height,
        out.display()
    );
    Ok(())
}
