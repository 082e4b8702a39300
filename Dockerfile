# valv's container image: build the `valv` binary in the official Rust image, run it
# on Debian slim as a non-root user with its data under the /data volume.
#
#   docker build -t valv .
#   docker run -p 5000:5000 -v valv-data:/data valv
#
# docs/OPERATIONS.md "Running the image" covers configuration, keys, probes and
# stopping. The classic builder and BuildKit both build it (no BuildKit-only syntax).

# --------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build

# Cargo features of the `valv` package to build in, space-separated: `otlp` (traces
# by OTLP/HTTP, docs/OPERATIONS.md §5c) by default; `--build-arg VALV_FEATURES=`
# builds without it. Never `dev-keyvault` for an image that serves anything: it adds
# the fake Key Vault.
ARG VALV_FEATURES="otlp"

WORKDIR /src
COPY . .
# One step: build, keep the binary, drop the target directory (about 1 GB), so the
# layer holds only what the next stage copies.
RUN cargo build --release --locked -p valv --features "$VALV_FEATURES" \
    && install -D -m 0755 target/release/valv /out/valv \
    && objcopy --compress-debug-sections=zlib /out/valv \
    && rm -rf target

# --------------------------------------------------------------------------------
FROM debian:bookworm-slim

ARG VALV_VERSION=0.1.0
# The repository URL and commit the image is built from, e.g.
#   --build-arg VALV_SOURCE=<repository url> --build-arg VALV_REVISION=$(git rev-parse HEAD)
ARG VALV_SOURCE=""
ARG VALV_REVISION=""
LABEL org.opencontainers.image.title="valv" \
      org.opencontainers.image.description="An OCI registry whose storage is envelope-encrypted under a customer-managed key" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VALV_VERSION}" \
      org.opencontainers.image.source="${VALV_SOURCE}" \
      org.opencontainers.image.revision="${VALV_REVISION}"

# CA certificates for object stores and vaults behind a private or system CA; the
# user valv (uid/gid 10001, no login) owns /data, where the data directory lives.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 valv \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin valv \
    && mkdir -p /data /etc/valv \
    && chown 10001:10001 /data \
    && chmod 0750 /data

COPY --from=build /out/valv /usr/local/bin/valv

# Listen on every interface of the container (valv's own default is loopback only),
# and keep the data directory, with the local development key under /data/keys when
# no key id is configured, on the volume: a restart on the same volume finds the same
# key and content.
ENV VALV_LISTEN=0.0.0.0:5000 \
    VALV_DATA_DIR=/data
WORKDIR /data
VOLUME /data
EXPOSE 5000
USER 10001:10001
# valv drains in-flight requests on SIGTERM for server.shutdown_grace_secs (30 s by
# default) and exits 0; give `docker stop` a --stop-timeout (or `-t`) above that.
STOPSIGNAL SIGTERM
# /readyz on the listen address above (valv healthcheck reads the same settings):
# unhealthy while the key is revoked or the vault has been unreachable past its grace.
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s --retries=3 \
    CMD ["valv", "healthcheck"]
ENTRYPOINT ["valv"]
CMD ["serve"]
