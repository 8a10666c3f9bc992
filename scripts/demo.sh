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
TXT
cat scripts/walkthrough.txt
echo

"$ENVOY_BIN" -c envoy/demo.yaml --concurrency 2 --log-level info
