#!/usr/bin/env bash
# The correction loop (`segment --propagate`, then `--annotate` reruns) against XMem++ alone
# (`propagate` on the same seeds), one run each on one clip: wall seconds and peak RSS (GNU
# time), and the stage seconds from summary.json.
#
#   tools/bench/corrections.sh MODEL_DIR CLIP_DIR XMEM_PTH VIDEO
#
# 1. first run: everything (CLIP, LLM, SAM on the dense frames, XMem++ over every frame);
# 2. rerun with one correction (`--annotate 50=…`: frame 50's mask from run 1, shifted): only
#    XMem++ should run;
# 3. `videolisa propagate` with run 1's seed masks and the same correction: XMem++ alone.
set -euo pipefail
model=$1 clip=$2 xmem=$3 video=$4
bin=${VIDEOLISA:-$(dirname "$0")/../../target/release/videolisa}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
timed() { # label command...
    local label=$1
    shift
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" > "$work/summary.json" 2> "$work/err" || { cat "$work/err"; exit 1; }
    read -r secs kb < "$work/time"
    python3 - "$work/summary.json" "$label" "$secs" "$kb" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
sec = s["seconds"]
stages = ", ".join(f"{k} {v:.1f}" for k, v in sec.items() if k != "total" and v)
print(f"{sys.argv[2]:<28} {float(sys.argv[3]):8.1f} s  peak RSS {int(sys.argv[4]) / 1024:7.1f} MB  [{stages}]"
      + (f"  prompt stage: {s['prompt_stage']}" if s.get("prompt_stage") else ""))
PY
}
seg=("$bin" -q segment --video "$video" -p "the object" --out "$work/out" --model "$model" --clip "$clip"
     --propagate --xmem "$xmem" --json)
timed "first run (everything)" "${seg[@]}"
name=$(python3 -c "import json; s=json.load(open('$work/summary.json')); print(sorted(__import__('os').listdir('$work/out/prompt_0'))[50][:-4])")
seeds=$(python3 -c "import json; print(' '.join(map(str, json.load(open('$work/summary.json'))['propagation']['seed_frames'])))")
# the correction: run 1's mask of frame 50 moved 8 pixels right
ffmpeg -v error -i "$work/out/prompt_0/$name.png" -vf "pad=iw+8:ih:8:0,crop=iw-8:ih:0:0" -pix_fmt gray \
    "$work/fix.png"
timed "rerun, one --annotate" "${seg[@]}" --annotate "50=$work/fix.png"
mkdir "$work/given"
for i in $seeds; do
    n=$(ls "$work/out/prompt_0" | sed -n "$((i + 1))p")
    cp "$work/out/prompt_0/$n" "$work/given/$n"
done
cp "$work/fix.png" "$work/given/$name.png"
timed "propagate (XMem++ alone)" "$bin" -q propagate --video "$video" --masks "$work/given" --out "$work/alone" \
    --xmem "$xmem" --json
