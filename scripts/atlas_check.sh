#!/usr/bin/env bash
# Does a model use a trustworthy Z_ADC? The in-family check of docs/quality.md (v7), on the project's own
# generator only: 24 randomised cases (seed 99, never trained on) scored twice beside the Z_ADC < -2
# baselines, once with their normative model as drawn and once with a near-exact one (the accurate-atlas
# profile: the same cases, every other draw equal). A threshold gains much from the accurate atlas; weights
# that gain little from it discount Z_ADC, the failure the foreign set showed.
#   scripts/atlas_check.sh [MODEL_DIR ...]      (default: model/)
# Writes OUT/drawn and OUT/accurate (default out/atlas-check): comparison.md / .json / .csv each.
set -euo pipefail
cd "$(dirname "$0")/.."
DRAWN="${DRAWN:-data/synthetic-atlas-drawn}"
ACCURATE="${ACCURATE:-data/synthetic-atlas-accurate}"
OUT="${OUT:-out/atlas-check}"
MODELS=("${@:-model}")
args=()
for model in "${MODELS[@]}"; do args+=(--model "$model"); done
if [ ! -d "$DRAWN/1ADC_ss" ]; then
    python -m hieseg.synthetic --out "$DRAWN" --cases 24 --seed 99 --profile randomised --without accurate_atlas
fi
if [ ! -d "$ACCURATE/1ADC_ss" ]; then
    python -m hieseg.synthetic --out "$ACCURATE" --cases 24 --seed 99 --profile accurate-atlas
fi
python -m hieseg.compare --data "$DRAWN" "${args[@]}" --out "$OUT/drawn" --device cpu
python -m hieseg.compare --data "$ACCURATE" "${args[@]}" --out "$OUT/accurate" --device cpu
