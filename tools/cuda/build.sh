#!/usr/bin/env bash
# Builds videolisa with `--features cuda` on a machine without a GPU or a system CUDA toolkit:
# the CUDA 13.0 compiler and libraries come from PyPI wheels (the versions PyTorch 2.11 pins, so
# the GPU machine's PyTorch has the same libraries), and a stub stands in for the driver's
# libcuda.so.1 at link time. nvcc 13.0 on purpose: the GPU's driver (580) is CUDA 13.0, and PTX
# from a newer toolkit would not load there.
#
#   tools/cuda/build.sh                 # → target/cuda/release/videolisa
#   tools/cuda/build.sh --lint          # + cargo clippy --features cuda -D warnings (CI)
#   tools/cuda/build.sh --tests         # + the parity tests' executables, listed in
#                                       #   target/cuda/parity-tests.txt (tools/gpu/prepare.sh)
#
# To run the binary on a machine without a GPU (it then reports that there is none):
#   LD_LIBRARY_PATH=<cu13>/lib/stubs:<cu13>/lib target/cuda/release/videolisa …
#
# CUDA_VENV (default: target/cuda-venv) caches the toolkit; CUDA_COMPUTE_CAP (default 90: H100
# and H200) picks the GPU generation the kernels are built for; CUDA_TARGET_DIR (default
# target/cuda) is cargo's target directory. CI sets it to `target`, where the CPU build has
# just compiled every dependency but candle (saves recompiling them; the CPU binary
# target/release/videolisa is then replaced by the CUDA one).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${CUDA_VENV:-$PWD/target/cuda-venv}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# candle-kernels' nvcc jobs (cudaforge) run on half the cores unless told: all of them here
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "cuda-toolkit[nvcc,cudart,cublas,curand,nvrtc,cccl,crt,nvvm]==13.0.2"
fi
cu13=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')
cargo fetch --quiet # cudarc's sources name the driver functions the stub must define
(
    cd "$cu13/lib"
    for l in cudart cublas cublasLt nvrtc; do ln -sf "lib$l.so.13" "lib$l.so"; done
    ln -sf libcurand.so.10 libcurand.so
    mkdir -p stubs
    if [ ! -f stubs/libcuda.so ]; then
        # every driver entry point cudarc declares, each returning CUDA_ERROR_NO_DEVICE (100)
        driver=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs | head -1)
        grep -oP '^\s*pub unsafe fn \Kcu\w+' "$driver" | sort -u \
            | awk '{print "int " $1 "(void){return 100;}"}' > stubs/libcuda_stub.c
        cc -shared -fPIC -o stubs/libcuda.so -Wl,-soname,libcuda.so.1 stubs/libcuda_stub.c
        ln -sf libcuda.so stubs/libcuda.so.1 # lets the binary start here (and say there is no GPU)
    fi
)
export CUDA_HOME=$cu13 PATH=$cu13/bin:$PATH
export LIBRARY_PATH=$cu13/lib:$cu13/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
tdir=${CUDA_TARGET_DIR:-target/cuda}
args=(--release --features cuda --target-dir "$tdir")
cargo build "${args[@]}" --bin videolisa
for a in "$@"; do
    case $a in
        --lint) cargo clippy "${args[@]}" --all-targets -- -D warnings ;;
        --tests)
            cargo test "${args[@]}" --no-run --test sam_parity --test videolisa_parity --test xmem_parity \
                --message-format=json \
                | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])' >"$tdir/parity-tests.txt"
            ;;
        *) echo "unknown option $a" >&2; exit 2 ;;
    esac
done
echo "built $tdir/release/videolisa (CUDA $(nvcc --version | grep -oP 'release \K[0-9.]+'), sm_$CUDA_COMPUTE_CAP)"
