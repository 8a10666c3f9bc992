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
Try, in another terminal (from the repository root):

  # the echo upstream shows what reached it; x-palisade-probe is the cross-worker request count
  curl -s localhost:10000/hello?x=1 | python3 -m json.tool

  # jwt_auth: /secure needs a token (401 without, 200 with); /admin needs the `admin` scope (403)
  curl -si localhost:10000/secure | grep -i -E '^(HTTP|www-authenticate)'
  curl -s -H "Authorization: Bearer $(make -s token)" localhost:10000/secure | python3 -m json.tool | grep x-jwt
  curl -si -H "Authorization: Bearer $(make -s token)" localhost:10000/admin | head -1

  # rate_limit: under /limited, a burst of 5 per client IP, then 429 with Retry-After and RateLimit-*
  for i in $(seq 8); do curl -s -o /dev/null -w "%{http_code} " localhost:10000/limited; done; echo
  curl -si localhost:10000/limited | grep -i -E '^(HTTP|retry-after|ratelimit)'

  # bulkhead: 2 in flight at most; 6 slow requests at once: some wait, the rest get 503
  for i in $(seq 6); do curl -s -o /dev/null -w "%{http_code} " -H 'x-upstream-delay-ms: 600' localhost:10000/slow & done; wait; echo

  # circuit_breaker: 5 upstream failures open it; then requests fail fast for 5 s (x-palisade-circuit: open)
  for i in $(seq 5); do curl -s -o /dev/null -w "%{http_code} " -H 'x-upstream-status: 503' localhost:10000/fail; done; echo
  curl -si localhost:10000/ | grep -i -E '^(HTTP|x-palisade-circuit|retry-after)'

  # transform: path, headers, query and JSON body rewritten on the way in; the response too
  curl -s -X POST -H 'content-type: application/json' -H 'x-internal-secret: 1' \
       -d '{"name": "ada", "password": "hunter2"}' 'localhost:10000/v1/users/42?debug=1' | python3 -m json.tool

  # every decision is a metric
  curl -s localhost:9901/stats | grep palisade

TXT

"$ENVOY_BIN" -c envoy/demo.yaml --concurrency 2 --log-level info
