#!/usr/bin/env bash
# `videolisa batch` against a loop of `videolisa segment` over the same videos, one run each,
# side by side: seconds per video and peak RSS (GNU time). Also the batch without reading the
# next video ahead (--no-prefetch), to show what the overlap saves.
#
#   tools/bench/batch.sh VIDEOS_DIR MODEL_DIR CLIP_DIR [extra videolisa options...]
#
# VIDEOS_DIR holds the videos (mp4 files, frame folders, images); every one gets the prompt
# "the object". Prints one line per variant.
set -euo pipefail
videos=$1 model=$2 clip=$3
shift 3
bin=${VIDEOLISA:-$(dirname "$0")/../../target/release/videolisa}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
n=$(find "$videos" -mindepth 1 -maxdepth 1 | wc -l)
measure() { # label command...
    local label=$1
    shift
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" > /dev/null 2> "$work/err" || { cat "$work/err"; exit 1; }
    read -r secs kb < "$work/time"
    printf '%-28s %4d videos  %8.2f s  %7.3f s/video  peak RSS %7.1f MB\n' "$label" "$n" "$secs" \
        "$(echo "$secs / $n" | bc -l)" "$(echo "$kb / 1024" | bc -l)"
}
measure "batch" "$bin" batch --videos "$videos" -p "the object" --out "$work/batch" \
    --model "$model" --clip "$clip" --quiet "$@"
measure "batch --no-prefetch" "$bin" batch --videos "$videos" -p "the object" --out "$work/noprefetch" \
    --model "$model" --clip "$clip" --quiet --no-prefetch "$@"
peak=0
start=$(date +%s.%N)
for v in "$videos"/*; do
    /usr/bin/time -f "%M" -o "$work/one" "$bin" segment --video "$v" -p "the object" \
        --out "$work/loop/$(basename "$v")" --model "$model" --clip "$clip" --quiet "$@" > /dev/null
    kb=$(cat "$work/one")
    (( kb > peak )) && peak=$kb
done
secs=$(echo "$(date +%s.%N) - $start" | bc -l)
printf '%-28s %4d videos  %8.2f s  %7.3f s/video  peak RSS %7.1f MB (largest process)\n' "loop of segment" "$n" "$secs" \
    "$(echo "$secs / $n" | bc -l)" "$(echo "$peak / 1024" | bc -l)"
