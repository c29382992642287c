# Sourced by the examples' up.sh: sets `here` (the example's folder) and `weir` (the binary:
# $WEIR, else target/release/weir, built first when missing), and a `cleanup` of the processes
# an example starts (their pids in `pids`), run when it stops.
here="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
weir="${WEIR:-$root/target/release/weir}"
if [ ! -x "$weir" ]; then
  echo "building weir (cargo build --release -p weir)…" >&2
  (cd "$root" && cargo build --release -p weir)
fi
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
