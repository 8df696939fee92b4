# nodeward images: `--target agent` and `--target collector`.
#
# Build them with `make image` (deploy/image.sh): it compiles both commands
# as static binaries (scripts/build.sh) with the local Go toolchain into the
# build context and then runs buildah or podman on this file, so no base
# image, registry or Docker engine is needed. The context it prepares holds:
#   nodeward-agent, nodeward          the binaries (./agent, ./collector)
#   etc/passwd, etc/group             root and nonroot (65532) only
#   etc/ssl/certs/ca-certificates.crt roots for the EC2 API, EKS OIDC, PostgreSQL
#   var/lib/nodeward/                 the collector's (empty) data directory
# Neither image has a shell or a package manager.

ARG VERSION=dev

# Files both images share.
FROM scratch AS common
COPY etc/passwd etc/group /etc/
COPY etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt

# The agent runs as root: it reads the host's files through /host, with the
# capability set the DaemonSet grants and nothing else.
FROM scratch AS agent
ARG VERSION
COPY --from=common / /
COPY nodeward-agent /nodeward-agent
LABEL org.opencontainers.image.title="nodeward-agent" \
      org.opencontainers.image.description="nodeward node agent: posture, inventory and security events of one node" \
      org.opencontainers.image.source="https://github.com/nodeward/nodeward" \
      org.opencontainers.image.version="${VERSION}"
ENTRYPOINT ["/nodeward-agent"]
CMD ["report"]

# The collector runs as nonroot (65532) and writes only to its data volume.
FROM scratch AS collector
ARG VERSION
COPY --from=common / /
COPY --chown=65532:65532 var/lib/nodeward/ /var/lib/nodeward/
COPY nodeward /nodeward
LABEL org.opencontainers.image.title="nodeward" \
      org.opencontainers.image.description="nodeward collector and SRE client" \
      org.opencontainers.image.source="https://github.com/nodeward/nodeward" \
      org.opencontainers.image.version="${VERSION}"
USER 65532:65532
WORKDIR /var/lib/nodeward
EXPOSE 7420 9420
ENTRYPOINT ["/nodeward"]
CMD ["serve", "--listen=127.0.0.1:7420", "--store=sqlite:/var/lib/nodeward/nodeward.db"]
