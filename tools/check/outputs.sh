#!/usr/bin/env bash
# Runs every subcommand that writes files on the committed tiny checkpoints and prints one
# SHA-256 per output file, so two builds can be compared byte for byte (a refactor must not
# change a single output). JSON files are hashed after removing what differs from run to run
# by nature (stage timings, Unix times, the temporary folder's path).
# usage: tools/check/outputs.sh [BINARY] > checksums.txt   (default: target/release/videolisa)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "${1:-target/release/videolisa}")
# a fixed folder and fixed file times: done markers fingerprint the input's path and mtime
work=${VIDEOLISA_CHECK_DIR:-/tmp/videolisa-check-outputs}
rm -rf "$work"
mkdir -p "$work"
fx=tests/fixtures
model=(--model "$fx/videolisa_tiny/model" --clip "$fx/videolisa_tiny/clip")
xmem=(--propagate --xmem "$fx/xmem_tiny/XMem.pth")
run() { "$bin" --quiet "$@" > /dev/null; }

run segment --video examples/demo/demo.mp4 -p "the red ball" -p "the blue square" --out "$work/segment" \
  "${model[@]}" --overlay --rle --dump "$work/segment-dump"
run segment --video "$fx/xmem_tiny/frames" -p "the red ball" --out "$work/propagate" "${model[@]}" \
  "${xmem[@]}" --overlay --dump "$work/propagate-dump"
mkdir -p "$work/videos"
cp examples/demo/demo.mp4 "$work/videos/"
cp -r examples/demo/frames "$work/videos/clip"
find "$work/videos" -exec touch -d @1700000000 {} +
run batch --videos "$work/videos" -p "the red ball" --out "$work/batch" "${model[@]}" --rle --overlay
printf 'video,prompt,id,mask_value\n%s,the ball,first,100\n' "$PWD/examples/demo/demo.mp4" > "$work/jobs.csv"
run batch "$work/jobs.csv" --out "$work/batch-csv" "${model[@]}"
run batch --videos "$work/videos" -p "the red ball" --out "$work/batch-propagate" "${model[@]}" "${xmem[@]}"
run synthetic --dataset ref-davis --out "$work/davis" --videos 2 --frames 8
run eval --dataset ref-davis --root "$work/davis" --out "$work/eval" "${model[@]}"
run eval --dataset ref-davis --root "$work/davis" --out "$work/eval-propagate" "${model[@]}" "${xmem[@]}"
run score --dataset ref-davis --root "$work/davis" --pred "$work/eval" --out "$work/score"
run synthetic --dataset ref-ytvos --out "$work/ytvos" --videos 2 --frames 6
run eval --dataset ref-ytvos --root "$work/ytvos" --out "$work/eval-ytvos" "${model[@]}"
run synthetic --dataset mevis --out "$work/mevis" --videos 2 --frames 6
run eval --dataset mevis --root "$work/mevis" --split valid_u --out "$work/eval-mevis" "${model[@]}" --shard 0/2
run eval --dataset mevis --root "$work/mevis" --split valid_u --out "$work/eval-mevis" "${model[@]}" --shard 1/2
run eval --dataset mevis --root "$work/mevis" --split valid_u --out "$work/eval-mevis" --merge
"$bin" probe examples/demo/demo.mp4 --json --dump "$work/probe" --frames 0,7 > "$work/probe.json"
"$bin" score --dataset ref-davis --root "$work/davis" --pred "$work/eval" --json > "$work/score.json"

python3 - "$work" <<'PY'
import hashlib, json, os, sys, zipfile, io
root = sys.argv[1]
DROP = {"seconds", "started", "finished"}
def clean(v):
    if isinstance(v, dict):
        return {k: clean(x) for k, x in sorted(v.items()) if k not in DROP}
    if isinstance(v, list):
        return [clean(x) for x in v]
    if isinstance(v, str):
        return v.replace(root, "<work>")
    return v
def digest(path, data):
    name = os.path.basename(path)
    if name.endswith(".json") or name.endswith(".jsonl") or name == ".done":
        lines = data.decode().splitlines() if name.endswith(".jsonl") else [data.decode()]
        data = "\n".join(json.dumps(clean(json.loads(l)), sort_keys=True) for l in lines if l.strip()).encode()
    if name.endswith(".safetensors"):
        n = int.from_bytes(data[:8], "little")
        header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True).encode()
        data = header + data[8 + n:]
    if name.endswith(".zip"):
        z = zipfile.ZipFile(io.BytesIO(data))
        data = b"".join(i.filename.encode() + z.read(i) for i in z.infolist())
    return hashlib.sha256(data).hexdigest()
for d, _, files in sorted(os.walk(root)):
    for f in sorted(files):
        p = os.path.join(d, f)
        print(digest(p, open(p, "rb").read()), os.path.relpath(p, root))
PY
