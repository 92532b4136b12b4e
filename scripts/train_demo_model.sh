#!/usr/bin/env bash
# Reproduce the demo weights shipped in model/: 100 cases of the randomised synthetic profile
# (imperfect normative Z, confounders, site and skull-strip variation; see hieseg/synthetic.py),
# the default network, loss and data-derived grid, a CPU-sized schedule (64x64x32 patches,
# 1440 steps, no elastic deformation), then post-processing tuned on the 20 validation cases:
# about 35 minutes on 2 idle cores.
# They show the pipeline working end to end; they are NOT fit for real data.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-data/synthetic-demo}"
OUT="${2:-model}"
python -m hieseg.synthetic --out "$DATA" --cases 100 --seed 2026 --profile randomised
python train.py --data "$DATA" --out "$OUT" --loss tversky_hausdorffdt --fold 0 --folds 5 --seed 42 \
    --epochs 24 --set train.steps_per_epoch=60 --set train.learning_rate=0.002 \
    --set train.warmup_epochs=2 --set train.validate_every=4 --set train.patience=0 \
    --set train.patch_size=[64,64,32] --set inference.roi_size=[64,64,32] \
    --set train.num_workers=1 --set train.torch_threads=2 --set augment.elastic_prob=0.0 --device cpu
