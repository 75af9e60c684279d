#!/usr/bin/env bash
# `segment --propagate` against the default mode (SAM on every frame) on the same clips, one run
# each, side by side: seconds per stage (from summary.json) and peak RSS (GNU time). With two
# clips of different lengths it shows whether memory stays flat in video length.
#
#   tools/bench/propagate.sh MODEL_DIR CLIP_DIR XMEM_PTH VIDEO [VIDEO...]
#
# Every video gets the prompt "the object". Set DEFAULT_MODE=0 to skip the default-mode runs.
set -euo pipefail
model=$1 clip=$2 xmem=$3
shift 3
bin=${VIDEOLISA:-$(dirname "$0")/../../target/release/videolisa}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() { # label video options...
    local label=$1 video=$2
    shift 2
    /usr/bin/time -f "%e %M" -o "$work/time" "$bin" segment --video "$video" -p "the object" \
        --out "$work/out" --force --model "$model" --clip "$clip" --json "$@" > "$work/summary.json" 2> "$work/err" \
        || { cat "$work/err"; exit 1; }
    read -r secs kb < "$work/time"
    python3 - "$work/summary.json" "$label" "$secs" "$kb" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
sec = s["seconds"]
stages = ", ".join(f"{k} {v:.2f}" for k, v in sec.items() if k != "total")
print(f"{sys.argv[2]:<12} {s['frames']:5d} frames  {float(sys.argv[3]):8.1f} s  "
      f"peak RSS {int(sys.argv[4]) / 1024:7.1f} MB  [{stages}]")
PY
}
for video in "$@"; do
    run "propagate" "$video" --propagate --xmem "$xmem"
    if [ "${DEFAULT_MODE:-1}" != 0 ]; then
        run "default" "$video"
    fi
done
