"""Hand hie-seg's work to other tools: a MONAI bundle of the weights, and the release in nnU-Net v2's raw format.

``bundle``: a weights folder as a MONAI Model Zoo bundle; ``nnunet``: a release as an nnU-Net v2
raw dataset with the project's folds; ``staging``: outputs written whole or not at all. The
command line is :mod:`hieseg.cli.export`.
"""
