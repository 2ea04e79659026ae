# comfy-rs container image.
#   GPU (default target):  docker build -t comfy-rs . && docker run --gpus all -p 8188:8188 comfy-rs
#   CPU only:              docker build --target cpu -t comfy-rs:cpu . && docker run -p 8188:8188 comfy-rs:cpu
# Models, inputs, outputs and user data live in volumes under /data (mount an existing ComfyUI
# models folder at /data/models).

ARG CUDA_VERSION=12.4.1
ARG UBUNTU_VERSION=22.04

# ---------------------------------------------------------------- CUDA build
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS builder-cuda
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl build-essential pkg-config \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain stable
ENV PATH=/usr/local/cargo/bin:${PATH}
# Compute capability of the target GPUs (90 = Hopper, 89 = Ada, 86 = Ampere); candle's kernels
# are compiled for it.
ARG CUDA_COMPUTE_CAP=90
ENV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}
# Cargo features of the GPU build: `cuda`; add `flash-attn` (Ampere or newer; a long nvcc build
# that fetches CUTLASS) or `cudnn` with --build-arg CARGO_FEATURES=cuda,flash-attn.
ARG CARGO_FEATURES=cuda
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
RUN cargo build --release --features "${CARGO_FEATURES}" --bin comfy-rs

# ---------------------------------------------------------------- CPU build
FROM rust:1-bookworm AS builder-cpu
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
RUN cargo build --release --bin comfy-rs

# ---------------------------------------------------------------- CPU runtime
FROM debian:bookworm-slim AS cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 comfy \
 && mkdir -p /data/models /data/input /data/output /data/user /app \
 && chown -R comfy:comfy /data
COPY --from=builder-cpu /src/target/release/comfy-rs /usr/local/bin/comfy-rs
COPY manage.sh /app/manage.sh
COPY examples /app/examples
ENV COMFY_RS_BIN=/usr/local/bin/comfy-rs
USER comfy
WORKDIR /app
EXPOSE 8188
VOLUME ["/data/models", "/data/input", "/data/output", "/data/user"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8188/system_stats || exit 1
ENTRYPOINT ["comfy-rs"]
CMD ["--listen", "0.0.0.0", "--port", "8188", "--base-directory", "/data", "--cpu"]

# ---------------------------------------------------------------- CUDA runtime (default)
FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION} AS gpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 comfy \
 && mkdir -p /data/models /data/input /data/output /data/user /app \
 && chown -R comfy:comfy /data
COPY --from=builder-cuda /src/target/release/comfy-rs /usr/local/bin/comfy-rs
COPY manage.sh /app/manage.sh
COPY examples /app/examples
ENV COMFY_RS_BIN=/usr/local/bin/comfy-rs
ENV NVIDIA_VISIBLE_DEVICES=all
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER comfy
WORKDIR /app
EXPOSE 8188
VOLUME ["/data/models", "/data/input", "/data/output", "/data/user"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8188/system_stats || exit 1
ENTRYPOINT ["comfy-rs"]
CMD ["--listen", "0.0.0.0", "--port", "8188", "--base-directory", "/data"]
