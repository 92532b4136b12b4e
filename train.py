"""Train the HIE lesion 3D U-Net: ``python train.py --data <root> --loss tversky_hausdorffdt --out model/``."""

import sys

from hieseg.train_cli import main

if __name__ == "__main__":
    sys.exit(main())
