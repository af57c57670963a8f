# syntax=docker/dockerfile:1.7
# derm-adapter: multi-stage, non-root, distroless (glibc + libstdc++, which libtorch needs).
# Build from the repository root:
#   docker build -f deploy/docker/adapter.Dockerfile -t derm-adapter:0.1.0 .
# The graph-mix LSTM links libtorch 2.13.0 (what tch 0.26 expects), installed from PyPI into a
# virtualenv like hack/install-libtorch.sh does on a workstation (~/.cache/derm/torch-2.13.0);
# here the CPU-only wheel keeps the image small. CARGO_FEATURES selects it (e.g.
# "derm-core/lstm"); empty builds without libtorch and the image still carries the libraries.
# Not built in CI yet: the project's machines have no container engine.

ARG DEBIAN=bookworm
ARG TORCH_VERSION=2.13.0

# --- libtorch from the torch wheel ----------------------------------------------------------
FROM python:3.11-slim-${DEBIAN} AS torch
ARG TORCH_VERSION
RUN python -m venv /opt/torch \
 && /opt/torch/bin/pip install --no-cache-dir --disable-pip-version-check \
      --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}" \
 && /opt/torch/bin/python -c 'import torch; print(torch.__version__)'

# --- build ----------------------------------------------------------------------------------
FROM rust:1.95-${DEBIAN} AS build
ARG CARGO_FEATURES=""
COPY --from=torch /opt/torch /opt/torch
# tch's build script finds libtorch through the venv's python.
ENV LIBTORCH_USE_PYTORCH=1 PATH=/opt/torch/bin:$PATH
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p derm-adapter ${CARGO_FEATURES:+--features "$CARGO_FEATURES"} \
 && install -D -m 0755 target/release/derm-adapter /out/derm-adapter \
 && mkdir -p /out/libtorch \
 && cp -a "$(python -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"/*.so* /out/libtorch/

# --- runtime --------------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/libtorch/ /opt/libtorch/lib/
COPY --from=build /out/derm-adapter /usr/local/bin/derm-adapter
ENV LD_LIBRARY_PATH=/opt/libtorch/lib
# 65532 is distroless' "nonroot"; the chart's securityContext runs it with a read-only root.
USER 65532:65532
EXPOSE 6443 8080
ENTRYPOINT ["/usr/local/bin/derm-adapter"]
CMD ["serve"]
