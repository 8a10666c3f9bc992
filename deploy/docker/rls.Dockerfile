# palisade/rls: the global rate limit tests' engine (tests/rls, `palisade-rls`: Envoy's RLS v3 over
# Kuadrant's limitador with Redis storage), on an empty root holding only the binary and the
# shared objects it links. Built by `make images RLS_IMAGES=1` from `make rls-engine`'s binary.
# Test and demo use only: production runs the official Limitador server or envoyproxy/ratelimit.
FROM scratch
COPY rootfs/ /
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/palisade-rls"]
CMD ["--listen", "0.0.0.0:8081", "--redis", "redis://redis:6379", "--limits", "/etc/palisade/limits.yaml"]
