#!/usr/bin/env bash
# Build the challenge container image.
#   DOCKER_IMAGE_TAG      image tag (default hie-seg)
#   BASE_IMAGE            base image with Python and torch (default: the Dockerfile's CUDA image,
#                         the one a submission uses), e.g. local/torch-cpu:2.13.0 on a CPU machine
#   DOCKER_BUILD_NETWORK  network of the build steps (pip), e.g. host where the default bridge
#                         cannot reach the package index
# Further arguments go to `docker build`.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DOCKER_IMAGE_TAG="${DOCKER_IMAGE_TAG:-hie-seg}"
BUILD_ARGS=()
if [ -n "${BASE_IMAGE:-}" ]; then BUILD_ARGS+=(--build-arg "BASE_IMAGE=$BASE_IMAGE"); fi
if [ -n "${DOCKER_BUILD_NETWORK:-}" ]; then BUILD_ARGS+=(--network "$DOCKER_BUILD_NETWORK"); fi
docker build --platform=linux/amd64 --tag "$DOCKER_IMAGE_TAG" ${BUILD_ARGS[@]+"${BUILD_ARGS[@]}"} "$@" "$SCRIPT_DIR"
