#!/usr/bin/env bash
# Build the image and save it as a gzipped tarball to upload to grand-challenge.org,
# plus a tarball of model/ to upload separately as the model (mounted at /opt/ml/model).
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DOCKER_IMAGE_TAG="${DOCKER_IMAGE_TAG:-hie-seg}"
"$SCRIPT_DIR/do_build.sh"
OUTPUT="${DOCKER_IMAGE_TAG}_$(date +%Y-%m-%d_%H-%M-%S).tar.gz"
docker save "$DOCKER_IMAGE_TAG" | gzip -c > "$OUTPUT"
tar --create --gzip --file "${DOCKER_IMAGE_TAG}_model.tar.gz" --directory "$SCRIPT_DIR/model" \
    --exclude runs .
echo "saved $OUTPUT and ${DOCKER_IMAGE_TAG}_model.tar.gz"
