#!/usr/bin/env bash
# Builds Buoy's image from the Dockerfile with no image registry: a Debian base made with
# debootstrap (from the Debian mirror apt already uses, or $DEBIAN_MIRROR), imported into
# podman, builds the binary with this machine's Rust toolchain and crate cache mounted in; then
# the image runs `/sonobuoy --version` and its user and contents are shown. Opt-in: needs root,
# debootstrap and podman (apt-get install debootstrap podman), and a few minutes.
#
#   scripts/build-image.sh [TAG]        (default buoy:<version>)
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
tag=${1:-buoy:$version}
work=${WORK:-/tmp/buoy-image}
suite=${SUITE:-bookworm}
for tool in debootstrap podman; do
  command -v "$tool" >/dev/null || { echo "build-image: $tool is missing (apt-get install $tool)" >&2; exit 2; }
done
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  # The first Debian archive apt is configured with (deb822 or one-line sources).
  mirror=$(grep -hs -m1 '^URIs:.*/debian/\?$' /etc/apt/sources.list.d/*.sources | awk '{print $2}' || true)
  [ -n "$mirror" ] || mirror=$(grep -hs -m1 '^deb .*/debian/\? ' /etc/apt/sources.list | awk '{print $2}' || true)
fi
[ -n "$mirror" ] || { echo "build-image: set DEBIAN_MIRROR to a Debian archive" >&2; exit 2; }
# Container settings any host allows: limits no higher than this shell's (podman raises them
# by default, which needs CAP_SYS_RESOURCE), and runc where it is installed (crun refuses
# hosts with cgroups in hybrid mode). PODMAN_RUNTIME picks another runtime.
runtime=()
if [ -n "${PODMAN_RUNTIME:-}" ]; then runtime=(--runtime "$PODMAN_RUNTIME");
elif command -v runc >/dev/null; then runtime=(--runtime runc); fi
limits=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=4096:4096")
cargo_home=${CARGO_HOME:-$HOME/.cargo}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}

base=localhost/buoy-builder-base:$suite
if ! podman image exists "$base"; then
  rm -rf "$work/rootfs"
  mkdir -p "$work"
  echo "== debootstrap --variant=minbase $suite (with gcc for linking)"
  debootstrap --variant=minbase --include=gcc,libc6-dev "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log"
  echo "== importing it as $base"
  tar -C "$work/rootfs" -c . | podman import \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$base" >/dev/null
  rm -rf "$work/rootfs"
fi

echo "== podman build -t $tag (BUILDER=$base, toolchain and crate cache mounted)"
podman "${runtime[@]}" build "${limits[@]}" --build-arg BUILDER="$base" --build-arg CARGO_NET_OFFLINE=true \
  -v "$cargo_home:/usr/local/cargo" -v "$rustup_home:/usr/local/rustup:ro" \
  -t "$tag" .

echo "== podman run --rm $tag /sonobuoy --version"
podman "${runtime[@]}" run --rm "${limits[@]}" "$tag" /sonobuoy --version
echo "== user: $(podman image inspect --format '{{.Config.User}}' "$tag"), size: $(podman image inspect --format '{{.Size}}' "$tag") bytes"
echo "== contents:"
cid=$(podman create "$tag")
podman export "$cid" | tar -t | grep -v '/$' | sort
podman rm "$cid" >/dev/null
