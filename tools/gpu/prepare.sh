#!/usr/bin/env bash
# Prepares, on a machine without a GPU, what tools/gpu/check.sh needs on the GPU machine (which
# has PyTorch and CUDA's libraries but no Rust and no network): the CUDA build of `videolisa` and
# of the parity tests, stripped and xz-compressed, and the segment-anything wheel, all in .gpu/
# (git-ignored; the device call names it in `carry`). Fails if the tree that travels would
# exceed the device tool's 64 MiB.
#
#   tools/gpu/prepare.sh        # then: device run `tools/gpu/check.sh`, carry [".gpu"]
set -euo pipefail
cd "$(dirname "$0")/../.."
tools/cuda/build.sh --tests
rm -rf .gpu && mkdir -p .gpu/bin .gpu/whl
for exe in target/cuda/release/videolisa $(cat target/cuda/parity-tests.txt); do
    name=$(basename "$exe" | sed 's/-[0-9a-f]\{16\}$//')
    strip -o ".gpu/bin/$name" "$exe"
    xz -9 -T2 ".gpu/bin/$name"
done
python3 -m pip download -q --no-deps --only-binary=:all: -d .gpu/whl segment-anything==1.0
{
    echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
    echo "built $(date -u +%FT%TZ)"
    (cd .gpu && find bin whl -type f -exec sha256sum {} +)
} >.gpu/BUILD
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
carried=$(du -sb .gpu | cut -f1)
total=$((tree + carried))
ls -l .gpu/bin .gpu/whl
echo "travels: tracked tree $((tree >> 20)) MiB + .gpu $((carried >> 20)) MiB = $((total >> 20)) MiB (limit 64)"
[ "$total" -lt $((64 << 20)) ] || { echo "too large for the device tool" >&2; exit 1; }
