#!/usr/bin/env bash
# CPU speed side by side with the PyTorch reference, in one run, same threads, same weights:
#
#   tools/bench/cpu.sh [peak] [mid] [xmem] [full]      # default: peak mid xmem
#
#   peak  the machine's GEMM peak as PyTorch reaches it (4096² f32 and bf16), and candle's
#         matmul at that size and at the model's shapes (`cargo bench --bench gemm`)
#   mid   VideoLISA, mid-size random checkpoint (Phi-3 8 layers × 3072, CLIP-L 8 layers, SAM-H
#         widths 8 blocks), 2 frames 640×360, both sides f32: seconds per stage, ratio, GFLOP/s
#         counted from the shapes and % of the peak (`cargo bench --bench videolisa -- mid`)
#   xmem  XMem++ on a long clip: `videolisa propagate` against XMem2's `run_on_video`, full-size
#         random XMem (ResNet-50/18), XMEM_FRAMES frames (default 100) of 640×480, masks on 3
#         frames, --mem-every 5 (consolidations happen); seconds and peak RSS of both
#   full  full-size VideoLISA shapes, random weights, default dtypes, 2 frames, ours only
#
# REPS=n repeats `mid` and `xmem` n times, the two sides alternating, and prints the median
# ratios: on a shared VM one slow spell lands on one side of a single run (each `xmem` run and
# the `mid` bench print the hypervisor's steal time while each side ran).
#
# Needs: VIDEOLISA_PY (a Python with tools/reference/requirements.txt; default
# /work/venv/ref/bin/python), XMEM2 (a checkout of XMem2 @ adc7d4c) for `xmem`. Checkpoints are
# made once under BENCH_DIR (default /tmp/videolisa-bench). Threads: RAYON_NUM_THREADS and
# torch both use THREADS (default: all cores). Run it on a quiet machine: nothing else may
# share the cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${VIDEOLISA_PY:-/work/venv/ref/bin/python}
dir=${BENCH_DIR:-/tmp/videolisa-bench}
threads=${THREADS:-$(nproc)}
frames=${XMEM_FRAMES:-100}
reps=${REPS:-1}
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads VIDEOLISA_PY=$py
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(peak mid xmem)
for step in "${steps[@]}"; do
    case $step in peak | mid | xmem | full) ;; *) echo "unknown step $step (peak, mid, xmem, full)" >&2; exit 2 ;; esac
done
mkdir -p "$dir"
echo "# cpu.sh $(date -u +%FT%TZ), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads, $(git rev-parse --short HEAD)"
cargo build --release --quiet
cargo bench --no-run --quiet --bench gemm --bench videolisa 2>/dev/null

# jiffies of the whole machine: "steal total" (steal is time the hypervisor gave our vCPUs to
# someone else: the noise of these machines)
ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print $9, t}' /proc/stat; }
steal() { awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " "); d = y[2] - x[2]; printf "%.0f%%", (d > 0 ? 100 * (y[1] - x[1]) / d : 0)}'; }

peak() {
    "$py" tools/reference/bench_gemm.py "$threads" > "$dir/peak.json"
    read -r P32 P16 < <("$py" -c "import json;d=json.load(open('$dir/peak.json'));print(d['f32'],d['bf16'])")
    export VIDEOLISA_PEAK_F32=$P32 VIDEOLISA_PEAK_BF16=$P16
}

for step in "${steps[@]}"; do
    case $step in
    peak)
        peak
        echo "## GEMM peak, PyTorch $(cat "$dir/peak.json")"
        cargo bench --quiet --bench gemm 2>/dev/null
        ;;
    mid)
        [ -n "${VIDEOLISA_PEAK_F32:-}" ] || peak
        [ -d "$dir/mid/model" ] || "$py" tools/reference/bench_videolisa.py make mid "$dir/mid" > /dev/null
        echo "## mid-size VideoLISA, f32, $reps run(s) (each: ours, then PyTorch)"
        : > "$dir/mid_runs.txt"
        for rep in $(seq "$reps"); do
            cargo bench --quiet --bench videolisa -- mid "$dir/mid" 2>/dev/null | tee -a "$dir/mid_runs.txt"
        done
        [ "$reps" -gt 1 ] && "$py" tools/bench/median_ratios.py < "$dir/mid_runs.txt"
        ;;
    xmem)
        : "${XMEM2:?set XMEM2 to a checkout of XMem2 @ adc7d4c}"
        export XMEM2
        [ -f "$dir/xmem/XMem.pth" ] || "$py" tools/reference/xmem_fixtures.py --full --weights-only "$dir/xmem" > /dev/null
        clip="$dir/xmem_clip_$frames"
        [ -d "$clip/masks" ] || "$py" tools/reference/bench_xmem.py make "$clip" "$frames" 640 480 > /dev/null
        echo "## XMem++, full-size random XMem, $frames frames 640×480, --mem-every 5, $reps run(s) each, alternating"
        : > "$dir/xmem_runs.txt"
        for rep in $(seq "$reps"); do
            rm -rf "$clip/ours" "$clip/xmem2_out"
            t0=$(ticks)
            /usr/bin/time -f "%M" -o "$dir/ours.rss" target/release/videolisa propagate --video "$clip/frames" \
                --masks "$clip/masks" --out "$clip/ours" --xmem "$dir/xmem/XMem.pth" --mem-every 5 > /dev/null
            t1=$(ticks)
            /usr/bin/time -f "%M" -o "$dir/theirs.rss" "$py" tools/reference/bench_xmem.py run "$clip" \
                "$dir/xmem/XMem.pth" 5 > "$dir/theirs.json" 2> "$dir/theirs.err" || true
            t2=$(ticks)
            "$py" - "$clip/ours/summary.json" "$dir/theirs.json" "$dir/ours.rss" "$dir/theirs.rss" \
                "$(steal "$t0" "$t1")" "$(steal "$t1" "$t2")" "$rep" >> "$dir/xmem_runs.txt" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1]))
try:  # XMem2 prints its own lines first
    theirs = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
except (IndexError, ValueError):
    err = open(sys.argv[2].replace(".json", ".err")).read().strip().splitlines()[-5:]
    sys.exit(f"run {sys.argv[7]}: XMem2's run_on_video printed no timing; its stderr ends: " + " / ".join(err))
rss = [int(open(p).read().split()[-1]) / 1024 for p in sys.argv[3:5]]
o = ours["seconds"]["total"]
print(f"run {sys.argv[7]}: ours {o:.1f} s ({ours.get('consolidations')} consolidations, peak RSS {rss[0]:.0f} MB, "
      f"steal {sys.argv[5]}), XMem2 run_on_video {theirs['seconds']:.1f} s (steps {theirs['step_seconds']:.1f} s, "
      f"{theirs['consolidations']} consolidations, peak RSS {rss[1]:.0f} MB, steal {sys.argv[6]}): "
      f"ratio (XMem2 / ours) {theirs['seconds'] / o:.2f}x")
PY
            tail -n 1 "$dir/xmem_runs.txt"
        done
        "$py" -c '
import re, statistics, sys
r = [float(m.group(1)) for m in re.finditer(r"ratio \(XMem2 / ours\) ([0-9.]+)x", sys.stdin.read())]
print(f"median ratio over {len(r)} run(s): {statistics.median(r):.2f}x (min {min(r):.2f}, max {max(r):.2f})")' < "$dir/xmem_runs.txt"
        ;;
    full)
        [ -f "$dir/full/manifest.json" ] || "$py" tools/reference/bench_videolisa.py manifest full "$dir/full" > /dev/null
        [ -n "${VIDEOLISA_PEAK_F32:-}" ] || peak
        echo "## full-size VideoLISA shapes, default dtypes, ours only"
        cargo bench --quiet --bench videolisa -- full "$dir/full" 2>/dev/null
        ;;
    *)
        echo "unknown step $step (peak, mid, xmem, full)" >&2
        exit 2
        ;;
    esac
done
