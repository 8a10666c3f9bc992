#!/usr/bin/env bash
# `make demo-compose` / `make demo-compose-down`: the demo under docker compose
# (deploy/compose/compose.yaml). `up` starts it detached, waits until Envoy's admin port says ready,
# and prints the walk-through; `down` removes its containers and network.
# ENVOY_IMAGE, UPSTREAM_IMAGE, RLS_IMAGE (with RLS_SERVER) and REDIS_IMAGE pick the images (the
# Makefile passes the local builds); DEMO_PORT, DEMO_ADMIN_PORT, DEMO_B_PORT and DEMO_B_ADMIN_PORT
# the ports published on 127.0.0.1.
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
    b_admin="http://127.0.0.1:${DEMO_B_ADMIN_PORT:-9902}"
    deadline=$((SECONDS + 60))
    for service in envoy envoy-b; do
      a=$admin; [ "$service" = envoy ] || a=$b_admin
      until curl -fsS -o /dev/null "$a/ready" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
          echo "demo-compose: $service not ready on $a after 60 s; its log:" >&2
          run logs --no-color "$service" >&2 || true
          run down --remove-orphans >&2 || true
          exit 1
        fi
        sleep 0.2
      done
    done
    cat <<TXT

Palisade demo under docker compose (project $project) — Envoy on http://127.0.0.1:${DEMO_PORT:-10000}
(admin $admin), a second Envoy on http://127.0.0.1:${DEMO_B_PORT:-10001} (admin $b_admin), one
rate limit service and Redis shared by both. Logs: ${compose[*]} -p $project -f deploy/compose/compose.yaml logs -f
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
