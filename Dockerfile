# The nervix binary in a small image. Build:  docker build -t nervix .
# Run (embedded default, data on a volume):
#   docker run -p 8080:8080 -v nervix-data:/var/lib/nervix nervix
# Several nodes: set NERVIX_DATABASE_URL (postgres://...) and NERVIX_REDIS_URL (docs/DEPLOY.md).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions of Cargo.lock. Only the binary's crate is built.
RUN cargo build --release --locked -p nervix-cli \
    && install -m 0755 target/release/nervix /usr/local/bin/nervix

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/nervix --create-home --shell /usr/sbin/nologin nervix
COPY --from=build /usr/local/bin/nervix /usr/local/bin/nervix
USER nervix
ENV NERVIX_BIND=0.0.0.0:8080 \
    NERVIX_DATA_DIR=/var/lib/nervix \
    NERVIX_LOG_JSON=true
VOLUME /var/lib/nervix
EXPOSE 8080
# SIGTERM drains (in-flight requests finish, agents are told to reconnect); give it time.
STOPSIGNAL SIGTERM
ENTRYPOINT ["nervix"]
CMD ["serve"]
