# Buoy's image: the binary at /sonobuoy, as Sonobuoy's manifests and CLI expect (compat §6.1),
# so `buoy manifest`, Sonobuoy's own manifests, and `sonobuoy retrieve` (which execs
# `/sonobuoy splat /tmp/sonobuoy`) work unchanged. It holds only the binary, the libraries it
# links and a non-root user (65532). Build: docker build -t buoy:0.1.0 .
# With no image registry at hand, scripts/build-image.sh builds it with podman from a
# debootstrapped Debian (BUILDER) and this machine's Rust toolchain.
ARG BUILDER=rust:1-bookworm
FROM ${BUILDER} AS build
# Build arguments reach RUN as environment: CARGO_NET_OFFLINE=true builds from a mounted cache.
ARG CARGO_NET_OFFLINE
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p buoy \
 && mkdir -p /out/etc /out/tmp \
 && chmod 1777 /out/tmp \
 && cp target/release/buoy /out/sonobuoy \
 && for lib in $(ldd /out/sonobuoy | grep -o '/[^ ]*'); do \
      mkdir -p "/out$(dirname "$lib")" && cp -L "$lib" "/out$lib"; \
    done \
 && echo 'nonroot:x:65532:65532:nonroot:/:/sbin/nologin' > /out/etc/passwd \
 && echo 'nonroot:x:65532:' > /out/etc/group

FROM scratch
COPY --from=build /out /
USER 65532:65532
WORKDIR /
CMD ["/sonobuoy", "aggregator", "--no-exit", "-v", "3", "--logtostderr"]
