#!/usr/bin/env bash
# `make demo-compose` / `make demo-compose-down`: the demo under docker compose
# (deploy/compose/compose.yaml). `up` starts it detached, waits until Envoy's admin port says ready,
# and prints the walk-through; `down` removes its containers and network.
# ENVOY_IMAGE and UPSTREAM_IMAGE pick the images (the Makefile passes the local builds);
# DEMO_PORT and DEMO_ADMIN_PORT the ports published on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/docker-lib.sh
. scripts/docker-lib.sh
require_docker_engine
read -r -a compose <<<"$(compose_cmd)"
project=${COMPOSE_PROJECT:-palisade-demo}
run() { "${compose[@]}" -p "$project" -f deploy/compose/compose.yaml "$@"; }

case "${1:-}" in
  up)
    run up -d --remove-orphans
    admin="http://127.0.0.1:${DEMO_ADMIN_PORT:-9901}"
    deadline=$((SECONDS + 60))
    until curl -fsS -o /dev/null "$admin/ready" 2>/dev/null; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "demo-compose: Envoy not ready on $admin after 60 s; its log:" >&2
        run logs --no-color envoy >&2 || true
        run down --remove-orphans >&2 || true
        exit 1
      fi
      sleep 0.2
    done
    cat <<TXT

Palisade demo under docker compose (project $project) — Envoy on http://127.0.0.1:${DEMO_PORT:-10000},
admin on $admin. Logs: ${compose[*]} -p $project -f deploy/compose/compose.yaml logs -f envoy
Stop it with: make demo-compose-down
TXT
    cat scripts/walkthrough.txt
    ;;
  down)
    run down --remove-orphans --volumes
    ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
