#!/usr/bin/env bash
# Reproduce the demo weights shipped in model/ (v9): the union of 100 cases of the randomised synthetic profile
# (imperfect normative Z from near-exact to poor atlases, confounders, site and skull-strip variation, small punctate
# and mildly restricted lesions, one case in ten lesion-free; see hieseg/synthesis/) and the 40 cases of
# ../shared/data/family-a-train (an outside generator's family), the recipe of scripts/recipe.sh (the default
# network, Tversky + cross-entropy, four cases per step (RECIPE_SAMPLING=cases4, the default here; recipe.sh's own
# default since 2026-12-07 also centres some patches on lesion mimics), native-grid normalisation with Z_ADC only centred, a
# data-derived grid by nnU-Net's median rule (RECIPE_GRID=median, the default here; recipe.sh's own default since
# 2026-12-07 is RECIPE_GRID=fine, for the next weights), 64x64x32 patches, 3600 steps, scale augmentation +/-20 %,
# no elastic deformation), fold 0 of 5, then post-processing tuned on the 28 validation cases alone (RECIPE_TUNING=plain,
# the default here; recipe.sh's own default since 2026-12-07 adds their lesion-free copies) with the networks' own
# lesion edges (RECIPE_EDGES=network, the default here; recipe.sh's own default since 2026-12-07 also tries redrawing
# them from Z_ADC) and one network (RECIPE_NETWORKS=one, the default here; recipe.sh's own default since 2026-12-08
# trains two of 40 epochs each): v9 took 49 minutes on 2 idle cores (2026-12-06, before the loop became faster on
# 2026-12-07). A stopped run continues with RESUME=1 (bit for bit).
# ALSO lists release folders whose cases join DATA_DIR's for training (default ../shared/data/family-a-train; ALSO=
# trains on DATA_DIR alone): train.py takes them all (--data DATA_DIR ALSO...) and trains on their cases as one
# set, sorted by id, so the split is the one a single folder holding every case would give; a case id in two
# folders stops it before training.
# FOLDS="0 1" also trains fold 1 into the same folder (a two-network ensemble, as "v6" of docs/quality.md), each
# fold about as long; the tuning after the last fold covers both folds' validation cases.
# The earlier weights of docs/quality.md differ by these settings: RECIPE_LOSS and RECIPE_SAMPLING (scripts/recipe.sh),
# ALSO, WITHOUT (the profile's effects left out of the data, default none), ZADC (preprocess.zadc_normalization,
# default centred; z_score z-scores Z_ADC like the ADC) and SEED (train.py's seed, default 42).
#   scripts/train_demo_model.sh [DATA_DIR] [OUT_DIR]      (default data/synthetic-demo-v8, runs/demo-model)   (v9)
#   RECIPE_LOSS=tversky_hausdorffdt RECIPE_SAMPLING=cases2 ALSO= scripts/train_demo_model.sh data/synthetic-demo-v8 runs/v8
#   RECIPE_LOSS=tversky_hausdorffdt RECIPE_SAMPLING=cases2 ALSO= ZADC=z_score \
#       scripts/train_demo_model.sh data/synthetic-demo-v7 runs/v7                                         (v7)
#   RECIPE_LOSS=tversky_hausdorffdt RECIPE_SAMPLING=cases2 ALSO= WITHOUT=accurate_atlas ZADC=z_score \
#       scripts/train_demo_model.sh data/synthetic-demo runs/v5                                            (v5)
# DATA_DIR is generated when missing and reused as it is otherwise, so give a new one when WITHOUT changes
# (the randomised cases of v7, v8 and v9 are the same).
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
RECIPE_GRID="${RECIPE_GRID:-median}"  # v9 and every earlier weights: nnU-Net's median grid (recipe.sh's default is fine)
RECIPE_TUNING="${RECIPE_TUNING:-plain}"  # v9 and every earlier weights: tuned on the validation cases alone
RECIPE_SAMPLING="${RECIPE_SAMPLING:-cases4}"  # v9: no patch centred on lesion mimics (recipe.sh's default is mimic)
RECIPE_EDGES="${RECIPE_EDGES:-network}"  # v9 and every earlier weights: the networks' own edges (recipe.sh's: zadc)
RECIPE_NETWORKS="${RECIPE_NETWORKS:-one}"  # v9 and every earlier weights: one network of 60 epochs (recipe.sh's: two)
source scripts/recipe.sh
ALSO="${ALSO-../shared/data/family-a-train}"
read -r -a ALSO_ROOTS <<< "$ALSO"
for FOLD in ${FOLDS:-0}; do
    python train.py --data "$DATA" "${ALSO_ROOTS[@]}" --out "$OUT" --fold "$FOLD" --folds 5 --seed "${SEED:-42}" \
        "${RECIPE_ARGS[@]}" --device cpu "${RESUME_FLAG[@]}"
done
