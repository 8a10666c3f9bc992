# palisade/redis: Debian's redis-server and the shared objects it links, on an empty root, for
# machines with no registry (elsewhere the official `redis:7` image does the same job). Persistence
# off, like the tests' Redis. Built by `make images RLS_IMAGES=1`.
FROM scratch
COPY rootfs/ /
USER 999:999
WORKDIR /tmp
EXPOSE 6379
ENTRYPOINT ["/usr/bin/redis-server"]
CMD ["--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
