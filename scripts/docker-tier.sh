#!/usr/bin/env bash
# The Docker tier of `make test` (`make e2e-docker`): runs the given test command with
# PALISADE_RUNNER=docker, so every end-to-end test starts Envoy in a container of
# $PALISADE_ENVOY_IMAGE, and the docker_only tests (image checks, the compose demo) run too.
# Fails if no Docker engine answers, and fails if any container, network or volume of ours
# (label io.palisade) is left afterwards (removing it, so the next run starts clean).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/docker-lib.sh
. scripts/docker-lib.sh
require_docker_engine

before=$(palisade_leftovers)
if [ -n "$before" ]; then
  echo "docker tier: removing what an earlier, interrupted run left:" >&2
  echo "$before" | sed 's/^/  /' >&2
  remove_palisade_leftovers
fi

status=0
PALISADE_RUNNER=docker "$@" || status=$?

left=$(palisade_leftovers)
if [ -n "$left" ]; then
  echo "docker tier: FAILED: the tests left these behind (now removed):" >&2
  echo "$left" | sed 's/^/  /' >&2
  remove_palisade_leftovers
  exit 1
fi
echo "docker tier: no Palisade container, network or volume left"
exit "$status"
