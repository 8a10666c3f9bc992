#!/usr/bin/env bash
# `make images`: build Palisade's container images locally, pulling nothing.
#
#   palisade/envoy:<ENVOY_VERSION>      the pinned Envoy binary + the glibc files it links (FROM scratch)
#   palisade/upstream:<VERSION>         the echo upstream (tests/upstream), the same way
#   palisade/<module>-wasm:<VERSION>    one per module: one layer holding /plugin.wasm (Istio's image
#                                       shape), built reproducibly by `palisade-istio image`
#   palisade/rls:<VERSION>              only with RLS_BIN (`make images RLS_IMAGES=1`): the global rate
#                                       limit tests' engine (tests/rls), staged like the upstream
#   palisade/redis:<VERSION>            with it: Debian's redis-server and its libraries (elsewhere the
#                                       official redis:7 image serves)
#
# The Envoy and upstream images' build contexts are staged under target/images/<image>/ and hashed;
# an image whose label `io.palisade.context-digest` already equals that hash is not rebuilt. A Wasm
# image is not reloaded when Docker already holds its exact image id. So a run with nothing changed
# takes a few seconds. Prints what it built (or kept) with sizes.
#
# Environment (the Makefile sets all of it): ENVOY_BIN, ENVOY_VERSION, VERSION, CARGO, WASM_MODULES,
# UPSTREAM_BIN; optionally RLS_BIN (the engine binary) and REDIS_SERVER (default: redis-server on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ENVOY_BIN:?}" "${ENVOY_VERSION:?}" "${VERSION:?}" "${WASM_MODULES:?}" "${UPSTREAM_BIN:?}"

# shellcheck source=scripts/docker-lib.sh
. scripts/docker-lib.sh
require_docker_engine

stage_root=target/images
mkdir -p "$stage_root"

# Copy a dynamically linked binary and every shared object it links (as `ldd` resolves them on this
# machine) into ROOT, at the paths the loader looks for them.
stage_binary() {
  local bin=$1 root=$2 dest=$3
  mkdir -p "$root$(dirname "$dest")"
  cp -L "$bin" "$root$dest"
  chmod 0755 "$root$dest"
  local lib
  for lib in $(ldd "$bin" | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}

# sha256 over a context's file names, modes and contents.
context_digest() {
  (cd "$1" && find . -print0 | LC_ALL=C sort -z | xargs -0 stat -c '%n %a %F' &&
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

built=()
# build IMAGE CONTEXT DOCKERFILE: build unless the image's context digest is unchanged.
build() {
  local image=$1 ctx=$2 dockerfile=$3
  cp "$dockerfile" "$ctx/Dockerfile"
  local digest have
  digest=$(context_digest "$ctx")
  have=$(docker image inspect --format '{{ index .Config.Labels "io.palisade.context-digest" }}' "$image" 2>/dev/null || true)
  if [ "$have" = "$digest" ]; then
    built+=("$image unchanged")
    return
  fi
  echo "building $image" >&2
  local out
  if ! out=$(docker build --label io.palisade=1 --label "io.palisade.context-digest=$digest" \
    --label "org.opencontainers.image.version=${image##*:}" \
    -t "$image" "$ctx" 2>&1); then
    echo "$out" >&2
    echo "images: docker build of $image failed" >&2
    exit 1
  fi
  built+=("$image built")
}

# --- palisade/envoy ------------------------------------------------------------------------------
version_line=$("$ENVOY_BIN" --version)
case "$version_line" in
  *"/$ENVOY_VERSION/Clean/"*) ;;
  *) echo "images: $ENVOY_BIN is not a clean (Wasm-enabled) Envoy $ENVOY_VERSION build: $version_line" >&2
     exit 1 ;;
esac
ctx=$stage_root/envoy-$ENVOY_VERSION
rm -rf "$ctx" && mkdir -p "$ctx/rootfs/etc/envoy" "$ctx/rootfs/tmp"
chmod 1777 "$ctx/rootfs/tmp"
stage_binary "$(readlink -f "$ENVOY_BIN")" "$ctx/rootfs" /usr/local/bin/envoy
cp deploy/docker/envoy-default.yaml "$ctx/rootfs/etc/envoy/envoy.yaml"
printf 'root:x:0:0:root:/:/sbin/nologin\nenvoy:x:101:101:envoy:/:/sbin/nologin\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nenvoy:x:101:\n' >"$ctx/rootfs/etc/group"
build "palisade/envoy:$ENVOY_VERSION" "$ctx" deploy/docker/envoy.Dockerfile
# The image must run the same Wasm-enabled build: check it in a container, not just on the host.
in_image=$(docker run --rm --network none --label io.palisade=1 "palisade/envoy:$ENVOY_VERSION" --version)
case "$in_image" in
  *"/$ENVOY_VERSION/Clean/"*) ;;
  *) echo "images: palisade/envoy:$ENVOY_VERSION --version says: $in_image" >&2; exit 1 ;;
esac

# --- palisade/upstream ---------------------------------------------------------------------------
ctx=$stage_root/upstream-$VERSION
rm -rf "$ctx" && mkdir -p "$ctx/rootfs/etc"
stage_binary "$UPSTREAM_BIN" "$ctx/rootfs" /usr/local/bin/palisade-upstream
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$ctx/rootfs/etc/passwd"
build "palisade/upstream:$VERSION" "$ctx" deploy/docker/upstream.Dockerfile

# --- palisade/rls and palisade/redis (opt-in: RLS_BIN) -------------------------------------------
if [ -n "${RLS_BIN:-}" ]; then
  [ -x "$RLS_BIN" ] || { echo "images: $RLS_BIN is missing: run \`make rls-engine\`" >&2; exit 1; }
  ctx=$stage_root/rls-$VERSION
  rm -rf "$ctx" && mkdir -p "$ctx/rootfs/etc/palisade"
  stage_binary "$RLS_BIN" "$ctx/rootfs" /usr/local/bin/palisade-rls
  printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$ctx/rootfs/etc/passwd"
  build "palisade/rls:$VERSION" "$ctx" deploy/docker/rls.Dockerfile

  redis_server=$(command -v "${REDIS_SERVER:-redis-server}") ||
    { echo "images: redis-server not found (Debian: apt-get install redis-server; make rls-engine does)" >&2; exit 1; }
  ctx=$stage_root/redis-$VERSION
  rm -rf "$ctx" && mkdir -p "$ctx/rootfs/tmp" "$ctx/rootfs/etc"
  chmod 1777 "$ctx/rootfs/tmp"
  stage_binary "$(readlink -f "$redis_server")" "$ctx/rootfs" /usr/bin/redis-server
  printf 'root:x:0:0:root:/:/sbin/nologin\nredis:x:999:999:redis:/:/sbin/nologin\n' >"$ctx/rootfs/etc/passwd"
  printf 'root:x:0:\nredis:x:999:\n' >"$ctx/rootfs/etc/group"
  build "palisade/redis:$VERSION" "$ctx" deploy/docker/redis.Dockerfile
  # Both must start in their image: the engine answers --help, Redis --version.
  docker run --rm --network none --label io.palisade=1 "palisade/rls:$VERSION" palisade-rls --help >/dev/null ||
    { echo "images: palisade/rls:$VERSION does not run" >&2; exit 1; }
  docker run --rm --network none --label io.palisade=1 "palisade/redis:$VERSION" redis-server --version >/dev/null ||
    { echo "images: palisade/redis:$VERSION does not run" >&2; exit 1; }
fi

# --- palisade/<module>-wasm ----------------------------------------------------------------------
# Not `docker build`: that stamps the build time into the image, so every build would get a new
# digest and deploy/istio's pins (`make istio-pin`) could never hold. `palisade-istio image` builds
# each image reproducibly from dist/<module>.wasm (one layer: /plugin.wasm, owner 0:0, mode 0644,
# mtime 0; a fixed creation time) and `docker load`s it: the same module, the same image id.
if ! wasm_images=$("${CARGO:-cargo}" run -q -p palisade-harness --bin palisade-istio -- image "$VERSION" $WASM_MODULES); then
  echo "images: building the Wasm images failed" >&2
  exit 1
fi
while read -r image status; do
  [ -n "$image" ] && built+=("$image $status")
done <<<"$wasm_images"

printf '%-36s %-10s %10s\n' IMAGE STATUS SIZE
for entry in "${built[@]}"; do
  image=${entry% *}
  status=${entry##* }
  size=$(docker image inspect --format '{{ .Size }}' "$image")
  printf '%-36s %-10s %10s\n' "$image" "$status" "$(numfmt --to=iec-i --suffix=B "$size")"
done
