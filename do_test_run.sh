#!/usr/bin/env bash
# Run the image as grand-challenge does and check what it does:
#   1. the sample case test/input, with the weights of model/ mounted read-only at /opt/ml/model:
#      the mask must equal test/expected_output;
#   2. a case without its Z_ADC: exit status 2 and nothing in /output.
# Each run has no network, a read-only root with a tmpfs /tmp, the image's non-root user, no
# capabilities, 4 GB of memory, 128 MB of shared memory and 256 processes (the organisers' limits),
# and the GPU when one is present. The image is built first (see do_build.sh for BASE_IMAGE,
# DOCKER_BUILD_NETWORK and DOCKER_IMAGE_TAG) unless SKIP_BUILD=1, e.g. for an image loaded with
# `docker load` from the tarball of do_save.sh.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DOCKER_IMAGE_TAG="${DOCKER_IMAGE_TAG:-hie-seg}"
EXIT_USER_ERROR=2

if [ "${SKIP_BUILD:-0}" != 1 ]; then "$SCRIPT_DIR/do_build.sh"; fi
IMAGE_USER="$(docker image inspect --format '{{.Config.User}}' "$DOCKER_IMAGE_TAG")"
case "$IMAGE_USER" in
    "" | root | 0 | 0:*) echo "error: $DOCKER_IMAGE_TAG runs as root; it must run as its non-root user" >&2; exit 1 ;;
esac

WORK_DIR="$(mktemp -d)"
cleanup() {
    # The container's user owns what it wrote; hand it back to this user before removing it.
    docker run --rm --network none --user 0 --entrypoint chown --volume "$WORK_DIR":/work \
        "$DOCKER_IMAGE_TAG" -R "$(id -u):$(id -g)" /work >/dev/null 2>&1 || true
    rm -rf "$WORK_DIR"
}
trap cleanup EXIT
mkdir -p "$WORK_DIR/output" "$WORK_DIR/bad-output" "$WORK_DIR/bad-input/images"
chmod 777 "$WORK_DIR/output" "$WORK_DIR/bad-output"
cp -R "$SCRIPT_DIR/test/input/images/skull-stripped-adc-brain-mri" "$WORK_DIR/bad-input/images/"
chmod -R a+rX "$WORK_DIR/bad-input"

GPU_FLAGS=()
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    GPU_FLAGS=(--gpus all)
fi

# Milliseconds since the epoch (bash 5's EPOCHREALTIME; whole seconds with an older bash).
now_ms() {
    if [ -n "${EPOCHREALTIME:-}" ]; then
        local microseconds="${EPOCHREALTIME/[.,]/}"
        echo $((microseconds / 1000))
    else
        echo $(($(date +%s) * 1000))
    fi
}

# run_case INPUT OUTPUT: one grand-challenge-like run; prints its wall time, returns its exit status.
run_case() {
    local started status=0 elapsed
    started="$(now_ms)"
    docker run --rm \
        --platform=linux/amd64 \
        --network none \
        --read-only --tmpfs /tmp \
        --cap-drop=ALL --security-opt=no-new-privileges \
        --memory=4g --memory-swap=4g \
        --shm-size=128m --pids-limit=256 \
        ${GPU_FLAGS[@]+"${GPU_FLAGS[@]}"} \
        --volume "$SCRIPT_DIR/model":/opt/ml/model:ro \
        --volume "$1":/input:ro \
        --volume "$2":/output \
        "$DOCKER_IMAGE_TAG" || status=$?
    elapsed=$(($(now_ms) - started))
    printf 'docker run: %d.%03d s, exit status %d\n' $((elapsed / 1000)) $((elapsed % 1000)) "$status"
    return "$status"
}

echo "== sample case (test/input)"
run_case "$SCRIPT_DIR/test/input" "$WORK_DIR/output"
# Compare inside the image (its Python reads .mha), so the host needs nothing but Docker; the checker is a
# test tool, mounted for this run, not part of the image.
docker run --rm \
    --platform=linux/amd64 \
    --network none --read-only --tmpfs /tmp \
    --volume "$WORK_DIR/output":/output:ro \
    --volume "$SCRIPT_DIR/test/expected_output":/expected:ro \
    --volume "$SCRIPT_DIR/test/compare_outputs.py":/opt/check/compare_outputs.py:ro \
    --env PYTHONPATH=/opt/app \
    --entrypoint python \
    "$DOCKER_IMAGE_TAG" /opt/check/compare_outputs.py /output /expected

echo "== a case without its Z_ADC (must exit with status $EXIT_USER_ERROR and write nothing)"
status=0
run_case "$WORK_DIR/bad-input" "$WORK_DIR/bad-output" || status=$?
if [ "$status" != "$EXIT_USER_ERROR" ]; then
    echo "error: exit status $status, expected $EXIT_USER_ERROR" >&2; exit 1
fi
if [ -n "$(ls -A "$WORK_DIR/bad-output")" ]; then
    echo "error: the refused case left files in /output: $(ls -A "$WORK_DIR/bad-output")" >&2; exit 1
fi
echo "container test passed"
