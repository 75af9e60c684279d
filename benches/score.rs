//! Scoring throughput (J and F per frame, 480×854 real-shaped masks) against the official
//! davis2017-evaluation Python code on the same masks, side by side.
//!
//!   DAVIS2017_EVAL=/path/to/davis2017-evaluation VIDEOLISA_EVAL_PY=/path/to/python cargo bench --bench score -- [FRAMES]

use rayon::prelude::*;
use std::time::Instant;
use videolisa::eval::metrics::{f_measure, jaccard, BinMask};

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(300);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/davis_masks");
    let mut pairs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for g in files
        .iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("osvos_"))
    {
        let p = g.with_file_name(
            g.file_name()
                .unwrap()
                .to_string_lossy()
                .replace("osvos_", "rvos_"),
        );
        let read = |p: &std::path::Path| {
            let m = videolisa::output::read_mask_png(p).unwrap();
            BinMask::from_bytes(m.width() as usize, m.height() as usize, m.as_raw())
        };
        pairs.push((read(g), read(&p)));
    }
    let one = |i: usize| {
        let (g, p) = &pairs[i % pairs.len()];
        jaccard(g, p, None) + f_measure(g, p, None)
    };
    let t = Instant::now();
    let s1: f64 = (0..n).map(one).sum();
    let single = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let s2: f64 = (0..n).into_par_iter().map(one).sum();
    let parallel = n as f64 / t.elapsed().as_secs_f64();
    assert!((s1 - s2).abs() < 1e-6);
    println!(
        "ours: {single:.1} frames/s on 1 thread, {parallel:.1} frames/s on {} threads (checksum {s1:.9})",
        rayon::current_num_threads()
    );
    let py = std::env::var("VIDEOLISA_EVAL_PY").unwrap_or_else(|_| "/work/venv/eval/bin/python".into());
    if std::env::var("DAVIS2017_EVAL").is_ok() && std::path::Path::new(&py).exists() {
        let o = std::process::Command::new(&py)
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/reference/bench_score.py"))
            .arg(&dir)
            .arg(n.to_string())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        let v: serde_json::Value =
            serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap_or_default();
        if let Some(fps) = v["frames_per_s"].as_f64() {
            println!(
                "davis2017-evaluation: {fps:.1} frames/s (checksum {:.9}) → ratio {:.1}× (1 thread), {:.1}× (all threads)",
                v["checksum"].as_f64().unwrap_or(f64::NAN),
                single / fps,
                parallel / fps
            );
        } else {
            println!("reference failed: {}", String::from_utf8_lossy(&o.stderr));
        }
    } else {
        println!("set DAVIS2017_EVAL (and VIDEOLISA_EVAL_PY) to compare with the official code");
    }
}
