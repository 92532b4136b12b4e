# The recipe: train.py's settings of the demo weights (scripts/train_demo_model.sh) and of the recipe that
# scripts/versus_nnunet.sh sets against nnU-Net, in one place. Sourced by both; each adds its data, output, fold,
# seed and device. RECIPE_EPOCHS is the schedule's length (with train.budget_min, the most epochs it may take).
# ZADC (default centred) is preprocess.zadc_normalization, kept settable for the earlier weights of docs/quality.md.
# RECIPE_LOSS: tversky_ce (default: Tversky + cross-entropy, the recipe since 2026-12-06, docs/quality.md) or
# tversky_hausdorffdt (0.9 Tversky + 0.1 log Hausdorff-DT: the demo weights v8 and those before; v9 has the default).
# RECIPE_SAMPLING: cases4 (default: each step's 4 patches from 4 cases, the recipe since 2026-12-06, docs/quality.md)
# or cases2 (2 patches from each of 2 cases: the demo weights v8 and those before; v9 has the default).
# RECIPE_GRID: fine (default: preprocess.spacing_percentile 10, each axis's 10th percentile of the training data's
# spacings, the recipe since 2026-12-07, docs/quality.md) or median (nnU-Net's rule: the demo weights v9 and before).
RECIPE_EPOCHS=60
case "${RECIPE_LOSS:-tversky_ce}" in
    tversky_ce) RECIPE_LOSS_ARGS=(--loss tversky --set loss.ce_weight=1.0) ;;
    tversky_hausdorffdt) RECIPE_LOSS_ARGS=(--loss tversky_hausdorffdt) ;;
    *) echo "error: RECIPE_LOSS must be tversky_ce or tversky_hausdorffdt, got '$RECIPE_LOSS'" >&2; exit 2 ;;
esac
case "${RECIPE_SAMPLING:-cases4}" in
    cases4) RECIPE_SAMPLING_ARGS=(--set train.batch_size=4 --set train.samples_per_case=1) ;;
    cases2) RECIPE_SAMPLING_ARGS=(--set train.batch_size=2 --set train.samples_per_case=2) ;;
    *) echo "error: RECIPE_SAMPLING must be cases4 or cases2, got '$RECIPE_SAMPLING'" >&2; exit 2 ;;
esac
case "${RECIPE_GRID:-fine}" in
    fine) RECIPE_GRID_ARGS=(--set preprocess.spacing_percentile=10) ;;
    median) RECIPE_GRID_ARGS=(--set preprocess.spacing_percentile=50) ;;
    *) echo "error: RECIPE_GRID must be fine or median, got '$RECIPE_GRID'" >&2; exit 2 ;;
esac
RECIPE_ARGS=("${RECIPE_LOSS_ARGS[@]}" "${RECIPE_SAMPLING_ARGS[@]}" "${RECIPE_GRID_ARGS[@]}" --epochs "$RECIPE_EPOCHS"
    --set train.steps_per_epoch=60 --set train.learning_rate=0.002
    --set train.warmup_epochs=2 --set train.validate_every=6 --set train.patience=0
    --set train.patch_size=[64,64,32] --set inference.roi_size=[64,64,32]
    --set augment.scale_range=0.2 --set augment.affine_prob=0.3 --set augment.elastic_prob=0.0
    --set preprocess.zadc_normalization="${ZADC:-centred}"
    --set train.num_workers=1 --set train.torch_threads=2)
