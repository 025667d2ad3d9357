# syntax=docker/dockerfile:1
# backflip: the bot (serve), its migration (migrate) and the embedded dev stack (dev).
#   image: ghcr.io/backflip-dev/backflip
# Build from the repository root:
#   docker build -f deploy/docker/backflip.Dockerfile -t ghcr.io/backflip-dev/backflip:0.1.0 .
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
      -o /out/backflip ./cmd/backflip

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/backflip /usr/local/bin/backflip
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/backflip"]
CMD ["serve"]
