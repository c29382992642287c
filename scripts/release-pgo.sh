#!/usr/bin/env bash
# Builds target/pgo/weir: the release build of `weir`, optimised with a profile of its own data
# path (profile-guided optimisation). `make release-pgo` runs it; docs/performance.md says what it
# gains and what the profile covers.
#
#   1. an instrumented build (target/pgo/gen), which counts how often each branch is taken;
#   2. a training run: bench/proxy/pgo_train.py drives it with HTTP/1.1 and HTTP/2 load through
#      the proxy and `weir validate` over configuration;
#   3. the counts merged with llvm-profdata, and the optimised build (target/pgo/use) that lays
#      out and inlines hot code by them, copied to target/pgo/weir.
#
# Needs llvm-profdata of the LLVM major version rustc uses (`rustc -vV`); installs llvm-N from
# Debian when it is missing. The instrumented and optimised builds keep their own target
# directories, so they do not disturb target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

host=$(rustc -vV | sed -n 's/^host: //p')
llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profdata="llvm-profdata-$llvm"
if ! command -v "$profdata" >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "release-pgo: $profdata is missing; install LLVM $llvm's llvm-profdata (rustc $(rustc -V | cut -d' ' -f2) uses LLVM $llvm)" >&2
    exit 2
  fi
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "release-pgo: installing llvm-$llvm from Debian (for $profdata)" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q --no-install-recommends "llvm-$llvm" >/dev/null 2>&1 ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends "llvm-$llvm" >/dev/null; } ||
    { echo "release-pgo: cannot install llvm-$llvm; install LLVM $llvm's llvm-profdata by hand" >&2; exit 2; }
fi

profiles="$PWD/target/pgo/profiles"
rm -rf "$profiles"
mkdir -p "$profiles"

# `--target` keeps the flags off build scripts and proc macros (they run on the build machine).
echo "release-pgo: 1/3 instrumented build" >&2
CARGO_TARGET_DIR=target/pgo/gen RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$profiles" \
  $CARGO build --release --target "$host" -p weir --bin weir
# The load generator and backend of the training run are an ordinary release build.
$CARGO build --release -p weir --example loadgen

echo "release-pgo: 2/3 training" >&2
python3 bench/proxy/pgo_train.py "target/pgo/gen/$host/release/weir"
"$profdata" merge -o "$profiles/merged.profdata" "$profiles"/*.profraw
# Cargo does not watch the profile's content, only the flags: naming the file by its content
# makes a new profile rebuild every crate (a crate built with the old one would keep its layout).
profile="$profiles/weir-$(sha256sum "$profiles/merged.profdata" | cut -c1-16).profdata"
mv "$profiles/merged.profdata" "$profile"

echo "release-pgo: 3/3 optimised build" >&2
CARGO_TARGET_DIR=target/pgo/use RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$profile" \
  $CARGO build --release --target "$host" -p weir --bin weir
cp "target/pgo/use/$host/release/weir" target/pgo/weir
echo "release-pgo: built target/pgo/weir" >&2
