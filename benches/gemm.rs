//! candle's CPU matmul throughput at a square size and at the model's shapes, f32 and bf16,
//! against which `tools/bench/cpu.sh` sets each stage's achieved GFLOP/s.
//!
//!   cargo bench --bench gemm            # prints one line per shape: dtype, m×k×n, GFLOP/s

use candle_core::{DType, Device, Tensor};
use std::time::Instant;

fn gflops(m: usize, k: usize, n: usize, dtype: DType, reps: usize) -> f64 {
    let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("lhs");
    let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("rhs");
    a.matmul(&b).expect("warm-up");
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        a.matmul(&b).expect("matmul");
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * k * n) as f64 / best / 1e9
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
}
