# syntax=docker/dockerfile:1
# Ordo's one binary, holding every role; docker-compose.yml runs each role from this image.
# tests/deploy.rs keeps this file, the compose file and the README's release build in step.

# The toolchain CI builds with (Cargo.toml's rust-version is only the floor).
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The README's release build, restricted to the binary. The cache mounts keep downloaded
# crates and compiled dependencies between builds, so a code change rebuilds only Ordo;
# the binary is copied out because the target cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ordo \
    && cp target/release/ordo /usr/local/bin/ordo

FROM debian:bookworm-slim
# curl only for the health check below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin ordo
COPY --from=builder /usr/local/bin/ordo /usr/local/bin/ordo
USER ordo
# In a container the HTTP endpoints (API, /metrics, /healthz, /readyz) must be reachable
# from other containers, not only from loopback.
ENV ORDO_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
# The port comes from ORDO_HTTP_ADDR, so the check follows it when it is overridden.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${ORDO_HTTP_ADDR##*:}/healthz" >/dev/null || exit 1
ENTRYPOINT ["ordo"]
CMD ["serve"]
