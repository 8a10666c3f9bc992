# palisade/redis: Debian's redis-server and the shared objects it links, on an empty root, for
# machines with no registry (elsewhere the official `redis:7` image does the same job). Persistence
# off, like the tests' Redis. Built by `make images RLS_IMAGES=1`. No entrypoint: the command
# starts with `redis-server`, as the official image's does, so compose runs either one.
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/bin
USER 999:999
WORKDIR /tmp
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
