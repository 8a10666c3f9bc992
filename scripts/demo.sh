#!/usr/bin/env bash
# Start the echo upstream on :8080 and Envoy with envoy/demo.yaml on :10000 (admin :9901).
# Called by `make demo` after the build; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ENVOY_BIN:?ENVOY_BIN must point at an envoy binary (make demo sets it)}"

./target/release/palisade-upstream --listen 127.0.0.1:8080 &
upstream=$!
trap 'kill $upstream 2>/dev/null || true' EXIT

cat <<'TXT'

Palisade demo — Envoy on http://127.0.0.1:10000, admin on http://127.0.0.1:9901
Try, in another terminal:

  # the echo upstream shows what reached it; x-palisade-probe is the cross-worker request count
  curl -s localhost:10000/hello?x=1 | python3 -m json.tool

  # rate_limit: a burst of 5 per client IP, then 429 with Retry-After and RateLimit-* headers
  for i in $(seq 8); do curl -s -o /dev/null -w "%{http_code} " localhost:10000/; done; echo
  curl -si localhost:10000/ | grep -i -E '^(HTTP|retry-after|ratelimit)'

  # ask the upstream for a status or a delay
  curl -si localhost:10000/fail -H 'x-upstream-status: 503'
  curl -si localhost:10000/slow -H 'x-upstream-delay-ms: 500'

  # every decision is a metric
  curl -s localhost:9901/stats | grep palisade

TXT

"$ENVOY_BIN" -c envoy/demo.yaml --concurrency 2 --log-level info
