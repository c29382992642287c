#!/usr/bin/env bash
# Brings up the edge example: a certificate for shop.example.test (made once, with openssl, in
# certs/), a demo backend (`weir echo`, HTTP/2 on 127.0.0.1:8080) and `weir proxy --bootstrap
# envoy.yaml` (HTTPS on 127.0.0.1:8443, admin on 127.0.0.1:9901). Ctrl-C stops everything.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
weir="${WEIR:-$root/target/release/weir}"
if [ ! -x "$weir" ]; then
  echo "building weir (cargo build --release -p weir)…" >&2
  (cd "$root" && cargo build --release -p weir)
fi
cd "$here"
if [ ! -f certs/shop.pem ]; then
  mkdir -p certs
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=shop.example.test \
    -addext "subjectAltName=DNS:shop.example.test,DNS:www.shop.example.test" \
    -keyout certs/shop-key.pem -out certs/shop.pem 2>/dev/null
fi
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
"$weir" echo --listen 127.0.0.1:8080 --name shop & pids+=($!)
"$weir" proxy --bootstrap envoy.yaml & pids+=($!)
wait "${pids[-1]}"
