#!/usr/bin/env bash
# The prepared check of a machine with a GPU, in under 8 minutes (docs/performance-gpu.md): the machine,
# inference.py on the sample (CPU, CUDA with and without AMP, masks compared), the benchmark against plain
# MONAI sliding_window_inference at 128x128x16 to 512x512x128, predict on 24 generated cases, 200 training
# steps of unet, dynunet and swinunetr (steps/s, peak memory, loader wait), torchrun with NCCL, and the
# container (do_test_run.sh) when a container engine answers. Each step is time-boxed; a failing one is
# recorded and the rest run. Writes OUT/gpu_check.json, OUT/gpu_check.md and OUT/logs/.
# Without CUDA it prints one line saying what it skipped and exits 0.
#   scripts/gpu_check.sh OUT [--only bench,training] [--budget-s 440]
# PYTHON: the interpreter (default .venv/bin/python when there is one, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then echo "usage: scripts/gpu_check.sh OUT [--only STEPS] [--budget-s S]" >&2; exit 2; fi
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# The steps stop themselves within --budget-s (default 440 s); this outer limit only guards against a hang.
exec timeout --kill-after 10 "${GPU_CHECK_LIMIT_S:-470}" "$PYTHON" -m hieseg.gpu_check "$@"
