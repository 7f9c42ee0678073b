# agentgate container image: a release build, then a runtime stage with no shell.
#
#   docker build -t agentgate:0.1.0 .
#   docker run --read-only -v "$PWD/config:/etc/agentgate/config:ro" ... agentgate:0.1.0
#
# The runtime stage is distroless/cc (glibc, libgcc, CA certificates, /etc/passwd with
# nonroot, no shell or package manager): the binary needs only libc, libm and libgcc_s.
# It runs as 65532 (nonroot) and writes nothing but its logs to stdout/stderr, so the root
# file system can be read-only (deploy/ mounts config and policies read-only).

FROM rust:1.95-bookworm AS build
# cmake builds zlib-ng for pingora.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY benches benches
COPY examples examples
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked --bin agentgate \
 && rm -rf src
COPY src src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin agentgate \
 && cp target/release/agentgate /agentgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /agentgate /usr/local/bin/agentgate
USER 65532:65532
EXPOSE 8080 9180
ENTRYPOINT ["/usr/local/bin/agentgate"]
CMD ["serve", "--config", "/etc/agentgate/config/agentgate.toml"]
