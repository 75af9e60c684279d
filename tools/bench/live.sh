#!/usr/bin/env bash
# Live input (`segment --online`): ffmpeg's test pattern piped as y4m into videolisa, standing in
# for a camera (`ffmpeg -f v4l2 -i /dev/video0 -f yuv4mpegpipe -`). For each run: frames,
# time to the first mask, per-frame latency (arrival → mask written) p50/p95/max after the
# window, frames/s, frames dropped, and peak RSS (GNU time); two lengths show whether memory
# stays flat. LIVE=1 paces the producer at the camera's rate (ffmpeg -re, RATE frames/s,
# default 30) with --drop, as a webcam runs; by default the producer writes as fast as the pipe
# takes frames (lossless queue: latency then includes the time frames wait in the queue).
#
#   tools/bench/live.sh MODEL_DIR CLIP_DIR XMEM_PTH [SIZE] [SAM_FRAMES...] -- [XMEM_FRAMES...]
#
# Defaults: 320x240, SAM runs of 1000 and 10000 frames, --propagate runs of 100 and 300 frames
# (`none` skips a kind). EXTRA="--window 4 ..." adds options to every run.
set -euo pipefail
model=$1 clip=$2 xmem=$3
size=${4:-320x240}
shift $(( $# >= 4 ? 4 : 3 ))
sam=() prop=()
while (($#)) && [[ $1 != -- ]]; do sam+=("$1"); shift; done
(($#)) && shift
prop=("$@")
((${#sam[@]})) || sam=(1000 10000)
((${#prop[@]})) || prop=(100 300)
bin=${VIDEOLISA:-$(dirname "$0")/../../target/release/videolisa}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() { # label frames options...
    local label=$1 n=$2
    shift 2
    local pace=() rate=${RATE:-30}
    if [[ ${LIVE:-0} == 1 ]]; then pace=(-re); set -- "$@" --drop; fi
    ffmpeg -v error "${pace[@]}" -f lavfi -i "testsrc2=size=$size:rate=$rate" -frames:v "$n" -pix_fmt yuv420p \
        -f yuv4mpegpipe - |
        /usr/bin/time -f "%e %M" -o "$work/time" "$bin" segment --video - -p "the object" \
            --out "$work/out" --force --model "$model" --clip "$clip" --online --json ${EXTRA:-} "$@" \
            > "$work/summary.json" 2> "$work/err" || { cat "$work/err"; exit 1; }
    read -r secs kb < "$work/time"
    python3 - "$work/summary.json" "$label" "$secs" "$kb" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
o = s["online"]
lat = o["latency_after_window_ms"] or {}
sec = s["seconds"]
print(f"{sys.argv[2]:<10} {o['segmented']:6d} frames  first mask {o['first_mask_s']:6.2f} s "
      f"(clip {sec['clip']:.2f}, llm {sec['llm']:.2f})  "
      f"latency p50 {lat.get('p50', 0):7.1f} p95 {lat.get('p95', 0):7.1f} max {lat.get('max', 0):7.1f} ms  "
      f"{o['frames_per_second']:6.1f} frames/s  dropped {len(o['dropped']):5d}  wall {float(sys.argv[3]):7.1f} s  "
      f"peak RSS {int(sys.argv[4]) / 1024:6.1f} MB")
PY
}
for n in "${sam[@]}"; do [[ $n == none ]] || run "sam" "$n"; done
for n in "${prop[@]}"; do [[ $n == none ]] || run "propagate" "$n" --propagate --xmem "$xmem"; done
