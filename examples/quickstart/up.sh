#!/usr/bin/env bash
# Brings up the quickstart: three demo backends (`weir echo`) and `weir run` on this folder.
# Ctrl-C stops everything. Ports can be changed with WEIR_HTTP_PROXY, WEIR_ADMIN and
# WEIR_DISCOVERY; the backends listen on 127.0.0.1:9001-9003 as services.yaml says.
set -euo pipefail
# shellcheck source=../weir.sh
source "$(dirname "$0")/../weir.sh"
"$weir" echo --listen 127.0.0.1:9001 --name hello-v1 & pids+=($!)
"$weir" echo --listen 127.0.0.1:9002 --name hello-v2 & pids+=($!)
"$weir" echo --listen 127.0.0.1:9003 --name weather-api & pids+=($!)
"$weir" run "$here" \
  --http-proxy "${WEIR_HTTP_PROXY:-127.0.0.1:15080}" \
  --admin "${WEIR_ADMIN:-127.0.0.1:15000}" \
  --discovery "${WEIR_DISCOVERY:-127.0.0.1:15010}" & pids+=($!)
wait "${pids[-1]}"
