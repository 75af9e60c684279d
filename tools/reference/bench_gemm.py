"""The machine's GEMM peak as PyTorch reaches it: best of 5 runs of a 4096² matmul in f32 and in
bf16 (oneDNN; AMX where the CPU has it), with the thread count the stage benchmarks use.

  python tools/reference/bench_gemm.py [THREADS]     # one JSON line: {"f32": GFLOP/s, "bf16": ...}
"""
import json
import sys
import time

import torch


def peak(dtype, n=4096, reps=5):
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def main():
    if len(sys.argv) > 1:
        torch.set_num_threads(int(sys.argv[1]))
    out = {"f32": peak(torch.float32), "bf16": peak(torch.bfloat16), "threads": torch.get_num_threads(),
           "torch": torch.__version__}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
