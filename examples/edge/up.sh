#!/usr/bin/env bash
# Brings up the edge example: a certificate for shop.example.test (made once, with openssl, in
# certs/), a demo backend (`weir echo`, HTTP/2 on 127.0.0.1:8080) and `weir proxy --bootstrap
# envoy.yaml` (HTTPS on 127.0.0.1:8443, admin on 127.0.0.1:9901). Ctrl-C stops everything.
set -euo pipefail
# shellcheck source=../weir.sh
source "$(dirname "$0")/../weir.sh"
cd "$here"
if [ ! -f certs/shop.pem ]; then
  mkdir -p certs
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=shop.example.test \
    -addext "subjectAltName=DNS:shop.example.test,DNS:www.shop.example.test" \
    -keyout certs/shop-key.pem -out certs/shop.pem 2>/dev/null
fi
"$weir" echo --listen 127.0.0.1:8080 --name shop & pids+=($!)
"$weir" proxy --bootstrap envoy.yaml & pids+=($!)
wait "${pids[-1]}"
