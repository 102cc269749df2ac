# Buoy's image: the binary at /sonobuoy, as Sonobuoy's manifests and CLI expect (compat §6.1),
# so `buoy manifest`, Sonobuoy's own manifests, and `sonobuoy retrieve` (which execs
# `/sonobuoy splat /tmp/sonobuoy`) work unchanged. Build: docker build -t buoy:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p buoy

FROM debian:bookworm-slim
COPY --from=build /src/target/release/buoy /sonobuoy
WORKDIR /
CMD ["/sonobuoy", "aggregator", "--no-exit", "-v", "3", "--logtostderr"]
