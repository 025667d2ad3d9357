# syntax=docker/dockerfile:1
# backflipctl: the operator and break-glass CLI.
#   image: ghcr.io/backflip-dev/backflipctl
# Build from the repository root:
#   docker build -f deploy/docker/backflipctl.Dockerfile -t ghcr.io/backflip-dev/backflipctl:0.1.0 .
# A static binary (CGO_ENABLED=0) on distroless/static, run as its nonroot
# user (65532); the image has no shell.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false -ldflags="-s -w" \
      -o /out/backflipctl ./cmd/backflipctl

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/backflipctl /usr/local/bin/backflipctl
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/backflipctl"]
CMD ["--help"]
