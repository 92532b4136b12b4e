#!/usr/bin/env bash
# hie-seg's recipe against nnU-Net v2 (2d and 3d_fullres) on one wall-clock budget, one machine, one split.
#   scripts/versus_nnunet.sh OUT [--train DIR] [--eval DIR]      (default ../shared/data/family-a-train and
#                                                                 ../shared/data/foreign-phantoms)
#   BUDGET_MIN=30 scripts/versus_nnunet.sh OUT                   (every system gets 30 minutes of epochs)
#   SMOKE=1 scripts/versus_nnunet.sh OUT                         (the whole path on tiny synthetic cases, minutes)
#   NNUNET_FROM=EARLIER BUDGET_MIN=25 scripts/versus_nnunet.sh OUT
#       (a changed recipe beside the nnU-Net arm of the earlier run EARLIER on this machine, with its cases, budget,
#        split and device, checked before anything trains: nnU-Net's trainings, plans and predictions are copied,
#        not rerun; the recipe trains, and every system is scored again. With SMOKE, EARLIER's tiny cases are used.)
# Steps, each logged to OUT/logs/<step>.log:
#   1. hieseg-export nnunet: the training release as nnU-Net's dataset, splits_final.json = train.py's folds;
#      the evaluation release into imagesTs/; nnUNetv2_plan_and_preprocess (2d, 3d_fullres), its plans kept.
#   2. the recipe: scripts/recipe.sh's train.py settings, fold 0 of 5 (two networks since 2026-12-08, one after the
#      other). With BUDGET_MIN, train.py keeps the budget itself (train.budget_min, an equal share per network: its
#      epochs, at most the recipe's 40 per network, and its cosine schedule end when its share does); without it,
#      the recipe trains its own epochs (2 x 40) and their time becomes the budget. Then its predictions of the
#      evaluation cases (the networks' mean): python -m hieseg.predict.
#   3. nnU-Net, 2d then 3d_fullres, fold 0: python -m hieseg.nnunet train --budget-min (nnUNetTrainerBudget,
#      nnU-Net's defaults but for the epoch count fitted to the budget and 25 training iterations per epoch, 5 with
#      SMOKE; runs on a CPU-only install), then python -m hieseg.nnunet predict (masks on the input's grid).
#   4. every system's predictions scored by python -m hieseg.compare beside both Z_ADC baselines.
#   5. python -m hieseg.versus report: OUT/versus.md and OUT/versus.json.
# DEVICE (default cpu) is used by every step; DATASET_ID (default 531) is nnU-Net's id, kept inside OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: scripts/versus_nnunet.sh OUT [--train DIR] [--eval DIR]}"
shift
TRAIN=../shared/data/family-a-train
EVAL=../shared/data/foreign-phantoms
while [ $# -gt 0 ]; do
    case "$1" in
        --train) TRAIN="$2"; shift 2 ;;
        --eval) EVAL="$2"; shift 2 ;;
        *) echo "error: unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
    esac
done
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
    echo "error: $OUT is not empty; give a new folder" >&2
    exit 2
fi
mkdir -p "$OUT/logs" "$OUT/wall"
OUT="$(cd "$OUT" && pwd)"

DEVICE="${DEVICE:-cpu}"
DATASET_ID="${DATASET_ID:-531}"
FOLD=0
FOLDS=5
SEED=42
NNUNET_CONFIGURATIONS=(2d 3d_fullres)
NNUNET_ITERATIONS=25   # training iterations per epoch of nnUNetTrainerBudget (nnU-Net's 250 / 10)
source scripts/recipe.sh
RECIPE=(--fold "$FOLD" --folds "$FOLDS" --seed "$SEED" "${RECIPE_ARGS[@]}")
NNUNET_FROM="${NNUNET_FROM:-}"
if [ -n "$NNUNET_FROM" ]; then
    if [ -z "${BUDGET_MIN:-}" ]; then
        echo "error: NNUNET_FROM needs BUDGET_MIN, the budget of the run $NNUNET_FROM" >&2
        exit 2
    fi
    NNUNET_FROM="$(cd "$NNUNET_FROM" && pwd)"
fi
if [ -n "${SMOKE:-}" ]; then
    TRAIN="${NNUNET_FROM:-$OUT}/data/train"
    EVAL="${NNUNET_FROM:-$OUT}/data/eval"
    BUDGET_MIN="${BUDGET_MIN:-0.5}"
    NNUNET_ITERATIONS=5
    # tiny cases and half a minute need tiny patches and short epochs; everything else is the recipe's
    RECIPE+=(--set train.steps_per_epoch=4 --set train.patch_size=[32,32,16] --set inference.roi_size=[32,32,16])
    if [ -z "$NNUNET_FROM" ]; then
        python -m hieseg.synthetic --out "$TRAIN" --cases 6 --size 64 64 16 --seed 1 --profile randomised --no-progress
        python -m hieseg.synthetic --out "$EVAL" --cases 2 --size 64 64 16 --seed 2 --profile randomised --no-progress
    fi
fi
SHARED=(--train "$TRAIN" --eval "$EVAL" --folds "$FOLDS" --seed "$SEED" --device "$DEVICE")
if [ -n "$NNUNET_FROM" ]; then
    python -m hieseg.versus reusable "$NNUNET_FROM" "${SHARED[@]}" --budget-min "$BUDGET_MIN"
fi

export nnUNet_raw="$OUT/nnunet/raw" nnUNet_preprocessed="$OUT/nnunet/preprocessed" nnUNet_results="$OUT/nnunet/results"
export nnUNet_def_n_proc="${nnUNet_def_n_proc:-2}"   # nnU-Net's worker pools (default 8) sized for a small machine

# timed NAME COMMAND...: run COMMAND with its output in OUT/logs/NAME.log, its seconds in OUT/wall/NAME.s
timed() {
    local name="$1" start
    shift
    echo "$(date -u +%H:%M:%S) $name: $*"
    start=$(date +%s.%N)
    if ! "$@" >"$OUT/logs/$name.log" 2>&1; then
        echo "error: $name failed; the end of OUT/logs/$name.log:" >&2
        tail -n 20 "$OUT/logs/$name.log" >&2
        exit 1
    fi
    awk -v start="$start" -v end="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", end - start }' >"$OUT/wall/$name.s"
}

# reuse_nnunet: the earlier run's nnU-Net folders, step records and predictions, copied into OUT
reuse_nnunet() {
    echo "$(date -u +%H:%M:%S) nnU-Net: copied from $NNUNET_FROM (NNUNET_FROM), not rerun"
    cp -a "$NNUNET_FROM/nnunet" "$OUT/nnunet"
    mkdir -p "$OUT/predictions"
    cp -a "$NNUNET_FROM"/predictions/nnunet_* "$OUT/predictions/"
    local step
    for step in export nnunet_plan "${NNUNET_CONFIGURATIONS[@]/#/nnunet_}" "${NNUNET_CONFIGURATIONS[@]/#/predict_nnunet_}"; do
        cp -a "$NNUNET_FROM/logs/$step.log" "$OUT/logs/"
        cp -a "$NNUNET_FROM/wall/$step.s" "$OUT/wall/"
    done
}

if [ -n "$NNUNET_FROM" ]; then
    reuse_nnunet
else
    timed export python -m hieseg.export nnunet --data "$TRAIN" --out "$nnUNet_raw" --dataset-id "$DATASET_ID" \
        --folds "$FOLDS" --seed "$SEED" --test "$EVAL"
    timed nnunet_plan nnUNetv2_plan_and_preprocess -d "$DATASET_ID" --verify_dataset_integrity \
        -c "${NNUNET_CONFIGURATIONS[@]}" -np 2 -npfp 2
fi

if [ -n "${BUDGET_MIN:-}" ]; then
    BUDGET_SOURCE="BUDGET_MIN"
    RECIPE+=(--set train.budget_min="$BUDGET_MIN")
else
    BUDGET_SOURCE="the recipe's own $RECIPE_EPOCHS epochs"
fi
timed recipe python train.py --data "$TRAIN" --out "$OUT/recipe" "${RECIPE[@]}" --device "$DEVICE" --no-progress
if [ -z "${BUDGET_MIN:-}" ]; then
    BUDGET_MIN=$(python -m hieseg.versus minutes "$OUT/recipe" --fold "$FOLD")
fi
echo "budget: $BUDGET_MIN min of epochs per system ($BUDGET_SOURCE)"
timed predict_recipe python -m hieseg.predict --input "$EVAL" --output "$OUT/predictions/recipe" \
    --model "$OUT/recipe" --device "$DEVICE" --no-progress

if [ -z "$NNUNET_FROM" ]; then
    for CONFIGURATION in "${NNUNET_CONFIGURATIONS[@]}"; do
        timed "nnunet_$CONFIGURATION" python -m hieseg.nnunet train "$DATASET_ID" "$CONFIGURATION" "$FOLD" \
            --budget-min "$BUDGET_MIN" --iterations-per-epoch "$NNUNET_ITERATIONS" --device "$DEVICE"
        timed "predict_nnunet_$CONFIGURATION" python -m hieseg.nnunet predict \
            --input "$nnUNet_raw/Dataset${DATASET_ID}_BONBIDHIE/imagesTs" \
            --output "$OUT/predictions/nnunet_$CONFIGURATION" \
            --dataset "$DATASET_ID" --configuration "$CONFIGURATION" --folds "$FOLD" --budget --device "$DEVICE"
    done
fi

PREDICTIONS=(--pred "recipe=$OUT/predictions/recipe")
for CONFIGURATION in "${NNUNET_CONFIGURATIONS[@]}"; do
    PREDICTIONS+=(--pred "nnunet_$CONFIGURATION=$OUT/predictions/nnunet_$CONFIGURATION")
done
timed compare python -m hieseg.compare --data "$EVAL" "${PREDICTIONS[@]}" --out "$OUT/compare" --device "$DEVICE" \
    --no-progress

python -m hieseg.versus report "$OUT" "${SHARED[@]}" --budget-min "$BUDGET_MIN" --budget-source "$BUDGET_SOURCE" \
    ${NNUNET_FROM:+--nnunet-from "$NNUNET_FROM"}
