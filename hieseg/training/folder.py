"""The weights folder a training run writes: checked before any work, one config.json for every fold in it.

``<out>/config.json`` (the configuration inference rebuilds everything from, with its provenance),
``<out>/<name>.pt`` (the best weights by validation Dice; ``fold<k>.pt``, or ``model.pt`` for an
explicit validation list, ``-net<m>`` added for a fold's further networks, ``train.networks_per_fold``) and
``<out>/runs/<name>/`` (the run's logs and checkpoint).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from hieseg.config.differences import describe_differences, flat_differences
from hieseg.config.settings import (
    CONFIG_FILENAME,
    POSTPROCESSING_KEYS,
    ExperimentConfig,
)
from hieseg.data.burden import lesion_burden
from hieseg.data.splits import train_validation_split
from hieseg.errors import ConfigError, OutputError
from hieseg.io.images import require_writable, write_atomic
from hieseg.io.layout import CaseImages
from hieseg.model.provenance import current_provenance
from hieseg.training.checkpoint import CHECKPOINT_FILE
from hieseg.training.logs import METRICS_FILE, continued_history

LOG = logging.getLogger(__name__)
RUNS_DIR = "runs"
FOLD_RUN = re.compile(r"fold(\d+)(?:-net([1-9]\d*))?")
"""A fold's run name (:func:`run_name`): its run folder's name, and its weights file's stem."""


def run_name(config: ExperimentConfig, validation_ids: list[str] | None, network: int = 0) -> str:
    """``model`` for a run on an explicit validation list, else ``fold<k>``; ``-net<m>`` added for a fold's
    network m above 0 (``train.networks_per_fold``), so a folder of one network per fold keeps its names."""
    base = "model" if validation_ids else f"fold{config.train.fold}"
    return f"{base}-net{network}" if network else base


def fold_runs(out_dir: Path, fold: int) -> list[Path]:
    """The run folders of fold ``fold``'s networks in a weights folder (``runs/fold<k>``, ``runs/fold<k>-net<m>``),
    network 0 first."""
    found = {}
    for folder in (Path(out_dir) / RUNS_DIR).glob(f"fold{fold}*"):
        match = FOLD_RUN.fullmatch(folder.name)
        if match is not None and int(match[1]) == fold:
            found[int(match[2] or 0)] = folder
    return [found[network] for network in sorted(found)]


def network_seed(config: ExperimentConfig, network: int) -> int:
    """The seed of a fold's network ``network``: ``train.seed`` plus its number (32-bit), so network 0 draws as a
    run of one network does and every other draws on its own; the split always follows ``train.seed``."""
    return (config.train.seed + network) % 2**32


def run_dir(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / RUNS_DIR / name


def check_output(out_dir: Path, name: str, resume: bool) -> None:
    """Refuse, before any work, an output folder that cannot be written or that holds this run's checkpoint
    (unless ``resume``)."""
    require_writable(out_dir, folder=True)
    checkpoint_path = run_dir(out_dir, name) / CHECKPOINT_FILE
    if checkpoint_path.exists() and not resume:
        raise OutputError(f"{checkpoint_path} exists: pass --resume to continue it, or choose another --out")
    logs = run_dir(out_dir, name) / METRICS_FILE
    if logs.exists() and not checkpoint_path.exists():
        raise OutputError(
            f"{logs}: logs of a run that has no checkpoint ({checkpoint_path.name}), so it cannot be resumed and "
            f"would be overwritten; delete {logs.parent} to train it from the start, or choose another --out")


def check_outputs(out_dir: Path, configs: list[ExperimentConfig], validation_ids: list[str] | None,
                  resume: bool) -> None:
    """:func:`check_output` and :func:`check_config_fits` for every run of a command (each network of each fold),
    before any case is read."""
    for config in configs:
        for network in range(config.train.networks_per_fold):
            check_output(out_dir, run_name(config, validation_ids, network), resume)
        check_config_fits(config, out_dir)


def prepare_outputs(config: ExperimentConfig, out_dir: Path, name: str, epochs_done: int,
                    recorded: list[dict[str, float]] | None = None) -> tuple[ExperimentConfig, list[dict[str, float]]]:
    """config.json and the run folder, ready for the run; returns the config written (with its provenance) and
    the log rows the run continues from (``recorded``: those its checkpoint holds)."""
    written = write_config(config, out_dir)
    folder = run_dir(out_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    return written, continued_history(folder, epochs_done, recorded)


def write_config(config: ExperimentConfig, out_dir: Path) -> ExperimentConfig:
    """Write config.json with this run's provenance, refusing to mix folds trained with different settings.

    The provenance (versions, commit) is not a setting: a resumed run or another fold made by
    other versions or another commit is accepted, and config.json records the latest run's.
    """
    check_config_fits(config, out_dir)
    written = dataclasses.replace(config, provenance=current_provenance())
    write_atomic(Path(out_dir) / CONFIG_FILENAME, written.save)
    return written


def check_config_fits(config: ExperimentConfig, out_dir: Path) -> None:
    """Refuse a weights folder whose config.json holds other settings than this run's, naming each with both values.

    The fold differs between the folds of one folder, and the post-processing that tuning rewrites
    (when it is on) too; the tuning section may differ as well, since it changes no weights (a finished
    run resumed with other tuning settings is tuned again); a grid this run still derives from the data
    (``preprocess.target_spacing`` unset) is compared once it is known, so this can run before any case is read.
    """
    path = Path(out_dir) / CONFIG_FILENAME
    if not path.exists():
        return
    existing, mine = ExperimentConfig.load(path).settings_dict(), config.settings_dict()
    for data in (existing, mine):
        data["train"].pop("fold")
        data.pop("tuning")
        if config.tuning.enabled:
            for key in POSTPROCESSING_KEYS:
                data["inference"].pop(key)
        if config.preprocess.target_spacing is None:
            data["preprocess"].pop("target_spacing")
    if existing["network"]["name"] != mine["network"]["name"]:
        raise ConfigError(
            f"{path} is for network {existing['network']['name']}, this run trains {mine['network']['name']}: "
            "weights in one folder are ensembled, so they must be of one network; choose another --out"
        )
    differences = flat_differences(existing, mine)
    if differences:
        raise ConfigError(
            f"{path} holds a different configuration ({describe_differences(differences, 'there', 'here')}): "
            "weights in one folder are ensembled, so they must share it; choose another --out"
        )


def held_out_runs(out_dir: Path, config: ExperimentConfig, cases: Sequence[CaseImages],
                  trained: Sequence[tuple[Path, Sequence[str]]]) -> list[tuple[Path, list[str]]]:
    """Every weights file of the folder with the cases it never trained on, for out-of-fold tuning.

    The folder's networks are ensembled at inference, so tuning covers all of them: ``trained``
    (this command's runs) and every other ``fold<k>.pt`` or ``fold<k>-net<m>.pt`` there, whose validation
    cases are fold k of the split ``config`` makes of ``cases``. Weights of an explicit validation list that
    this command did not train cannot be placed, and are named in a warning.
    """
    runs = [(Path(weights), list(ids)) for weights, ids in trained]
    known = {weights.name for weights, _ in runs}
    burdens = [lesion_burden(case) for case in cases]
    case_ids = [case.files.case_id for case in cases]
    for path in sorted(Path(out_dir).glob("*.pt")):
        if path.name in known:
            continue
        match = FOLD_RUN.fullmatch(path.stem)
        if match is None:
            LOG.warning("%s: not tuned with the others (its validation cases are not recorded); it is still "
                        "ensembled at inference", path)
            continue
        _, validation = train_validation_split(case_ids, burdens, folds=config.train.folds, fold=int(match[1]),
                                               seed=config.train.seed)
        runs.append((path, validation))
    return sorted(runs, key=lambda run: run[0].name)
