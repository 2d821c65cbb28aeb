# syntax=docker/dockerfile:1
# Build: docker build -t gateway .
# Run:   docker compose -f packaging/compose.yaml up -d --build, or the
#        docker run line of docs/operating.md (Containers), which is the same.
# Restarting the container interrupts every network (wireguard-go and nginx
# end with it): see there.
# The image's database is /var/lib/gateway/gateway.db, a volume (the daemon's
# own default is in memory): name the volume (as above) so the desired state
# and the traffic counters survive the container, or a new container counts
# the interfaces' bytes again. Secrets and databases stay out of the build
# context (.dockerignore).

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY migrations ./migrations
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked && strip target/release/gateway

FROM debian:bookworm-slim
# The same install script CI uses: wireguard-tools, wireguard-go, iptables,
# iproute2, nginx with the stream module.
COPY scripts/install-deps.sh /usr/local/lib/gateway/install-deps.sh
RUN /usr/local/lib/gateway/install-deps.sh --runtime \
 && apt-get install -y -qq --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* && mkdir -p /var/lib/gateway
COPY --from=build /src/target/release/gateway /usr/local/bin/gateway
COPY docker/entrypoint.sh /usr/local/bin/gateway-entrypoint

ENV GATEWAY_PORT=8000 \
    GATEWAY_DATABASE=/var/lib/gateway/gateway.db \
    ROCKET_ADDRESS=0.0.0.0 \
    RUST_LOG=info,rocket=error,gateway::api::_=error
# GATEWAY_TOKEN comes from the environment at run time (required: the API
# listens on 0.0.0.0 here, and the daemon refuses an open API off loopback).

VOLUME /var/lib/gateway
EXPOSE 8000 80 443
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${GATEWAY_PORT}/health" || exit 1
# tini reaps what the daemon starts and leaves behind (wireguard-go forks
# into the background; nginx's master is re-parented here).
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/gateway-entrypoint"]
