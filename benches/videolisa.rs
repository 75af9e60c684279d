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

/// Matmul and convolution FLOPs (2 per multiply-add) of the stages that are GEMM-bound,
/// counted from the loaded shapes: CLIP tower + projector over `n_sparse` frames, the LLM
/// prefill of `seq` tokens (the last layer on its last row only, as it runs), SAM's image
/// encoder per frame (windows padded as SAM pads them).
struct StageFlops {
    clip: f64,
    llm: f64,
    sam_encode_per_frame: f64,
}

fn stage_flops(m: &VideoLisa, n_sparse: usize, seq: usize) -> StageFlops {
    let c = &m.vision_tower.config;
    let (d, i, p) = (
        c.hidden_size as f64,
        c.intermediate_size as f64,
        c.patch_size as f64,
    );
    let patches = c.num_patches() as f64;
    let n = patches + 1.0;
    let layer = 2.0 * n * (4.0 * d * d + 2.0 * d * i) + 4.0 * n * n * d;
    let h = m.config.phi3.hidden_size as f64;
    let proj = 2.0 * patches * (m.config.mm_hidden_size as f64 * h + h * h);
    let clip = n_sparse as f64 * (2.0 * patches * 3.0 * p * p * d + c.layers_to_run() as f64 * layer + proj);

    let l = &m.config.phi3;
    let hd = (l.hidden_size / l.num_attention_heads) as f64;
    let kv = l.num_key_value_heads.unwrap_or(l.num_attention_heads) as f64 * hd;
    let window = m.model.config.sliding_window().unwrap_or(usize::MAX);
    let keys: f64 = (0..seq)
        .map(|r| (r + 1).min(window.saturating_add(1)) as f64)
        .sum();
    let (s, im) = (seq as f64, l.intermediate_size as f64);
    let full_layer = 2.0 * s * h * (h + 2.0 * kv) + 2.0 * s * h * h + 6.0 * s * h * im + 4.0 * h * keys;
    let last_layer = 2.0 * s * h * (h + 2.0 * kv) + 2.0 * h * h + 6.0 * h * im + 4.0 * h * seq as f64;
    let llm = (l.num_hidden_layers as f64 - 1.0) * full_layer + last_layer;

    let sc = &m.visual_model.config;
    let g = (sc.img_size / sc.patch_size) as f64;
    let (e, tok) = (sc.embed_dim as f64, g * g);
    let ws = sc.window_size as f64;
    let windows = (g / ws).ceil().powi(2);
    let mut sam = 2.0 * tok * 3.0 * (sc.patch_size as f64).powi(2) * e;
    for b in 0..sc.depth {
        let (wn, side, count) = if sc.global_attn_indexes.contains(&b) {
            (tok, g, 1.0)
        } else {
            (ws * ws, ws, windows)
        };
        let attention = count * (4.0 * wn * wn * e + 4.0 * wn * side * e);
        sam += 2.0 * count * wn * (4.0 * e * e + 2.0 * e * sc.mlp_dim as f64) + attention;
    }
    let o = sc.out_chans as f64;
    sam += 2.0 * tok * e * o + 2.0 * tok * o * o * 9.0;
    StageFlops {
        clip,
        llm,
        sam_encode_per_frame: sam,
    }
}

/// GFLOP/s and the share of `peak` (GFLOP/s), as table cells.
fn rate(flops: Option<f64>, secs: Option<f64>, peak: Option<f64>) -> String {
    match (flops, secs) {
        (Some(f), Some(s)) if s > 0.0 => {
            let g = f / s / 1e9;
            match peak {
                Some(p) => format!("{g:.0} ({:.0} %)", 100.0 * g / p),
                None => format!("{g:.0}"),
            }
        }
        _ => "–".into(),
    }
}

struct Row<'a> {
    name: &'a str,
    ours: f64,
    theirs: Option<f64>,
    flops: Option<f64>,
    peak: Option<f64>,
}

fn row(r: Row) {
    let theirs = r.theirs.map_or("–".into(), |p| format!("{p:.3}"));
    let ratio = match r.theirs {
        Some(p) if r.ours > 0.0 => format!("{:.2}×", p / r.ours),
        _ => "–".into(),
    };
    println!(
        "| {:<11} | {:>9.3} | {theirs:>9} | {ratio:>6} | {} | {} |",
        r.name,
        r.ours,
        rate(r.flops, Some(r.ours), r.peak),
        rate(r.flops, r.theirs, r.peak)
    );
}

/// The reference's stage seconds, or why there are none.
fn reference_run(py: &str, script: &Path, dir: &Path, frames: &Path) -> Result<HashMap<String, f64>, String> {
    let o = std::process::Command::new(py)
        .arg(script)
        .args(["run", dir.to_str().unwrap(), frames.to_str().unwrap()])
        .output()
        .map_err(|e| format!("could not start {py}: {e}"))?;
    let text = String::from_utf8_lossy(&o.stdout);
    let last: Option<serde_json::Map<String, serde_json::Value>> =
        text.lines().last().and_then(|l| serde_json::from_str(l).ok());
    if let Some(m) = last {
        // the numbers (stage seconds, sequence length, peak RSS); versions and names aside
        return Ok(m
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_f64()?)))
            .collect());
    }
    let err = String::from_utf8_lossy(&o.stderr);
    let tail: Vec<&str> = err.lines().rev().take(5).collect();
    Err(format!(
        "{} exited with {} and printed no timings; stderr ends: {}",
        script.display(),
        o.status,
        tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
    ))
}

/// The machine's (steal, total) jiffies from /proc/stat: steal is time the hypervisor gave
/// our vCPUs to someone else, the noise of a shared VM.
fn cpu_ticks() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    Some((*v.get(7)?, v.iter().sum()))
}

/// Steal between two [`cpu_ticks`] readings, in percent of the machine's time.
fn steal_pct(a: Option<(f64, f64)>, b: Option<(f64, f64)>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.1 > a.1 => format!("{:.0} %", 100.0 * (b.0 - a.0) / (b.1 - a.1)),
        _ => "unknown".into(),
    }
}

fn peak_env(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() {
    videolisa::device::keep_large_allocations(); // as the binary does
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
    let ticks0 = cpu_ticks();
    let r = segment(
        &model,
        &video,
        &PromptSpec::numbered(&["the red ball".to_string()], Template::Referring),
        Some(out.path()),
        &opts,
    )
    .unwrap();
    let ticks1 = cpu_ticks();
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
    let script = repo.join("tools/reference/bench_videolisa.py");
    let theirs = if mode == "full" {
        Err(
            "full size: the reference side is not run here (its random weights would take another 13 GB)"
                .to_string(),
        )
    } else if !Path::new(&py).exists() {
        Err(format!("no reference Python at {py} (set VIDEOLISA_PY)"))
    } else {
        reference_run(&py, &script, &dir, &frames)
    };
    let ticks2 = cpu_ticks();
    println!(
        "hypervisor steal while ours ran: {}, while PyTorch ran: {}",
        steal_pct(ticks0, ticks1),
        steal_pct(ticks1, ticks2)
    );
    if let Err(why) = &theirs {
        println!("reference: {why}");
    }
    let theirs = theirs.ok();
    let get = |k: &str| theirs.as_ref().and_then(|m| m.get(k).copied());
    if let (Some(rss), Some(th)) = (get("peak_rss_mb"), get("threads")) {
        println!(
            "reference: peak RSS {rss:.0} MB, {th} threads, sequence {} tokens",
            get("seq_len").map_or("unknown".into(), |n| n.to_string())
        );
    }
    let f = stage_flops(&model, opts.n_sparse, r.prompts[0].seq_len);
    let (p32, p16) = (peak_env("VIDEOLISA_PEAK_F32"), peak_env("VIDEOLISA_PEAK_BF16"));
    let peak_of = |d: DType| if d == DType::BF16 { p16 } else { p32 };
    let o = &model.options;
    println!("GEMM peak (GFLOP/s, measured by the caller): f32 {p32:?}, bf16 {p16:?}");
    println!("| stage       | ours (s)  | PyTorch (s) | ratio | ours GFLOP/s (% of peak) | PyTorch GFLOP/s (% of peak) |");
    println!("|---|---|---|---|---|---|");
    let plain = |name, ours, theirs| Row {
        name,
        ours,
        theirs,
        flops: None,
        peak: None,
    };
    let frames_n = video.len() as f64;
    row(plain("load", load, get("load")));
    row(plain("decode", s.decode, get("decode")));
    row(plain("preprocess", s.preprocess, get("preprocess")));
    row(Row {
        name: "clip",
        ours: s.clip,
        theirs: get("clip"),
        flops: Some(f.clip),
        peak: peak_of(o.clip),
    });
    row(Row {
        name: "llm",
        ours: s.llm,
        theirs: get("llm"),
        flops: Some(f.llm),
        peak: peak_of(o.llm),
    });
    let sam = Some(f.sam_encode_per_frame * frames_n);
    row(Row {
        name: "sam encode",
        ours: s.sam_encode,
        theirs: get("sam_encode"),
        flops: sam,
        peak: peak_of(o.sam),
    });
    row(plain("sam decode", s.sam_decode, get("sam_decode")));
    row(plain("write", s.write, get("write")));
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
    row(plain("total", s.total, py_total));
}
