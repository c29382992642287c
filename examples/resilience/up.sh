#!/usr/bin/env bash
# Brings up the resilience example: six demo backends (`weir echo`, one of them broken) and
# `weir run` on this folder. Ctrl-C stops everything. Ports can be changed with WEIR_HTTP_PROXY,
# WEIR_ADMIN and WEIR_DISCOVERY; the backends listen on 127.0.0.1:9101-9106 as services.yaml says.
set -euo pipefail
# shellcheck source=../weir.sh
source "$(dirname "$0")/../weir.sh"
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
