"""Train the HIE lesion 3D U-Net: ``python train.py --data <root> --loss tversky_hausdorffdt --out model/``.

On several GPUs (or CPU processes), one model: ``torchrun --nproc_per_node N train.py --data <root> --out model/``.
"""

import sys

from hieseg.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
