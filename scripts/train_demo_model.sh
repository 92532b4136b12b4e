#!/usr/bin/env bash
# Reproduce the demo weights shipped in model/: synthetic cases from the project's generator,
# the default network and preprocessing, a short CPU-sized schedule without the (slow on CPU)
# elastic deformation: about 5 minutes on 2 idle cores.
# They show the pipeline working end to end; they are NOT fit for real data.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-data/synthetic-demo}"
OUT="${2:-model}"
python -m hieseg.synthetic --out "$DATA" --cases 24 --seed 2026
python train.py --data "$DATA" --out "$OUT" --loss tversky_hausdorffdt --fold 0 --folds 5 --seed 42 \
    --epochs 16 --set train.steps_per_epoch=16 --set train.learning_rate=0.002 \
    --set train.warmup_epochs=2 --set train.validate_every=4 --set train.patience=0 \
    --set train.num_workers=1 --set augment.elastic_prob=0.0 --device cpu
