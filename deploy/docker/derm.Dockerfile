# syntax=docker/dockerfile:1.7
# derm (the command line: profile, solve, simulate, migrate) for CI jobs and one-off pods.
#   docker build -f deploy/docker/derm.Dockerfile -t derm:0.1.0 .
#   docker run --rm -v ~/.kube:/home/nonroot/.kube:ro derm:0.1.0 migrate -n shop
# Not built in CI yet: the project's machines have no container engine.

ARG DEBIAN=bookworm

FROM rust:1.95-${DEBIAN} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p derm-core \
 && install -D -m 0755 target/release/derm /out/derm

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/derm /usr/local/bin/derm
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/derm"]
