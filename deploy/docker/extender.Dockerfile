# syntax=docker/dockerfile:1.7
# derm-extender: multi-stage, non-root, distroless.
# Build from the repository root:
#   docker build -f deploy/docker/extender.Dockerfile -t derm-extender:0.1.0 .
# Not built in CI yet: the project's machines have no container engine.

ARG DEBIAN=bookworm

FROM rust:1.95-${DEBIAN} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p derm-extender \
 && install -D -m 0755 target/release/derm-extender /out/derm-extender

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/derm-extender /usr/local/bin/derm-extender
USER 65532:65532
EXPOSE 8888 8081
ENTRYPOINT ["/usr/local/bin/derm-extender"]
