# The latchkey server image: the release binary on distroless/cc (glibc,
# libgcc, CA certificates; no shell, no package manager), as a non-root user.
#
#   docker build -t latchkey:0.1.0 .
#   docker run --rm -p 50051:50051 -p 8080:8080 latchkey:0.1.0
#
# Without LATCHKEY_DATABASE_URL it runs on SQLite in /var/lib/latchkey (inside
# the container: mount a volume there to keep it). See README.md "Running it
# for real", docs/operations.md and the Helm chart in helm/latchkey.

# ---------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never

# 1. Dependencies only, in their own layer: rebuilt when Cargo.toml,
#    Cargo.lock, build.rs or the protos change, not on every source edit.
#    Stub targets stand in for the crate's own code (the manifest names a
#    library, a binary, a test and a bench, which must exist to be parsed),
#    and for the workspace's other member, the Rust client (its manifest
#    only: the image never builds it).
COPY Cargo.toml Cargo.lock build.rs ./
COPY clients/rust/Cargo.toml ./clients/rust/
COPY proto ./proto
RUN mkdir -p src benches tests/api clients/rust/src clients/rust/examples \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && echo 'fn main() {}' > benches/load.rs \
    && : > tests/api/main.rs \
    && : > clients/rust/src/lib.rs \
    && echo 'fn main() {}' > clients/rust/examples/axum.rs \
    && cargo build --release --locked \
    && rm -rf src \
        target/release/latchkey target/release/latchkey.d \
        target/release/deps/latchkey-* target/release/deps/liblatchkey-* \
        target/release/.fingerprint/latchkey-*

# 2. The crate itself. Everything compiled in: migrations and email templates
#    are embedded with sqlx::migrate! and include_str!.
COPY src ./src
COPY migrations ./migrations
COPY templates ./templates
RUN cargo build --release --locked \
    && install -D -m 0755 target/release/latchkey /out/usr/local/bin/latchkey \
    && /out/usr/local/bin/latchkey --version \
    && mkdir -p /out/var/lib/latchkey

# ---------------------------------------------------------------------------
# Same Debian release (glibc) as the builder.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="latchkey" \
      org.opencontainers.image.description="Backend-first passwordless email authentication over gRPC" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

COPY --from=builder /out/usr/local/bin/latchkey /usr/local/bin/latchkey
# The data directory (SQLite, dev mailbox), owned by the runtime user so the
# image also works without a mounted volume.
COPY --from=builder --chown=65532:65532 /out/var/lib/latchkey /var/lib/latchkey

# Listen on every interface inside the container; log JSON lines.
ENV LATCHKEY_GRPC_ADDR=0.0.0.0:50051 \
    LATCHKEY_HTTP_ADDR=0.0.0.0:8080 \
    LATCHKEY_METRICS_ADDR=0.0.0.0:9464 \
    LATCHKEY_DATA_DIR=/var/lib/latchkey \
    LATCHKEY_LOG_FORMAT=json

USER 65532:65532
WORKDIR /var/lib/latchkey
# 50051: gRPC (+ grpc-web, grpc.health.v1, reflection); 8080: JSON gateway,
# /healthz, /readyz, /openapi.json, /.well-known/jwks.json; 9464: Prometheus
# /metrics (publish it to your monitoring only, never to clients).
EXPOSE 50051 8080 9464
# Exec form: latchkey is PID 1 and receives SIGTERM directly (graceful drain).
ENTRYPOINT ["/usr/local/bin/latchkey"]
CMD ["serve"]
