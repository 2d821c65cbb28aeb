# syntax=docker/dockerfile:1
# Build: docker build -t gateway .
# Run:   docker run --net=host --cap-add NET_ADMIN --cap-add SYS_ADMIN --device /dev/net/tun \
#          -e GATEWAY_TOKEN=... -v gateway-data:/var/lib/gateway gateway

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY migrations ./migrations
COPY src ./src
RUN cargo build --release --locked && strip target/release/gateway

FROM debian:bookworm-slim
# The same install script CI uses: wireguard-tools, wireguard-go, iptables,
# iproute2, nginx with the stream module.
COPY scripts/install-deps.sh /usr/local/lib/gateway/install-deps.sh
RUN /usr/local/lib/gateway/install-deps.sh --runtime && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/gateway /usr/local/bin/gateway
COPY docker/entrypoint.sh /usr/local/bin/gateway-entrypoint

ENV GATEWAY_PORT=8000 \
    GATEWAY_DATABASE=/tmp/gateway.db \
    ROCKET_ADDRESS=0.0.0.0 \
    RUST_LOG=info,rocket=warn
# GATEWAY_TOKEN comes from the environment at run time (required: the API
# listens on 0.0.0.0 here, and the daemon refuses an open API off loopback).

EXPOSE 8000 80 443
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${GATEWAY_PORT}/health" || exit 1
ENTRYPOINT ["/usr/local/bin/gateway-entrypoint"]
