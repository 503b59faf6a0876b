# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run in a small Debian slim image as a non-root user.
# Volumes: /etc/approval-gateway (config, read-only) and /var/lib/approval-gateway (SQLite data).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Cache dependencies: build a dummy crate with the real manifest first.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && cargo build --profile dist --locked \
    && rm -rf src
COPY src ./src
COPY migrations ./migrations
COPY build.rs ./
RUN touch src/main.rs src/lib.rs && cargo build --profile dist --locked \
    && cp target/dist/approval-gateway /approval-gateway

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /var/lib/approval-gateway --shell /usr/sbin/nologin gateway \
    && mkdir -p /etc/approval-gateway /var/lib/approval-gateway/data \
    && chown -R gateway:gateway /var/lib/approval-gateway
COPY --from=build /approval-gateway /usr/local/bin/approval-gateway
COPY config/gateway.toml /etc/approval-gateway/gateway.toml
COPY config/molecule.toml /etc/approval-gateway/molecule.toml

USER gateway:gateway
# The SQLite default (`sqlite://data/approvals.db`) is relative to this directory.
WORKDIR /var/lib/approval-gateway
ENV GATEWAY_CONFIG=/etc/approval-gateway/gateway.toml \
    GATEWAY_LISTEN=0.0.0.0:8080 \
    GATEWAY_ADMIN_LISTEN=0.0.0.0:9090 \
    RUST_LOG=info
EXPOSE 8080 9090
VOLUME ["/etc/approval-gateway", "/var/lib/approval-gateway"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9090/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/approval-gateway"]
CMD ["serve"]
