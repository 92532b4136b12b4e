#!/usr/bin/env bash
# The out-of-distribution check of the README: the given weights beside the Z_ADC < -2 baselines (raw and
# cleaned), scored in one run each on two sets the weights were never trained on:
#   - 40 cases of the shifted synthetic profile (seed 7), whose held-out artefact families and site
#     ranges the training profile never produces;
#   - the cases of a generator this project did not write (FOREIGN, default ../shared/data/foreign-phantoms),
#     when that folder exists. It is for evaluation only: never train, tune or choose settings on it.
# Each writes comparison.md / .json / .csv with the challenge metrics and the lesion-wise ones
# (conspicuous-lesion recall included), and an HTML report.
#   scripts/ood_check.sh [MODEL_DIR ...]      (default: model/)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${DATA:-data/synthetic-shifted}"
FOREIGN="${FOREIGN:-../shared/data/foreign-phantoms}"
OUT="${OUT:-out/ood-check}"
MODELS=("${@:-model}")
args=()
for model in "${MODELS[@]}"; do args+=(--model "$model"); done
if [ ! -d "$DATA/1ADC_ss" ]; then
    python -m hieseg.synthetic --out "$DATA" --cases 40 --seed 7 --profile shifted
fi
python -m hieseg.compare --data "$DATA" "${args[@]}" --out "$OUT/shifted" --html "$OUT/shifted/html" --device cpu
if [ -d "$FOREIGN/1ADC_ss" ]; then
    python -m hieseg.compare --data "$FOREIGN" "${args[@]}" --out "$OUT/foreign" --html "$OUT/foreign/html" \
        --device cpu
else
    echo "no foreign set at $FOREIGN: scored the shifted profile only" >&2
fi
