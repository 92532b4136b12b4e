# The recipe: train.py's settings of the demo weights (scripts/train_demo_model.sh) and of the recipe that
# scripts/versus_nnunet.sh sets against nnU-Net, in one place. Sourced by both; each adds its data, output, fold,
# seed and device. RECIPE_EPOCHS is each network's schedule length (with train.budget_min, the most epochs it may take).
# ZADC (default centred) is preprocess.zadc_normalization, kept settable for the earlier weights of docs/quality.md.
# RECIPE_LOSS: tversky_ce (default: Tversky + cross-entropy, the recipe since 2026-12-06, docs/quality.md) or
# tversky_hausdorffdt (0.9 Tversky + 0.1 log Hausdorff-DT: the demo weights v8 and those before; v9 has the default).
# RECIPE_SAMPLING: mimic (default: each step's 4 patches from 4 cases, 0.17 of them centred on lesion mimics, the recipe
# since 2026-12-07, docs/quality.md), cases4 (the same without mimics: the recipe from 2026-12-06, the demo weights v9)
# or cases2 (2 patches from each of 2 cases: the demo weights v8 and those before).
# RECIPE_GRID: fine (default: preprocess.spacing_percentile 10, each axis's 10th percentile of the training data's
# spacings, the recipe since 2026-12-07, docs/quality.md) or median (nnU-Net's rule: the demo weights v9 and before).
# RECIPE_TUNING: copies (default: the tuner also scores a lesion-free copy of each validation case, a fifth of every
# mean, and may choose the per-case empty decision, the recipe since 2026-12-07, docs/training.md) or plain (the
# validation cases alone: the demo weights v9 and before).
# RECIPE_EDGES: zadc (default: the tuner also tries redrawing each lesion's edge from Z_ADC at 0.4 of its depth,
# inference.zadc_boundary, the recipe since 2026-12-07, docs/quality.md) or network (the networks' own edges: the demo
# weights v9 and before).
# RECIPE_NETWORKS: two (default: two networks on each fold's cases, 40 epochs each, tuned and used by their mean
# probability, the recipe since 2026-12-08, docs/quality.md) or one (one network of 60 epochs: the demo weights v9
# and before).
case "${RECIPE_NETWORKS:-two}" in
    two) RECIPE_EPOCHS=40; RECIPE_NETWORKS_ARGS=(--set train.networks_per_fold=2) ;;
    one) RECIPE_EPOCHS=60; RECIPE_NETWORKS_ARGS=(--set train.networks_per_fold=1) ;;
    *) echo "error: RECIPE_NETWORKS must be two or one, got '$RECIPE_NETWORKS'" >&2; exit 2 ;;
esac
case "${RECIPE_LOSS:-tversky_ce}" in
    tversky_ce) RECIPE_LOSS_ARGS=(--loss tversky --set loss.ce_weight=1.0) ;;
    tversky_hausdorffdt) RECIPE_LOSS_ARGS=(--loss tversky_hausdorffdt) ;;
    *) echo "error: RECIPE_LOSS must be tversky_ce or tversky_hausdorffdt, got '$RECIPE_LOSS'" >&2; exit 2 ;;
esac
case "${RECIPE_SAMPLING:-mimic}" in
    mimic) RECIPE_SAMPLING_ARGS=(--set train.batch_size=4 --set train.samples_per_case=1 --set train.mimic_fraction=0.17) ;;
    cases4) RECIPE_SAMPLING_ARGS=(--set train.batch_size=4 --set train.samples_per_case=1) ;;
    cases2) RECIPE_SAMPLING_ARGS=(--set train.batch_size=2 --set train.samples_per_case=2) ;;
    *) echo "error: RECIPE_SAMPLING must be mimic, cases4 or cases2, got '$RECIPE_SAMPLING'" >&2; exit 2 ;;
esac
case "${RECIPE_GRID:-fine}" in
    fine) RECIPE_GRID_ARGS=(--set preprocess.spacing_percentile=10) ;;
    median) RECIPE_GRID_ARGS=(--set preprocess.spacing_percentile=50) ;;
    *) echo "error: RECIPE_GRID must be fine or median, got '$RECIPE_GRID'" >&2; exit 2 ;;
esac
case "${RECIPE_TUNING:-copies}" in
    copies) RECIPE_TUNING_ARGS=(--set tuning.lesion_free_share=0.2 --set "tuning.min_total_mm3=[0,25,50,100,200,400,800]") ;;
    plain) RECIPE_TUNING_ARGS=(--set tuning.lesion_free_share=0.0) ;;
    *) echo "error: RECIPE_TUNING must be copies or plain, got '$RECIPE_TUNING'" >&2; exit 2 ;;
esac
case "${RECIPE_EDGES:-zadc}" in
    zadc) RECIPE_EDGES_ARGS=(--set "tuning.zadc_boundary=[0,0.4]") ;;
    network) RECIPE_EDGES_ARGS=(--set "tuning.zadc_boundary=[0]") ;;
    *) echo "error: RECIPE_EDGES must be zadc or network, got '$RECIPE_EDGES'" >&2; exit 2 ;;
esac
RECIPE_ARGS=("${RECIPE_LOSS_ARGS[@]}" "${RECIPE_SAMPLING_ARGS[@]}" "${RECIPE_GRID_ARGS[@]}" "${RECIPE_TUNING_ARGS[@]}"
    "${RECIPE_EDGES_ARGS[@]}" "${RECIPE_NETWORKS_ARGS[@]}"
    --epochs "$RECIPE_EPOCHS"
    --set train.steps_per_epoch=60 --set train.learning_rate=0.002
    --set train.warmup_epochs=2 --set train.validate_every=6 --set train.patience=0
    --set train.patch_size=[64,64,32] --set inference.roi_size=[64,64,32]
    --set augment.scale_range=0.2 --set augment.affine_prob=0.3 --set augment.elastic_prob=0.0
    --set preprocess.zadc_normalization="${ZADC:-centred}"
    --set train.num_workers=1 --set train.torch_threads=2)
