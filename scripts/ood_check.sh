#!/usr/bin/env bash
# The out-of-distribution check of the README: 40 cases of the shifted synthetic profile, whose
# held-out artefact families and site ranges the training profile never produces, scored for
# the given weights beside the Z_ADC < -2 baselines (raw and cleaned) in one run.
#   scripts/ood_check.sh [MODEL_DIR ...]      (default: model/)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${DATA:-data/synthetic-shifted}"
OUT="${OUT:-out/ood-check}"
MODELS=("${@:-model}")
python -m hieseg.synthetic --out "$DATA" --cases 40 --seed 7 --profile shifted
args=()
for model in "${MODELS[@]}"; do args+=(--model "$model"); done
python -m hieseg.compare --data "$DATA" "${args[@]}" --out "$OUT" --device cpu
