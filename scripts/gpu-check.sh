#!/usr/bin/env bash
# CUDA check of comfy-rs in two halves, because the GPU machine has the CUDA toolkit and
# driver but no Rust toolchain and no network, and this (CPU) machine has no GPU:
#
#   1. here:            bash scripts/gpu-check.sh bundle
#      Installs CUDA 13.0 (nvcc + headers + libraries, the version of the GPU machines'
#      driver and toolkit) from PyPI into $CUDA_VENV when missing, builds with
#      `--features cuda` (dev profile: dependencies at opt-level 3) the tiny end-to-end test
#      binary (tests/sd_pipeline.rs), the UNet benchmark (crates/diffusion/examples/
#      bench_unet.rs) and the server, strips them and packs them into
#      target/gpu-bundle/bundle.tar.xz (about 15-25 MB). Linking needs libcuda.so, which
#      only a driver installs: a stub with the driver API's symbols (soname libcuda.so.1) is
#      made for the link; the real driver library is loaded at run time.
#      First build: about 12 min for candle's CUDA kernels plus 10 min of Rust on 2 cores.
#
#   2. on the GPU:      device `run` tool, carry ["target/gpu-bundle"],
#                       command "bash scripts/gpu-check.sh run", timeout_s 540
#      Runs the tiny SD1.5/SDXL text-to-image tests on CUDA device 0, the server's
#      /system_stats with --cuda-device 0, and the UNet benchmark at SDXL shapes
#      1024x1024, F16 weights, batch 2 (5 timed steps after a warm-up), printing seconds per
#      step and the VRAM peak. Everything is also written to $OUT/gpu-check.log.
#      The benchmark first writes the 6.9 GB SDXL recipe checkpoint to /tmp (a minute or two).
#
#   Type-check only (here, no GPU):   bash scripts/gpu-check.sh check
#
#   Elsewhere (a machine with Rust and a CUDA toolkit, e.g. the Docker builder):
#                       bash scripts/gpu-check.sh build
#      = CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} cargo build --release --features cuda
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUNDLE_DIR="$ROOT/target/gpu-bundle"
CUDA_VENV="${CUDA_VENV:-/tmp/cudatk13}"

cuda_env() {
    local site
    site="$(ls -d "$CUDA_VENV"/lib/python3*/site-packages 2>/dev/null | head -1)"
    CU="$site/nvidia/cu13"
    if [ ! -x "$CU/bin/nvcc" ]; then
        echo "== installing the CUDA 13.0 toolkit from PyPI into $CUDA_VENV"
        python3 -m venv "$CUDA_VENV"
        "$CUDA_VENV/bin/pip" install -q "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" \
            "nvidia-nvvm==13.0.88" "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85" \
            "nvidia-cuda-nvrtc==13.0.88" "nvidia-curand==10.4.0.35" "nvidia-cublas==13.1.1.3"
        site="$(ls -d "$CUDA_VENV"/lib/python3*/site-packages | head -1)"
        CU="$site/nvidia/cu13"
    fi
    # Unversioned names for the linker, and a libcuda stub (the driver provides the real one).
    local l
    for l in cublas cublasLt cudart nvrtc; do ln -sf "lib$l.so.13" "$CU/lib/lib$l.so"; done
    ln -sf libcurand.so.10 "$CU/lib/libcurand.so"
    if [ ! -e "$CU/lib/libcuda.so" ]; then
        local cudarc
        cudarc="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | head -1)"
        grep -oE '^\s+fn cu[A-Za-z0-9_]+\(' "$cudarc/src/driver/sys/mod.rs" | grep -oE 'cu[A-Za-z0-9_]+' | sort -u |
            awk '{print "void " $1 "(void){}"}' >"$CUDA_VENV/libcuda_stub.c"
        cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CU/lib/libcuda.so" "$CUDA_VENV/libcuda_stub.c"
    fi
    export PATH="$CU/bin:$PATH" CUDA_HOME="$CU" CUDA_PATH="$CU" CUDA_ROOT="$CU" CUDA_TOOLKIT_ROOT_DIR="$CU"
    # No nvidia-smi here: name the GPU generation (Hopper) and the toolkit version.
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" CUDARC_CUDA_VERSION=13000
    export LIBRARY_PATH="$CU/lib:${LIBRARY_PATH:-}" CPATH="$CU/include:${CPATH:-}"
}

bundle() {
    cd "$ROOT"
    cargo fetch
    cuda_env
    echo "== building with --features cuda (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)"
    cargo build -p comfy-diffusion --features cuda --example bench_unet
    cargo build --features cuda --bin comfy-rs
    local test_bin
    test_bin="$(cargo test --features cuda --test sd_pipeline --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*sd_pipeline[^"]*\)".*/\1/p' | tail -1)"
    [ -x "$test_bin" ] || { echo "sd_pipeline test binary not found"; exit 1; }
    rm -rf "$BUNDLE_DIR" && mkdir -p "$BUNDLE_DIR/bin"
    strip -o "$BUNDLE_DIR/bin/bench_unet" target/debug/examples/bench_unet
    strip -o "$BUNDLE_DIR/bin/comfy-rs" target/debug/comfy-rs
    strip -o "$BUNDLE_DIR/bin/sd_pipeline" "$test_bin"
    tar -C "$BUNDLE_DIR/bin" -cJf "$BUNDLE_DIR/bundle.tar.xz" bench_unet comfy-rs sd_pipeline
    rm -rf "$BUNDLE_DIR/bin"
    ls -la "$BUNDLE_DIR"
    echo "== now, with a GPU: run tool, carry [\"target/gpu-bundle\"], command \"bash scripts/gpu-check.sh run\""
}

run_on_gpu() {
    cd "$ROOT"
    local out="${OUT:-/tmp}" bin=/tmp/comfy-gpu
    exec > >(tee "$out/gpu-check.log") 2>&1
    mkdir -p "$bin" && tar -C "$bin" -xJf "$BUNDLE_DIR/bundle.tar.xz"
    # CUDA 13 runtime libraries: the toolkit's, and the ones PyTorch's wheels bring.
    local libs="" d py
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && libs="$libs:$d"; done
    py="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)"
    for d in "$py"/nvidia/cu13/lib "$py"/nvidia/*/lib; do [ -d "$d" ] && libs="$libs:$d"; done
    export LD_LIBRARY_PATH="${libs#:}:${LD_LIBRARY_PATH:-}"
    echo "== device"
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true
    ldd "$bin/bench_unet" | grep -E "cuda|cublas|curand|not found" || true

    echo "== tiny end-to-end tests on CUDA device 0 (the default device of a cuda build)"
    (cd "$ROOT" && timeout 240 "$bin/sd_pipeline" --test-threads=1) || echo "!! sd_pipeline FAILED (rc $?)"

    echo "== /system_stats with --cuda-device 0"
    local base=/tmp/comfy-gpu-base port=18188
    mkdir -p "$base"
    "$bin/comfy-rs" --cuda-device 0 --port "$port" --base-directory "$base" >"$out/server.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 50); do
        curl -sf "http://127.0.0.1:$port/system_stats" >"$out/system_stats.json" 2>/dev/null && break
        sleep 0.2
    done
    python3 -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))['devices'], indent=1))" "$out/system_stats.json" ||
        { echo "!! no /system_stats"; tail -20 "$out/server.log"; }
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true

    echo "== UNet benchmark: SDXL 1024x1024, F16 weights, batch 2"
    COMFY_RECIPE_DIR=/tmp/comfy-recipe timeout 420 "$bin/bench_unet" sdxl 1024 --cuda --batch 2 --steps 5 --no-vae ||
        echo "!! bench_unet FAILED (rc $?)"
}

case "${1:-}" in
bundle) bundle ;;
run) run_on_gpu ;;
build)
    cd "$ROOT"
    CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" cargo build --release --features cuda
    ;;
check)
    # Type-checks every target with --features cuda here (no GPU needed).
    cd "$ROOT"
    cuda_env
    cargo check --workspace --all-targets --features cuda
    ;;
*)
    echo "usage: $0 bundle | run | build | check   (see the comments at the top)" >&2
    exit 2
    ;;
esac
