//! End-to-end VideoLISA timings per stage, side by side with the Python reference.
//!
//!   cargo bench --bench videolisa -- tiny            # tests/fixtures/videolisa_tiny, demo clip (40 frames)
//!   cargo bench --bench videolisa -- mid DIR         # from `bench_videolisa.py make mid DIR`, 2 frames
//!   cargo bench --bench videolisa -- full DIR        # `bench_videolisa.py manifest full DIR`: random
//!                                                    # full-size weights made in memory, 2 frames, ours only
//!
//! Side-by-side runs use f32 everywhere on both sides (2 threads); `full` uses the default
//! dtypes (LLM bf16, CLIP and SAM f32) and reports the peak RSS. Set VIDEOLISA_PY to the Python
//! of the reference environment (default /work/venv/ref/bin/python; skipped if absent).

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use videolisa::model::videolisa::{LoadOptions, ModelPaths, VideoLisa};
use videolisa::segment::{segment, PromptSpec, SegmentOptions, StageSeconds};
use videolisa::tokenizer::Template;
use videolisa::video::Video;
use videolisa::weights::Weights;

fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn frames_dir(n: usize, w: u32, h: u32) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for t in 0..n {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                ((x * 3 + t as u32 * 7) % 256) as u8,
                ((y * 5) % 256) as u8,
                (((x + y) * 2) % 256) as u8,
            ])
        });
        img.save(d.path().join(format!("{t:05}.png"))).unwrap();
    }
    d
}

fn random_weights(
    manifest: &serde_json::Value,
    key: &str,
    dtype_of: &dyn Fn(&str) -> DType,
) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for (name, shape) in manifest[key].as_object().unwrap() {
        let shape: Vec<usize> = shape
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let dt = dtype_of(name);
        let t = if name.contains("norm") && name.ends_with("weight") {
            Tensor::ones(shape, dt, &Device::Cpu).unwrap()
        } else {
            (Tensor::randn(0f32, 0.02, shape, &Device::Cpu).unwrap())
                .to_dtype(dt)
                .unwrap()
        };
        out.insert(name.clone(), t);
    }
    out
}

fn row(name: &str, ours: f64, theirs: Option<f64>) {
    match theirs {
        Some(p) if ours > 0.0 => println!("| {name:<11} | {ours:>9.3} | {p:>9.3} | {:>6.2}× |", p / ours),
        Some(p) => println!("| {name:<11} | {ours:>9.3} | {p:>9.3} |      – |"),
        None => println!("| {name:<11} | {ours:>9.3} |         – |      – |"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mode = args.first().map_or("tiny", String::as_str).to_string();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = match mode.as_str() {
        "tiny" => repo.join("tests/fixtures/videolisa_tiny"),
        _ => PathBuf::from(
            args.get(1)
                .expect("mid/full need the directory made by bench_videolisa.py"),
        ),
    };
    let paths = ModelPaths {
        model: dir.join("model"),
        clip: dir.join("clip"),
    };
    let f32_all = LoadOptions {
        llm: DType::F32,
        clip: DType::F32,
        sam: DType::F32,
        device: Device::Cpu,
    };
    let (frames, _keep) = if mode == "tiny" {
        (repo.join("examples/demo/frames"), None)
    } else {
        let d = frames_dir(2, 640, 360);
        (d.path().to_path_buf(), Some(d))
    };
    let t = Instant::now();
    let model = if mode == "full" {
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
        let o = LoadOptions::defaults(Device::Cpu);
        let (llm, sam) = (o.llm, o.sam);
        let m = random_weights(&manifest, "model", &|n: &str| {
            if n.contains("visual_model") {
                sam
            } else {
                llm
            }
        });
        let c = random_weights(&manifest, "clip", &|_| o.clip);
        println!(
            "random full-size weights made in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        VideoLisa::load_with(
            &paths,
            Arc::new(Weights::from_tensors("random", m)),
            Arc::new(Weights::from_tensors("random", c)),
            o,
        )
        .unwrap()
    } else {
        VideoLisa::load(&paths, f32_all).unwrap()
    };
    let load = t.elapsed().as_secs_f64();
    let video = Video::open(&frames).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = SegmentOptions::default();
    let r = segment(
        &model,
        &video,
        &PromptSpec::numbered(&["the red ball".to_string()], Template::Referring),
        Some(out.path()),
        &opts,
    )
    .unwrap();
    let s: StageSeconds = r.summary.seconds.clone();
    println!(
        "{mode}: {} frames {}x{}, sequence {} tokens, dtypes {:?}, peak RSS {:.0} MB",
        video.len(),
        video.info().width,
        video.info().height,
        r.prompts[0].seq_len,
        r.summary.dtypes,
        peak_rss_mb()
    );
    let py = std::env::var("VIDEOLISA_PY").unwrap_or_else(|_| "/work/venv/ref/bin/python".into());
    let theirs: Option<HashMap<String, f64>> = if mode != "full" && Path::new(&py).exists() {
        let o = std::process::Command::new(&py)
            .arg(repo.join("tools/reference/bench_videolisa.py"))
            .args(["run", dir.to_str().unwrap(), frames.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        text.lines().last().and_then(|l| serde_json::from_str(l).ok())
    } else {
        None
    };
    let get = |k: &str| theirs.as_ref().and_then(|m| m.get(k).copied());
    println!("| stage       | ours (s)  | PyTorch (s) | ratio |");
    println!("|---|---|---|---|");
    row("load", load, get("load"));
    row("decode", s.decode, get("decode"));
    row("preprocess", s.preprocess, get("preprocess"));
    row("clip", s.clip, get("clip"));
    row("llm", s.llm, get("llm"));
    row("sam encode", s.sam_encode, get("sam_encode"));
    row("sam decode", s.sam_decode, get("sam_decode"));
    row("write", s.write, get("write"));
    let py_total = theirs.as_ref().map(|m| {
        [
            "decode",
            "preprocess",
            "clip",
            "llm",
            "sam_encode",
            "sam_decode",
            "write",
        ]
        .iter()
        .filter_map(|k| m.get(*k))
        .sum()
    });
    row("total", s.total, py_total);
}
