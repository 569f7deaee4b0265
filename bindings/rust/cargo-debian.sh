#!/usr/bin/env bash
# Runs Debian's cargo on this crate, offline, with Debian's packaged crates
# (/usr/share/cargo/registry, filled by librust-vm-memory-dev and its dependencies):
#
#   bindings/rust/cargo-debian.sh test --features vm-memory
#   bindings/rust/cargo-debian.sh run --release --example global_alloc
#
# Always /usr/bin/cargo, /usr/bin/rustc and /usr/bin/rustdoc (Debian 12: rustc 1.63), never a
# newer toolchain that may be on PATH (~/.cargo/bin): the crate must build with what CI has.
# CARGO_HOME is private to the target directory, so no user config or registry is read.
#   MAPALLOC_BUILD_DIR=DIR   link DIR/libmapalloc.a instead of building the C library
#   CARGO_TARGET_DIR=DIR     default: <repo>/build/cargo
# Exits 77 (ctest's SKIPPED) when Debian's toolchain or vm-memory is not installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
for f in /usr/bin/cargo /usr/bin/rustc /usr/bin/rustdoc; do
  if [ ! -x "$f" ]; then
    echo "cargo-debian.sh: SKIPPED: $f missing (apt-get install cargo rustc librust-vm-memory-dev)"
    exit 77
  fi
done
if ! compgen -G '/usr/share/cargo/registry/vm-memory-0.10*' >/dev/null; then
  echo "cargo-debian.sh: SKIPPED: /usr/share/cargo/registry has no vm-memory 0.10 (apt-get install librust-vm-memory-dev)"
  exit 77
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$top/build/cargo}
# Relative paths are the caller's: make them absolute before cd.
CARGO_TARGET_DIR=$(realpath -m "$CARGO_TARGET_DIR")
if [ -n "${MAPALLOC_BUILD_DIR:-}" ]; then export MAPALLOC_BUILD_DIR=$(realpath -m "$MAPALLOC_BUILD_DIR"); fi
export CARGO_HOME=$CARGO_TARGET_DIR/cargo-home
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
unset RUSTUP_TOOLCHAIN RUSTFLAGS
mkdir -p "$CARGO_HOME"
cd "$here"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-${MAPALLOC_TEST_JOBS:-2}}
exec /usr/bin/cargo --config "$here/debian-offline.toml" "$@"
