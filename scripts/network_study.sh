#!/usr/bin/env bash
# The CPU-sized network study of the README: the four networks at their default sizes, with the
# default loss, on 16 cases of the randomised synthetic profile, 2 stratified folds (every case
# scored once, by the fold that held it out), the same budget for each: 150 steps of one
# 64 x 32 x 32 patch (SwinUNETR's smallest patch on this grid is a multiple of 32 on every axis).
# About 55 minutes on 2 idle cores. It shows the comparison working, not which network wins
# with a real budget.
#   scripts/network_study.sh [DATA_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-data/netstudy}"
OUT="${2:-out/netstudy}"
python -m hieseg.synthetic --out "$DATA" --cases 16 --seed 11 --profile randomised
python -m hieseg.study --data "$DATA" --out "$OUT" --folds 2 \
  --networks unet,segresnet,swinunetr,dynunet --losses tversky_hausdorffdt \
  --set train.patch_size=[64,32,32] --set inference.roi_size=[64,64,32] --set train.batch_size=1 \
  --set train.epochs=10 --set train.steps_per_epoch=15 --set train.learning_rate=0.002 \
  --set train.warmup_epochs=1 --set train.validate_every=10 --set train.patience=0 \
  --set train.num_workers=1 --set train.torch_threads=2 --set augment.elastic_prob=0.0 --device cpu
