# palisade/upstream: the echo upstream of the tests and the demo (tests/upstream), on an empty root
# holding only the binary and the glibc files it links. Built by `make images`; nothing is pulled.
FROM scratch
COPY rootfs/ /
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/palisade-upstream"]
CMD ["--listen", "0.0.0.0:8080"]
