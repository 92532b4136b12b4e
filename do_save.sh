#!/usr/bin/env bash
# Build the image (see do_build.sh for BASE_IMAGE, DOCKER_BUILD_NETWORK and DOCKER_IMAGE_TAG) and
# save it as a gzipped tarball to upload to grand-challenge.org, plus a tarball of model/ to upload
# separately as the model (mounted at /opt/ml/model). Both are written to the current folder.
# To check a saved tarball: docker load --input <tarball> && SKIP_BUILD=1 ./do_test_run.sh
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DOCKER_IMAGE_TAG="${DOCKER_IMAGE_TAG:-hie-seg}"
"$SCRIPT_DIR/do_build.sh"
IMAGE_TARBALL="${DOCKER_IMAGE_TAG}_$(date +%Y-%m-%d_%H-%M-%S).tar.gz"
MODEL_TARBALL="${DOCKER_IMAGE_TAG}_model.tar.gz"
docker save "$DOCKER_IMAGE_TAG" | gzip -c > "$IMAGE_TARBALL"
tar --create --gzip --file "$MODEL_TARBALL" --directory "$SCRIPT_DIR/model" --exclude runs .
echo "saved $IMAGE_TARBALL ($(du -h "$IMAGE_TARBALL" | cut -f1)) and $MODEL_TARBALL ($(du -h "$MODEL_TARBALL" | cut -f1))"
