#!/usr/bin/env bash
# Interop tests: Weir's control plane driven by clients nobody here wrote.
# Creates target/interop-venv with the pinned packages (once), builds `weir`, runs the tests.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/interop-venv"
if ! "$venv/bin/python" -c "import grpc" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/interop/requirements.txt"
fi
cargo build --quiet -p weir
export WEIR_BIN="$root/target/debug/weir"
exec "$venv/bin/python" -m unittest discover --start-directory "$root/interop/grpc" --pattern 'test_*.py' --verbose
