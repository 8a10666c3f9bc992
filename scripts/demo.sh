#!/usr/bin/env bash
# Start the echo upstream on :8080 and Envoy with envoy/demo.yaml on :10000 (admin :9901).
# Called by `make demo` after the build; Ctrl-C stops everything it started.
#
# When the test engine is built (`make rls-engine`: PALISADE_RLS_BIN) and Debian's redis-server is
# installed, it also starts Redis on 127.0.0.1:6390 (persistence off), the engine on :8081 with
# deploy/compose/limits.yaml, and a second Envoy of the same config on :10001 (admin :9902), so the
# walk-through's global step shows one limit across two Envoys. Without them, the /global rule
# falls back to each Envoy's own bucket (its `on_error: local`).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ENVOY_BIN:?ENVOY_BIN must point at an envoy binary (make demo sets it)}"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

./target/release/palisade-upstream --listen 127.0.0.1:8080 &
pids+=($!)

engine=${PALISADE_RLS_BIN:-}
global="no engine: /global falls back to this Envoy's own bucket (run \`make rls-engine\` for the global step)"
if [ -n "$engine" ] && [ -x "$engine" ] && command -v redis-server >/dev/null 2>&1; then
  mkdir -p target/demo
  redis-server --bind 127.0.0.1 --port 6390 --save "" --appendonly no --dir target/demo \
    >target/demo/redis.log 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    redis-cli -p 6390 ping >/dev/null 2>&1 && break
    sleep 0.05
  done
  "$engine" --listen 127.0.0.1:8081 --redis redis://127.0.0.1:6390 \
    --limits deploy/compose/limits.yaml --rate-limit-headers DRAFT_VERSION_03 \
    >target/demo/rls.log 2>&1 &
  pids+=($!)
  sed -e 's/port_value: 10000/port_value: 10001/' -e 's/port_value: 9901/port_value: 9902/' \
    envoy/demo.yaml >target/demo/envoy-b.yaml
  "$ENVOY_BIN" -c target/demo/envoy-b.yaml --concurrency 2 --log-level warn --base-id 1 \
    >target/demo/envoy-b.log 2>&1 &
  pids+=($!)
  global="Redis :6390, the rate limit engine :8081, a second Envoy on :10001 (admin :9902; log target/demo/)"
fi

cat <<TXT

Palisade demo — Envoy on http://127.0.0.1:10000, admin on http://127.0.0.1:9901
Global step: $global
TXT
cat scripts/walkthrough.txt
echo

"$ENVOY_BIN" -c envoy/demo.yaml --concurrency 2 --log-level info
