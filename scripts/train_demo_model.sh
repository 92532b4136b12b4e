#!/usr/bin/env bash
# Reproduce the demo weights shipped in model/ (v8): 100 cases of the randomised synthetic profile (imperfect
# normative Z from near-exact to poor atlases, confounders, site and skull-strip variation, small punctate and
# mildly restricted lesions; see hieseg/synthesis/), the default network and loss, native-grid normalisation with
# Z_ADC only centred (it keeps its normative units) and a data-derived grid, a CPU-sized schedule (64x64x32
# patches, 3600 steps, scale augmentation +/-20 %, no elastic deformation), then post-processing tuned on the 20
# validation cases: about 40-90 minutes on 2 idle cores. A stopped run continues with RESUME=1 (bit for bit).
# FOLDS="0 1" also trains fold 1 into the same folder (a two-network ensemble, as "v6" of docs/quality.md), each
# fold about as long; the tuning after the last fold covers both folds' validation cases.
# The train.py settings are scripts/recipe.sh's, with v8's loss (tversky_hausdorffdt) and sampling (cases2) unless
# RECIPE_LOSS=tversky_ce and RECIPE_SAMPLING=cases4 ask for the recipe's since 2026-12-06. The earlier weights of
# docs/quality.md differ by three settings:
# WITHOUT lists the profile's effects left out of the data (default none), ZADC is preprocess.zadc_normalization
# (default centred; z_score z-scores Z_ADC like the ADC) and SEED is train.py's seed (default 42).
#   scripts/train_demo_model.sh [DATA_DIR] [OUT_DIR]      (default data/synthetic-demo-v8, runs/demo-model)
#   WITHOUT=accurate_atlas ZADC=z_score scripts/train_demo_model.sh data/synthetic-demo runs/v5      (v5)
#   ZADC=z_score scripts/train_demo_model.sh data/synthetic-demo-v7 runs/v7                        (v7)
# DATA_DIR is generated when missing and reused as it is otherwise, so give a new one when WITHOUT changes
# (the data of v7 and v8 are the same cases).
# Copy OUT_DIR's config.json, fold0.pt and tuning.json to model/ to ship them.
# They show the pipeline working end to end; they are NOT fit for real data.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-data/synthetic-demo-v8}"
OUT="${2:-runs/demo-model}"
RESUME_FLAG=()
if [ -n "${RESUME:-}" ]; then RESUME_FLAG=(--resume); fi
WITHOUT_FLAGS=()
for EFFECT in ${WITHOUT:-}; do WITHOUT_FLAGS+=(--without "$EFFECT"); done
if [ ! -d "$DATA/1ADC_ss" ]; then
    python -m hieseg.synthetic --out "$DATA" --cases 100 --seed 2026 --profile randomised "${WITHOUT_FLAGS[@]}"
fi
RECIPE_LOSS="${RECIPE_LOSS:-tversky_hausdorffdt}"   # v8's loss: this script reproduces the shipped weights
RECIPE_SAMPLING="${RECIPE_SAMPLING:-cases2}"          # v8's sampling, likewise
source scripts/recipe.sh
for FOLD in ${FOLDS:-0}; do
    python train.py --data "$DATA" --out "$OUT" --fold "$FOLD" --folds 5 --seed "${SEED:-42}" "${RECIPE_ARGS[@]}" \
        --device cpu "${RESUME_FLAG[@]}"
done
