# syntax=docker/dockerfile:1
#
# The residency image: one static binary (CGO off, -trimpath, the version
# and commit stamped) on distroless/static, run as the non-root user 65532, with the
# operations port (/metrics, /healthz, /readyz) exposed.
#
#   make image                     # VERSION from git describe, COMMIT from git rev-parse
#   docker build --build-arg VERSION=v1.2.3 --build-arg COMMIT=$(git rev-parse --short=12 HEAD) -t residency:v1.2.3 .
#   docker run --rm residency:v1.2.3 --version       # residency v1.2.3 (commit 0123456789ab)
#
# deploy/check/dockerfile_test.go checks this file offline (`make test`) and
# builds the binary exactly as the build stage below does; keep the `go
# build` in one RUN of its own. See docs/operations.md.

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# The version and commit `residency version` prints (.git is not in the
# build context: the commit comes from the build argument).
ARG VERSION=dev
ARG COMMIT=unknown
ENV CGO_ENABLED=0
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build go build -trimpath -ldflags="-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/residency ./cmd/residency

# distroless/static: CA certificates, tzdata and /etc/passwd, no shell, no
# libc (the binary needs none).
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="residency" \
      org.opencontainers.image.description="Keeps user data in the jurisdiction it belongs to: routes events to region-pinned Kafka topics and drains them into approved stores." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=build /out/residency /usr/local/bin/residency
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 65532:65532
# http.listen's default: /metrics, /healthz, /readyz.
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/residency"]
CMD ["help"]
