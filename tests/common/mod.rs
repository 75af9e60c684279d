//! Helpers shared by the integration tests.
#![allow(dead_code)]

use image::RgbImage;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// The repository root: where the tests were built, or `VIDEOLISA_REPO` (test binaries
/// carried to another machine, tools/gpu/check.sh).
fn root() -> PathBuf {
    std::env::var_os("VIDEOLISA_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Path of a committed fixture.
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// Path inside the repository.
pub fn repo(path: &str) -> PathBuf {
    root().join(path)
}

/// The device the parity tests run on: `VIDEOLISA_TEST_DEVICE` (`cpu`, `cuda`, `cuda:N`;
/// default cpu), so tools/gpu/check.sh runs the same tests, fixtures and bounds on a GPU.
pub fn device() -> candle_core::Device {
    match std::env::var("VIDEOLISA_TEST_DEVICE") {
        Ok(s) => s
            .parse::<videolisa::device::DeviceSpec>()
            .and_then(|d| d.device().map_err(|e| e.to_string()))
            .unwrap_or_else(|e| panic!("VIDEOLISA_TEST_DEVICE={s}: {e}")),
        Err(_) => candle_core::Device::Cpu,
    }
}

/// Hex SHA-256 of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The deterministic test image of tools/reference/common.py::test_image.
pub fn test_image(w: u32, h: u32, seed: u64) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let mut px = [0u8; 3];
        for (c, v) in px.iter_mut().enumerate() {
            let (xi, yi, ci) = (u64::from(x), u64::from(y), c as u64);
            let ramp = (xi * (ci + 1) * 3 + yi * (3 - ci) * 5 + seed * 17) % 256;
            let noise = (h32(xi, yi, ci, seed) % 64) as i64 - 32;
            *v = (ramp as i64 + noise).clamp(0, 255) as u8;
        }
        image::Rgb(px)
    })
}

/// The 32-bit hash of tools/reference/common.py::h32.
pub fn h32(x: u64, y: u64, c: u64, seed: u64) -> u64 {
    let mut v = (x.wrapping_mul(73_856_093)
        ^ y.wrapping_mul(19_349_663)
        ^ c.wrapping_mul(83_492_791)
        ^ seed.wrapping_mul(2_654_435_761))
        & 0xFFFF_FFFF;
    v ^= v >> 13;
    v = (v * 0x5BD1_E995) & 0xFFFF_FFFF;
    v ^= v >> 15;
    v
}

/// Max |a − b| divided by max |b| (relative to the reference's magnitude), and max |a − b|.
pub fn rel_err(a: &candle_core::Tensor, b: &candle_core::Tensor) -> (f64, f64) {
    assert_eq!(a.dims(), b.dims(), "shape");
    let flat = |t: &candle_core::Tensor| -> Vec<f64> {
        t.to_dtype(candle_core::DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    let (a, b) = (flat(a), flat(b));
    let max_abs = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let scale = b.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1e-12);
    (max_abs / scale, max_abs)
}

/// Loads every tensor of a safetensors file onto the test [`device`].
pub fn load_tensors(path: &std::path::Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(path, &device()).unwrap()
}

/// Runs the `videolisa` binary (from the crate root, without `HF_HUB_OFFLINE`).
pub fn videolisa(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_videolisa"))
        .args(args)
        .env_remove("HF_HUB_OFFLINE")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

/// `videolisa synthetic --dataset DATASET --out ROOT EXTRA…`, which must succeed.
pub fn synthetic(dataset: &str, root: &std::path::Path, extra: &[&str]) {
    let mut a = vec!["synthetic", "--dataset", dataset, "--out", root.to_str().unwrap()];
    a.extend(extra);
    let o = videolisa(&a);
    assert!(o.status.success(), "{}", text(&o));
}

/// A run's stdout and stderr, for assertions and failure messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `--model DIR --clip DIR` of the tiny checkpoint.
pub fn tiny_args() -> [String; 4] {
    let t = fixture("videolisa_tiny");
    [
        "--model".into(),
        t.join("model").display().to_string(),
        "--clip".into(),
        t.join("clip").display().to_string(),
    ]
}

/// `videolisa batch ARGS --model … --clip …` with the tiny checkpoint.
pub fn batch(args: &[&str]) -> std::process::Output {
    let t = tiny_args();
    let mut a: Vec<&str> = vec!["batch"];
    a.extend(args);
    a.extend(t.iter().map(String::as_str));
    videolisa(&a)
}

/// The lines of a batch output folder's `results.jsonl`.
pub fn results(out: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A folder under `root` holding the first `n` frames `frame_%06d.png` of the fixture folder
/// `frames` (a shorter clip for CLI tests).
pub fn first_frames(frames: &str, n: usize, root: &std::path::Path) -> PathBuf {
    let dir = root.join("frames");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        let name = format!("frame_{i:06}.png");
        std::fs::copy(fixture(frames).join(&name), dir.join(&name)).unwrap();
    }
    dir
}
