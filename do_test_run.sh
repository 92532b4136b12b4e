#!/usr/bin/env bash
# Run the image on test/input as grand-challenge does (no network, read-only input) and
# compare the mask it writes with test/expected_output.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DOCKER_IMAGE_TAG="${DOCKER_IMAGE_TAG:-hie-seg}"
OUTPUT_DIR="$(mktemp -d)"
trap 'rm -rf "$OUTPUT_DIR"' EXIT
chmod 777 "$OUTPUT_DIR"

GPU_FLAGS=()
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    GPU_FLAGS=(--gpus all)
fi

"$SCRIPT_DIR/do_build.sh"
docker run --rm \
    --platform=linux/amd64 \
    --network none \
    --memory=16g --memory-swap=16g \
    --shm-size=128m \
    --cap-drop=ALL --security-opt=no-new-privileges \
    "${GPU_FLAGS[@]}" \
    --volume "$SCRIPT_DIR/test/input":/input:ro \
    --volume "$OUTPUT_DIR":/output \
    "$DOCKER_IMAGE_TAG"

# Compare inside the image, so the host needs nothing but Docker.
docker run --rm \
    --platform=linux/amd64 \
    --network none \
    --volume "$OUTPUT_DIR":/output:ro \
    --volume "$SCRIPT_DIR/test/expected_output":/expected:ro \
    --entrypoint python \
    "$DOCKER_IMAGE_TAG" -m hieseg.compare_outputs /output /expected
