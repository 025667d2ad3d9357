# syntax=docker/dockerfile:1
# backflip-agent: the GPU-node agent.
#   image: ghcr.io/backflip-dev/backflip-agent
# Build from the repository root:
#   docker build -f deploy/docker/backflip-agent.Dockerfile -t ghcr.io/backflip-dev/backflip-agent:0.1.0 .
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
      -o /out/backflip-agent ./cmd/backflip-agent

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/backflip-agent /usr/local/bin/backflip-agent
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/backflip-agent"]
