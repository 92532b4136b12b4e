#!/usr/bin/env bash
# Build the challenge container image (tag: hie-seg).
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DOCKER_IMAGE_TAG="${DOCKER_IMAGE_TAG:-hie-seg}"
docker build --platform=linux/amd64 --tag "$DOCKER_IMAGE_TAG" "$SCRIPT_DIR" "$@"
