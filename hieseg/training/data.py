"""The training cases and the patches drawn from them: loading, the loader, and each epoch's random states.

Every random state of an epoch (torch, numpy, python, the loader's shuffling, the augmentation
transforms in the main process and in each loader worker) is derived from (seed, epoch, rank)
when the epoch starts (:func:`seed_epoch`), so a resumed run replays its epochs exactly.
"""

from __future__ import annotations

import logging
import math
import random
import warnings
from collections.abc import Iterator, Sequence
from itertools import count
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import CacheDataset, DataLoader, list_data_collate
from torch.utils.data import RandomSampler
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from hieseg.config.settings import ExperimentConfig
from hieseg.data.transforms import case_to_dict, check_network_grid, training_transforms
from hieseg.errors import DatasetError
from hieseg.io.layout import CaseImages, discover_union, load_case
from hieseg.training.distributed import Ranks
from hieseg.training.optimization import batches_per_pass, loader_workers, shuffles_per_pass

LOG = logging.getLogger(__name__)


def load_cases(data_roots: Sequence[Path], progress: bool = True) -> list[CaseImages]:
    """Read and validate every case of one or more release folders (one set, sorted by id), failing on the
    first bad one."""
    files = discover_union(data_roots)
    return [load_case(f) for f in tqdm(files, desc="reading cases", disable=not progress, unit="case")]


def check_labels(training: Sequence[CaseImages], validation: Sequence[CaseImages]) -> None:
    """Refuse training cases whose labels are all empty; warn when every validation label is."""
    if not any(_has_lesion(case) for case in training):
        raise DatasetError(
            f"{', '.join(str(root) for root in _data_roots(training))}: the labels of all {len(training)} training "
            "case(s) are empty (no lesion voxel), so there is nothing to learn; check the 3LABEL/ files"
        )
    if not any(_has_lesion(case) for case in validation):
        LOG.warning("the labels of all %d validation case(s) are empty: validation Dice only rewards empty masks",
                    len(validation))


def _has_lesion(case: CaseImages) -> bool:
    return case.label is not None and bool(sitk.GetArrayViewFromImage(case.label).any())


def _data_roots(cases: Sequence[CaseImages]) -> list[Path]:
    """The release folders the cases were read from (each the folder above ``1ADC_ss/``), in case order."""
    return list(dict.fromkeys(case.files.adc.parent.parent for case in cases))


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The 32-bit seed of one epoch's randomness, from the run's seed, the epoch (0-based) and the rank.

    Rank 0 and a single process use the seed of (seed, epoch) alone, as before distributed
    training existed; every other rank adds its number, so each rank draws its own patches.
    """
    entropy = [seed, epoch] if rank == 0 else [seed, epoch, rank]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def seed_epoch(loader: DataLoader, seed: int) -> None:
    """Set every random state an epoch uses from ``seed``, so any epoch can be replayed exactly.

    torch (dropout), numpy and python; the loader's generator, which shuffles the cases and
    gives each of the epoch's fresh workers its seed (:func:`_seed_worker`); and the
    augmentation transforms, which draw in the main process when there are no workers.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    loader.generator.manual_seed(seed)
    loader.dataset.transform.set_random_state(seed=seed)


def _seed_worker(worker_id: int) -> None:
    """Loader worker start: seed its transforms and numpy from the seed torch gave it (drawn from the loader's generator)."""
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32
    np.random.seed(seed)
    info.dataset.transform.set_random_state(seed=seed)


def training_loader(
    config: ExperimentConfig,
    cases: list[CaseImages],
    device: torch.device,
    ranks: Ranks = Ranks(),
    workers: int | None = None,
) -> DataLoader:
    """Patches of the training cases drawn by ``workers`` loader workers (default: ``train.num_workers``, chosen
    from the cores and the cases when auto, :func:`~hieseg.training.optimization.loader_workers`); the deterministic
    preprocessing is cached in memory (``train.cache_cases``), and its size logged. A single process's pass over
    the loader draws as many shuffles of the cases as an epoch takes
    (:func:`~hieseg.training.optimization.shuffles_per_pass`), so its workers start once an epoch.

    Under torchrun the ranks must draw different patches, or the averaged gradient would only
    be one rank's computed N times. Two things see to it. A :class:`DistributedSampler` deals
    each rank its own slice of one shuffled case order, the same order on every rank (seeded by
    ``train.seed`` and the pass over the data, see :func:`cycle`), so one pass of all ranks
    visits every case once, as one shuffle of a single process does. And the random patch centres
    and augmentations come from a per-rank seed (:func:`epoch_seed`), so ranks differ even when
    a pass is padded with repeated cases. Both follow from (seed, epoch, rank), so a resumed run
    replays them. Every rank caches all the training cases, since its slice changes with each
    pass.

    Lesion-free cases are expected (the release has some), so MONAI's warning that such a
    case cannot give lesion-centred patches would only repeat itself at every step.
    """
    warnings.filterwarnings("ignore", message="Num foregrounds 0", category=UserWarning)
    for case in cases:
        check_network_grid(case.files.adc, case.adc, config.preprocess.target_spacing)
    data = [case_to_dict(case) for case in cases]
    transform = training_transforms(config)
    cache_rate = 1.0 if config.train.cache_cases else 0.0
    dataset = CacheDataset(data, transform=transform, cache_rate=cache_rate, progress=False, num_workers=0)
    if config.train.cache_cases:
        LOG.info("preprocessed cases cached in memory: %d case(s), %.1f MB", len(data), cached_bytes(dataset) / 1e6)
    if workers is None:
        workers = loader_workers(config, device, ranks.local_world_size,
                                 batches_per_pass(config, len(data), ranks.world_size, ranks.launched))
    generator = torch.Generator()
    sampler = (
        DistributedSampler(dataset, ranks.world_size, ranks.rank, shuffle=True, seed=config.train.seed)
        if ranks.launched
        else RandomSampler(dataset, num_samples=shuffles_per_pass(config, len(data)) * len(data), generator=generator)
    )
    return DataLoader(
        dataset,
        batch_size=config.train.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=list_data_collate,
        pin_memory=device.type == "cuda",
        generator=generator,
        worker_init_fn=_seed_worker,
        persistent_workers=False,
    )


def cached_bytes(dataset: CacheDataset) -> int:
    """Bytes of the arrays a :class:`CacheDataset` holds in memory (0 when it caches nothing), lists of arrays
    (the sampling indices) included."""
    return sum(_array_bytes(item) for item in getattr(dataset, "_cache", None) or [])


def _array_bytes(value: object) -> int:
    """Bytes of the tensors and arrays in ``value``, looking into dictionaries, lists and tuples."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(_array_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_array_bytes(item) for item in value)
    return 0


def cycle(loader: DataLoader, first_pass: int = 0) -> Iterator[dict]:
    """Batches forever, reshuffling at each pass, so an epoch may be longer than a pass.

    Each pass starts fresh workers, seeded from the loader's generator (see :func:`seed_epoch`).
    A :class:`DistributedSampler` shuffles by its pass number instead, counted over the whole
    run from ``first_pass`` (an epoch's first pass), identically on every rank.
    """
    for pass_number in count(first_pass):
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(pass_number)
        yield from loader


def steps_of_epoch(config: ExperimentConfig, loader: DataLoader, epoch: int) -> tuple[int, Iterator[dict]]:
    """How many steps epoch ``epoch`` (0-based) takes, and its batches: passes over the data continue across
    epochs, counted from the epoch's first pass, so a resumed run draws what an uninterrupted one would."""
    steps = config.train.steps_per_epoch or len(loader)
    return steps, cycle(loader, first_pass=epoch * math.ceil(steps / len(loader)))
