# syntax=docker/dockerfile:1
#
# The residency image: one static binary (CGO off, -trimpath, the version
# stamped) on distroless/static, run as the non-root user 65532, with the
# operations port (/metrics, /healthz, /readyz) exposed.
#
#   make image                                       # VERSION from git describe
#   docker build --build-arg VERSION=v1.2.3 -t residency:v1.2.3 .
#   docker run --rm residency:v1.2.3 version         # residency v1.2.3
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
# The version `residency version` prints.
ARG VERSION=dev
ENV CGO_ENABLED=0
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/residency ./cmd/residency

# distroless/static: CA certificates, tzdata and /etc/passwd, no shell, no
# libc (the binary needs none).
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="residency" \
      org.opencontainers.image.description="Keeps user data in the jurisdiction it belongs to: routes events to region-pinned Kafka topics and drains them into approved stores." \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/residency /usr/local/bin/residency
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 65532:65532
# http.listen's default: /metrics, /healthz, /readyz.
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/residency"]
CMD ["help"]
