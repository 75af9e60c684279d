#!/usr/bin/env bash
# The GPU check: one device call (about 6 minutes on an H200) after tools/gpu/prepare.sh.
#   1. the parity suite on CUDA in f32 against the committed fixtures and the CPU bounds (the
#      CUDA builds of tests/sam_parity.rs, videolisa_parity.rs, xmem_parity.rs), then bf16
#      against our own f32 on the tiny checkpoint (reported);
#   2. the full-size benchmark: random weights in the real VideoLISA-3.8B + CLIP-L/336 + SAM-H
#      shapes, a 1280×720 JPEG clip of 100 and of 1,000 frames; ours (default bf16) against the
#      PyTorch reference (tools/reference/bench_videolisa.py: the official evaluate's order, bf16)
#      on the same GPU in the same run: seconds per stage, SAM encoder frames/s, LLM prefill,
#      peak GPU memory (nvidia-smi, sampled every 100 ms), mask agreement.
# Writes $OUT/report.json, report.txt, check.log and parity.log; prints the report last.
#
#   device run:  tools/gpu/check.sh          carry [".gpu"], timeout_s 560
#   here:        tools/gpu/check.sh --dry    CPU, 2-layer models, 6/12 frames: checks the script
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
dry=0
[ "${1:-}" = --dry ] && dry=1
out=${OUT:-$repo/target/gpu-check}
work=${GPU_WORK:-/tmp/gpucheck}
rm -rf "$work" && mkdir -p "$out" "$work"
exec > >(tee -a "$out/check.log") 2>&1
step() { echo "== $(date +%T) [$SECONDS s] $*"; }
py=${PYTHON:-python3}

if [ $dry = 1 ]; then
    device=cpu size=dry small=6 large=12 bin=$repo/target/release/videolisa
else
    device=cuda size=full small=100 large=1000 bin=$work/bin/videolisa
    step unpacking .gpu
    mkdir -p "$work/bin"
    for f in .gpu/bin/*.xz; do
        xz -dc "$f" >"$work/bin/$(basename "$f" .xz)" 2>/dev/null \
            || $py -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
                "$f" "$work/bin/$(basename "$f" .xz)"
    done
    chmod +x "$work/bin/"*
    cat .gpu/BUILD
    $py -m pip install -q --no-index --no-deps --no-compile --target "$work/site" .gpu/whl/*.whl
    export PYTHONPATH=$work/site${PYTHONPATH:+:$PYTHONPATH}
    # candle links CUDA 13's libraries: PyTorch's copies (the same versions), the driver's libcuda
    cu13=$($py -c 'import glob, os, site
print(next(iter(glob.glob(os.path.join(p, "nvidia", "cu13", "lib")) for p in site.getsitepackages() if glob.glob(os.path.join(p, "nvidia", "cu13", "lib"))), [""])[0])')
    [ -n "$cu13" ] || cu13=$(dirname "$(find / -name 'libcublas.so.13*' -not -path '/proc/*' 2>/dev/null | head -1)")
    export LD_LIBRARY_PATH=$cu13:/usr/local/nvidia/lib64:/usr/local/nvidia/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    ldd "$bin" | grep -E "cuda|cublas|curand|not found"
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv | tee "$work/gpu.csv"
fi
$py -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'

if [ $dry = 0 ]; then
    step "parity suite on CUDA (f32, the CPU bounds)"
    : >"$work/parity.tsv"
    for t in sam_parity videolisa_parity xmem_parity; do
        VIDEOLISA_TEST_DEVICE=cuda VIDEOLISA_REPO=$repo timeout 240 "$work/bin/$t" --test-threads 1 --nocapture \
            >"$work/parity_$t.log" 2>&1
        rc=$?
        printf '%s\t%s\n' "$t" "$rc" >>"$work/parity.tsv"
        grep -E "^test |relative|IoU|differ|parity|worst|test result" "$work/parity_$t.log" | tail -40
    done
    step "bf16 against our f32 (tiny checkpoint, reported)"
    VIDEOLISA_TEST_DEVICE=cuda VIDEOLISA_REPO=$repo "$work/bin/videolisa_parity" --ignored --nocapture \
        bf16_masks_against_f32_are_reported >"$work/parity_bf16.log" 2>&1
    printf 'bf16_report\t%s\n' "$?" >>"$work/parity.tsv"
    grep "bf16 vs f32" "$work/parity_bf16.log"
    cat "$work"/parity_*.log >"$out/parity.log"
fi

step "random $size-size checkpoint"
$py tools/reference/bench_videolisa.py make "$size" "$work/w" --device "$device" || exit 1
step "clip: $large JPEG frames 1280x720"
$py tools/gpu/make_frames.py "$work/frames$large" "$large" 1280 720 || exit 1
mkdir -p "$work/frames$small"
for f in $(ls "$work/frames$large" | head -n "$small"); do ln -s "$work/frames$large/$f" "$work/frames$small/$f"; done

# runs "$@" with GPU memory sampled; writes $work/$name.run.json (wall seconds, rc, peak MiB)
measured() {
    local name=$1
    shift
    local smi=""
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$work/$name.mem" &
        smi=$!
        sleep 0.5
    fi
    local t0 rc t1
    t0=$(date +%s.%N)
    "$@" >"$work/$name.stdout" 2>"$work/$name.stderr"
    rc=$?
    t1=$(date +%s.%N)
    [ -n "$smi" ] && kill "$smi" && wait "$smi" 2>/dev/null
    $py - "$work/$name" "$t0" "$t1" "$rc" <<'PY'
import json, os, sys
base, t0, t1, rc = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
mem = [int(l) for l in open(base + ".mem")] if os.path.exists(base + ".mem") else []
json.dump({"wall": t1 - t0, "rc": rc, "peak_mib": max(mem) if mem else None,
           "baseline_mib": mem[0] if mem else None}, open(base + ".run.json", "w"))
PY
    echo "$name: rc $rc, $(cat "$work/$name.run.json")"
    [ $rc = 0 ] || tail -5 "$work/$name.stderr"
}
ours() { # name frames [extra args]
    local name=$1 frames=$2
    shift 2
    measured "$name" "$bin" segment --model "$work/w/model" --clip "$work/w/clip" --video "$work/frames$frames" \
        -p "red ball" --out "$work/$name" --device "$device" --force "$@"
}
step "ours, $small frames (first process: kernels compiled by the driver)"
ours ours_cold "$small"
step "ours, $small frames"
ours ours_small "$small"
step "PyTorch reference, $small frames"
measured py_small $py tools/reference/bench_videolisa.py run "$work/w" "$work/frames$small" --device "$device" \
    --ids tools/gpu/prompt_ids.json --out "$work/py_small_masks"
$py tools/gpu/compare_masks.py "$work/ours_small/prompt_0" "$work/py_small_masks" | tee "$work/agreement.json"
step "ours, $large frames"
ours ours_large "$large"
if [ $SECONDS -lt 280 ]; then
    step "ours, $small frames, --sam-batch 1"
    ours ours_batch1 "$small" --sam-batch 1
fi
if [ $dry = 0 ] && [ $SECONDS -lt 300 ]; then # the official code holds every frame on the GPU
    step "PyTorch reference, $large frames"
    measured py_large $py tools/reference/bench_videolisa.py run "$work/w" "$work/frames$large" --device "$device" \
        --ids tools/gpu/prompt_ids.json --out "$work/py_large_masks"
fi
step report
$py tools/gpu/report.py "$work" "$out" "$small" "$large"
