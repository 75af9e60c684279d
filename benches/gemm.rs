//! candle's CPU matmul throughput at a square size and at the model's shapes, f32 and bf16,
//! against which `tools/bench/cpu.sh` sets each stage's achieved GFLOP/s; then our bf16
//! `Linear` (AMX tiles or AVX-512 BF16 where the CPU has them) against candle's bf16 matmul at the LLM's shapes.
//!
//!   cargo bench --bench gemm            # prints one line per shape: dtype, m×k×n, GFLOP/s

use candle_core::{DType, Device, Module, Tensor};
use std::time::Instant;
use videolisa::model::linear::Linear;

fn random(shape: (usize, usize), dtype: DType) -> Tensor {
    Tensor::randn(0f32, 1.0, shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("operand")
}

/// GFLOP/s of the best of `reps` runs of `f` (after one warm-up) for an `m × k × n` product.
fn best_gflops((m, k, n): (usize, usize, usize), reps: usize, f: impl Fn() -> Tensor) -> f64 {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * k * n) as f64 / best / 1e9
}

fn gflops(m: usize, k: usize, n: usize, dtype: DType, reps: usize) -> f64 {
    let (a, b) = (random((m, k), dtype), random((k, n), dtype));
    best_gflops((m, k, n), reps, || a.matmul(&b).expect("matmul"))
}

/// Our bf16 `Linear` (x · wᵀ) and candle's bf16 matmul on the same operands.
fn linear_bf16(m: usize, k: usize, n: usize, reps: usize) -> (f64, f64) {
    let (x, w) = (random((m, k), DType::BF16), random((n, k), DType::BF16));
    let layer = Linear::new(w.clone(), None);
    let ours = best_gflops((m, k, n), reps, || layer.forward(&x).expect("linear"));
    let wt = w.t().expect("transpose");
    let candle = best_gflops((m, k, n), reps, || x.matmul(&wt).expect("matmul"));
    (ours, candle)
}

fn main() {
    let shapes = [
        ("square", 4096, 4096, 4096),
        ("clip qkv", 577, 1024, 3072),
        ("sam mlp", 4096, 1280, 5120),
        ("phi3 mlp", 2373, 3072, 16384),
    ];
    for dtype in [DType::F32, DType::BF16] {
        for (name, m, k, n) in shapes {
            let g = gflops(m, k, n, dtype, 3);
            println!("gemm {dtype:?} {name} {m}x{k}x{n}: {g:.1} GFLOP/s");
        }
    }
    let kernel = if videolisa::model::amx::available() {
        "AMX"
    } else if videolisa::model::dpbf16::available() {
        "AVX-512 BF16"
    } else {
        "neither AMX nor AVX-512 BF16: candle's matmul"
    };
    for (name, m, k, n) in [
        ("phi3 qkv", 2373, 3072, 9216),
        ("phi3 mlp down", 2373, 8192, 3072),
    ] {
        let (ours, candle) = linear_bf16(m, k, n, 3);
        println!(
            "linear bf16 {name} {m}x{k}x{n}: ours ({kernel}) {ours:.1} GFLOP/s, candle {candle:.1} GFLOP/s, {:.2}x",
            ours / candle
        );
    }
}
