//! Preprocessing and decoding speed, side by side with the Python reference when
//! `VIDEOLISA_PYTHON` names an interpreter with tools/reference/requirements.txt installed.
//!
//! `cargo bench --bench preprocess [-- VIDEO.mp4]`

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use videolisa::preprocess::{ClipTransform, SamTransform};

/// Median seconds of `reps` runs of `f`.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[reps / 2]
}

fn test_image(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7 + y) as u8, (x ^ y) as u8, (x * y) as u8])
    })
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let clip = ClipTransform::default();
    let sam = SamTransform::default();
    let sizes = [(1280u32, 720u32), (854, 480), (1920, 1080)];
    let mut rust = Vec::new();
    println!("{:<12} {:>12} {:>12}", "frame", "CLIP ms", "SAM ms");
    for (w, h) in sizes {
        let img = test_image(w, h);
        let c = time(9, || {
            std::hint::black_box(clip.apply(&img));
        });
        let s = time(9, || {
            std::hint::black_box(sam.apply(&img));
        });
        println!("{:<12} {:>12.2} {:>12.2}", format!("{w}x{h}"), c * 1e3, s * 1e3);
        rust.push((w, h, c, s));
    }
    if let Ok(py) = std::env::var("VIDEOLISA_PYTHON") {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/reference/bench_preprocess.py");
        let out = Command::new(py)
            .arg(script)
            .output()
            .expect("run the Python reference");
        let text = String::from_utf8_lossy(&out.stdout);
        println!("\nPython reference (transformers CLIPImageProcessor / SAM ResizeLongestSide+normalize):");
        println!(
            "{:<12} {:>12} {:>12} {:>12} {:>12}",
            "frame", "CLIP ms", "SAM ms", "CLIP ratio", "SAM ratio"
        );
        for line in text.lines() {
            let v: Vec<f64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            if v.len() != 4 {
                continue;
            }
            if let Some(r) = rust
                .iter()
                .find(|r| f64::from(r.0) == v[0] && f64::from(r.1) == v[1])
            {
                println!(
                    "{:<12} {:>12.2} {:>12.2} {:>11.2}x {:>11.2}x",
                    format!("{}x{}", v[0], v[1]),
                    v[2] * 1e3,
                    v[3] * 1e3,
                    v[2] / r.2,
                    v[3] / r.3
                );
            }
        }
    }
    if let Some(path) = args.first() {
        let video = videolisa::video::Video::open(path).expect("open video");
        let stats = videolisa::commands::probe::decode_all(&video).expect("decode");
        let i = video.info();
        println!(
            "\ndecode {}: {} frames {}x{} in {:.2} s = {:.1} frames/s",
            path, stats.frames, i.width, i.height, stats.seconds, stats.fps
        );
    }
}
