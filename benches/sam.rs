//! SAM speed: image encoder + mask decoder + post-processing per frame, on CPU (or CUDA with
//! `--features cuda`), side by side with PyTorch on the same weights when `VIDEOLISA_PYTHON`
//! names an interpreter with tools/reference/requirements.txt + segment-anything installed.
//!
//! `VIDEOLISA_SAM_WEIGHTS=/tmp/sam_vit_b cargo bench --bench sam -- [frames] [batch] [f32|bf16]`
//! (make the weights with `python tools/reference/sam_fixtures.py vit_b /tmp/sam_vit_b`).

use candle_core::{DType, Device, Tensor};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use videolisa::model::sam::{Sam, VIDEOLISA_PREFIX};
use videolisa::preprocess::SamTransform;
use videolisa::weights::{Loader, Weights};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let frames: usize = args.first().map_or(Ok(4), |s| s.parse())?;
    let batch: usize = args.get(1).map_or(Ok(1), |s| s.parse())?;
    let dtype = match args.get(2).map(String::as_str) {
        Some("bf16") => DType::BF16,
        _ => DType::F32,
    };
    let dir =
        PathBuf::from(std::env::var("VIDEOLISA_SAM_WEIGHTS").unwrap_or_else(|_| "/tmp/sam_vit_b".into()));
    let device = if cfg!(feature = "cuda") {
        Device::new_cuda(0)?
    } else {
        Device::Cpu
    };
    let w = Arc::new(Weights::open(dir.join("videolisa"))?);
    let sam = Sam::load(&Loader::new(w, dtype, device.clone()).pp(VIDEOLISA_PREFIX))?;
    let c = &sam.config;
    println!(
        "SAM embed {} depth {} heads {} img {} | {frames} frames, batch {batch}, {dtype:?}, {device:?}",
        c.embed_dim, c.depth, c.num_heads, c.img_size
    );
    let t = SamTransform {
        target: c.img_size as u32,
        ..SamTransform::default()
    };
    let img = image::RgbImage::from_fn(640, 360, |x, y| {
        image::Rgb([(x * 7 + y) as u8, (x ^ y) as u8, (x * y) as u8])
    });
    let p = t.apply(&img);
    let (rw, rh) = t.resized_size(640, 360);
    let one = Tensor::from_vec(p.data, (1, 3, p.height, p.width), &device)?;
    let text = Tensor::ones((1, 1, c.prompt_embed_dim), DType::F32, &device)?;
    // warm-up
    let e = sam.encode(&one)?;
    sam.decode_embeddings(&e, &text, false)?;
    let (mut enc_s, mut dec_s) = (0.0, 0.0);
    let start = Instant::now();
    let mut done = 0;
    while done < frames {
        let n = batch.min(frames - done);
        let x = Tensor::cat(&vec![one.clone(); n], 0)?;
        let s = Instant::now();
        let emb = sam.encode(&x)?;
        device.synchronize()?;
        enc_s += s.elapsed().as_secs_f64();
        let s = Instant::now();
        let d = sam.decode_embeddings(&emb, &text, false)?;
        let m = sam.postprocess_masks(&d.low_res_masks, (rh as usize, rw as usize), (360, 640))?;
        let _ = m.gt(0.0)?.to_device(&Device::Cpu)?;
        dec_s += s.elapsed().as_secs_f64();
        done += n;
    }
    let total = start.elapsed().as_secs_f64();
    let ours = frames as f64 / total;
    println!(
        "videolisa: {:.3} frames/s ({:.2} s/frame: encoder {:.2} s, decoder+post {:.3} s)",
        ours,
        total / frames as f64,
        enc_s / frames as f64,
        dec_s / frames as f64
    );
    if let Ok(py) = std::env::var("VIDEOLISA_PYTHON") {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/reference/bench_sam.py");
        let dt = if dtype == DType::BF16 { "bf16" } else { "f32" };
        let dev = if device.is_cuda() { "cuda" } else { "cpu" };
        let out = Command::new(py)
            .arg(script)
            .arg(&dir)
            .arg(frames.to_string())
            .arg(dt)
            .arg(dev)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        print!("{text}");
        if let Some(fps) = text
            .lines()
            .find_map(|l| l.strip_prefix("pytorch fps "))
            .and_then(|v| v.trim().parse::<f64>().ok())
        {
            println!("ratio videolisa / pytorch: {:.2}x", ours / fps);
        } else {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(())
}
