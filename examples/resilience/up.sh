#!/usr/bin/env bash
# Brings up the resilience example: six demo backends (`weir echo`, one of them broken) and
# `weir run` on this folder. Ctrl-C stops everything. Ports can be changed with WEIR_HTTP_PROXY,
# WEIR_ADMIN and WEIR_DISCOVERY; the backends listen on 127.0.0.1:9101-9106 as services.yaml says.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
weir="${WEIR:-$root/target/release/weir}"
if [ ! -x "$weir" ]; then
  echo "building weir (cargo build --release -p weir)…" >&2
  (cd "$root" && cargo build --release -p weir)
fi
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
"$weir" echo --listen 127.0.0.1:9101 --name ratings-1 & pids+=($!)
"$weir" echo --listen 127.0.0.1:9102 --name ratings-2 & pids+=($!)
"$weir" echo --listen 127.0.0.1:9103 --name ratings-broken --status 500 & pids+=($!)
"$weir" echo --listen 127.0.0.1:9104 --name orders-v1 & pids+=($!)
"$weir" echo --listen 127.0.0.1:9105 --name orders-v2 & pids+=($!)
"$weir" echo --listen 127.0.0.1:9106 --name httpbin & pids+=($!)
"$weir" run "$here" \
  --http-proxy "${WEIR_HTTP_PROXY:-127.0.0.1:15080}" \
  --admin "${WEIR_ADMIN:-127.0.0.1:15000}" \
  --discovery "${WEIR_DISCOVERY:-127.0.0.1:15010}" & pids+=($!)
wait "${pids[-1]}"
