"""Train the HIE lesion 3D U-Net: ``python train.py --data <root> --loss tversky_hausdorffdt --out runs/my-model``.

On several GPUs (or CPU processes), one model: ``torchrun --nproc_per_node N train.py --data <root> --out runs/my-model``.
"""

from hieseg.cli.startup import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("train"))
