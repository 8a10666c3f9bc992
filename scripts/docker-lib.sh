# Shared by the scripts that use Docker (sourced, not run). Everything Palisade starts carries the
# label `io.palisade` (containers, compose networks and volumes, images), so it can be found and
# removed without touching anything else on the machine.

# Fail with a clear message unless a Docker engine answers.
require_docker_engine() {
  if ! command -v docker >/dev/null 2>&1; then
    echo "error: the Docker tier needs the docker CLI and a running engine; 'docker' is not on PATH" >&2
    exit 1
  fi
  local err
  if ! err=$(timeout 20 docker info --format '{{.ServerVersion}}' 2>&1 >/dev/null); then
    echo "error: no Docker engine answers ('docker info' failed: ${err:-timed out})." >&2
    echo "       Start the engine (e.g. 'dockerd' or 'systemctl start docker'); the Docker tier is part of make test." >&2
    exit 1
  fi
}

# The compose command: `docker compose` (v2 plugin) if present, else `docker-compose` (v1).
compose_cmd() {
  if docker compose version >/dev/null 2>&1; then
    echo "docker compose"
  elif command -v docker-compose >/dev/null 2>&1; then
    echo "docker-compose"
  else
    echo "error: neither 'docker compose' nor 'docker-compose' is available" >&2
    return 1
  fi
}

# Print our leftover containers, networks and volumes (none: prints nothing).
palisade_leftovers() {
  docker ps -a --filter label=io.palisade --format 'container {{.Names}} ({{.Image}}, {{.Status}})'
  docker network ls --filter label=io.palisade --format 'network {{.Name}}'
  docker volume ls --filter label=io.palisade --format 'volume {{.Name}}'
}

# Remove our leftover containers, networks and volumes (only ours: selected by label).
remove_palisade_leftovers() {
  local ids
  ids=$(docker ps -aq --filter label=io.palisade)
  [ -z "$ids" ] || docker rm -f $ids >/dev/null
  ids=$(docker network ls -q --filter label=io.palisade)
  [ -z "$ids" ] || docker network rm $ids >/dev/null
  ids=$(docker volume ls -q --filter label=io.palisade)
  [ -z "$ids" ] || docker volume rm $ids >/dev/null
}
