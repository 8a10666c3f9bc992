# palisade/rls: the global rate limit tests' engine (tests/rls, `palisade-rls`: Envoy's RLS v3 over
# Kuadrant's limitador with Redis storage), on an empty root holding only the binary and the
# shared objects it links. Built by `make images RLS_IMAGES=1` from `make rls-engine`'s binary.
# Test and demo use only: production runs the official Limitador server or envoyproxy/ratelimit.
# No entrypoint, like the official Limitador image: the command names the server, so the compose
# demo runs either image with one command line (palisade-rls takes limitador-server's).
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin
USER 65532:65532
EXPOSE 8081
CMD ["palisade-rls", "--rls-ip", "0.0.0.0", "--rls-port", "8081", "/etc/palisade/limits.yaml", "redis", "redis://redis:6379"]
