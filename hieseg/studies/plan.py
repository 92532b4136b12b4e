"""What a study is: its settings, its folds and its (network, loss, fold) runs, checked against its folder.

A study folder records its shared settings (``study.json``) and its folds (``splits.json``) the
first time it runs; every later run, from any process, must match them (:func:`check_settings`,
:func:`folds_for`), so runs added or resumed later are trained and scored exactly like the first.
See :mod:`hieseg.cli.study` for the whole command.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from hieseg.config.differences import ABSENT, describe_differences, flat_differences
from hieseg.config.settings import CONFIG_FORMAT_VERSION, LOSS_NAMES, ExperimentConfig
from hieseg.data.burden import lesion_burden
from hieseg.data.splits import stratified_folds
from hieseg.errors import ConfigError, DatasetError, OutputError
from hieseg.evaluation.metrics import DEFAULT_NSD_TOLERANCE_MM
from hieseg.io.images import MHA_SUFFIX, write_atomic
from hieseg.io.layout import CaseFiles, discover_cases, load_case
from hieseg.runtime import claims
from hieseg.training.folder import run_dir as training_run_dir
from hieseg.training.folder import run_name
from hieseg.training.logs import METRICS_FILE

ALL_LOSSES = "all"
STUDY_JSON = "study.json"
SPLITS_JSON = "splits.json"
MODELS_DIR = "models"
PREDICTIONS_DIR = "predictions"
FOLD_SCORES_CSV = "scores.csv"
CLAIMS_DIR = "claims"
SETTINGS_CLAIM = "settings"
"""The claim a process holds while it adds networks to ``study.json``, so that concurrent additions are all kept."""
SETTINGS_WAIT_S = 120.0
SETTINGS_POLL_S = 0.05
PER_RUN_KEYS = ("network.name", "loss.name", "train.fold")
"""The only configuration keys allowed to differ between the runs of a study."""
COMPARED_SETTINGS = ("config", "nsd_tolerance_mm")
"""The parts of ``study.json`` a rerun must match; its networks may grow, its budget follows from the config."""
BUDGET_UNIT = "steps"
BUDGET_REASON = (
    "optimiser steps, not seconds: a step count gives every network the same updates on the same patches and "
    "reproduces on any machine, where seconds depend on the device, its load and the other jobs on it"
)
Method = tuple[str, str]
"""What the study compares: a (network, loss) pair."""


def method_label(method: Method) -> str:
    """A (network, loss) as plots and the HTML report name it."""
    return f"{method[0]} / {method[1]}"


@dataclass(frozen=True)
class RunKey:
    """One (network, loss, fold) run of a study."""

    network: str
    loss: str
    fold: int

    @property
    def method(self) -> Method:
        return (self.network, self.loss)

    @property
    def claim_key(self) -> str:
        """The run's name among the study's claims (:mod:`hieseg.runtime.claims`)."""
        return f"{self.network}.{self.loss}.fold{self.fold}"

    def __str__(self) -> str:
        return f"{method_label(self.method)} fold {self.fold}"


@dataclass(frozen=True)
class RunTask:
    """What a worker needs to run one run: the run, its held-out cases, and the claim it may take over."""

    run: RunKey
    held_out: tuple[CaseFiles, ...]
    takeover: int | None = None

    def __str__(self) -> str:
        return str(self.run)


@dataclass(frozen=True)
class Plan:
    """The study's cases, its folds and its runs in order (networks as given, losses within each, then folds)."""

    files: tuple[CaseFiles, ...]
    folds: tuple[tuple[str, ...], ...]
    runs: tuple[RunKey, ...]

    def held_out(self, fold: int) -> list[CaseFiles]:
        by_id = {f.case_id: f for f in self.files}
        return [by_id[case_id] for case_id in self.folds[fold]]


@dataclass(frozen=True)
class Study:
    """What a study compares and where: shared by every (network, loss, fold) run.

    ``networks`` left empty means the configuration's ``network.name`` alone.
    """

    data: Path
    out: Path
    config: ExperimentConfig
    losses: tuple[str, ...]
    networks: tuple[str, ...] = ()
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.networks:
            object.__setattr__(self, "networks", (self.config.network.name,))

    @property
    def methods(self) -> tuple[Method, ...]:
        """The (network, loss) pairs compared, networks as given and losses within each."""
        return tuple((network, loss) for network in self.networks for loss in self.losses)

    def run_config(self, run: RunKey) -> ExperimentConfig:
        return self.config.with_overrides({"network.name": run.network, "loss.name": run.loss, "train.fold": run.fold})

    def run_dir(self, run: RunKey) -> Path:
        return self.out / MODELS_DIR / run.network / run.loss / f"fold{run.fold}"

    def scores_path(self, run: RunKey) -> Path:
        """The run's held-out scores; their presence marks the run as finished."""
        return self.run_dir(run) / FOLD_SCORES_CSV

    @property
    def claims_dir(self) -> Path:
        return self.out / CLAIMS_DIR

    def metrics_path(self, run: RunKey, held_out_ids: Sequence[str]) -> Path:
        """The metrics.csv that training writes for this run (named after its explicit validation ids)."""
        name = run_name(self.run_config(run), list(held_out_ids))
        return training_run_dir(self.run_dir(run), name) / METRICS_FILE

    def prediction_path(self, method: Method, case_id: str) -> Path:
        network, loss = method
        return self.out / PREDICTIONS_DIR / network / loss / f"{case_id}{MHA_SUFFIX}"


def check_networks(config: ExperimentConfig, networks: Sequence[str]) -> None:
    """Refuse, before any work, a network that cannot train on the study's patches or predict with its window.

    Every network of a study trains on the same ``train.patch_size`` and predicts with the same
    ``inference.roi_size``, so each must accept both (:class:`hieseg.config.settings.ExperimentConfig`
    checks them, e.g. SwinUNETR's multiples of 32).
    """
    for network in networks:
        try:
            config.with_overrides({"network.name": network})
        except ConfigError as exc:
            raise ConfigError(
                f"--networks {network}: {exc}; every network of a study uses the same train.patch_size and "
                "inference.roi_size, so choose sizes that all of --networks accept, or leave this network out"
            ) from exc


def prepare(study: Study, create: bool) -> Plan:
    """The study's cases, folds and runs, after checking its networks, and the folder's settings and folds,
    against this command.

    ``create``: record the settings and folds when the folder has none yet (a new study), and
    add this command's networks to those ``study.json`` lists; otherwise a folder without them
    is refused, and ``study.json`` is left as it is.
    """
    check_networks(study.config, study.networks)
    files = discover_cases(study.data)
    if create:
        study.out.mkdir(parents=True, exist_ok=True)
    elif not (study.out / STUDY_JSON).is_file():
        raise OutputError(f"{study.out}: no study here ({STUDY_JSON} missing); run the study first")
    check_settings(study.out / STUDY_JSON, study_settings(study), record=create)
    folds = folds_for(study.out / SPLITS_JSON, case_burdens(files, study.progress), study.config)
    runs = tuple(RunKey(network, loss, fold) for network, loss in study.methods for fold in range(len(folds)))
    return Plan(tuple(files), tuple(tuple(fold) for fold in folds), runs)


def study_settings(study: Study) -> dict[str, object]:
    """What every run of the study shares (the configuration without its per-run keys, the NSD tolerance and the
    budget that follows from the configuration), and the networks it compares."""
    return {
        "config": shared_config(study.config.settings_dict()),
        "networks": list(study.networks),
        "nsd_tolerance_mm": study.nsd_tolerance_mm,
        "budget": budget(study.config),
    }


def budget(config: ExperimentConfig) -> dict[str, object]:
    """Every run's training budget, the same for every network and loss, and why it is counted in steps."""
    train = config.train
    return {
        "unit": BUDGET_UNIT,
        "epochs": train.epochs,
        "steps_per_epoch": train.steps_per_epoch or "one pass over the fold's training cases",
        "patches_per_step": train.batch_size,
        "early_stopping_patience": train.patience,
        "why": BUDGET_REASON,
    }


def shared_config(data: dict[str, object]) -> dict[str, object]:
    """A configuration as :meth:`ExperimentConfig.to_dict` writes it, without the per-run keys."""
    data = json.loads(json.dumps(data))
    for dotted in PER_RUN_KEYS:
        section, _, key = dotted.partition(".")
        data[section].pop(key, None)
    data.pop("provenance", None)
    return data


def current_config(data: Mapping[str, object], network: str) -> dict[str, object]:
    """A shared configuration recorded by any version (config format 1, keys added since left out) in today's form.

    The per-run keys are filled in to build it (``network`` for the network, whose section then
    checks the patch sizes) and taken out again; keys absent from the record get their defaults.
    """
    filled = json.loads(json.dumps(data))
    if isinstance(filled, dict):
        if filled.get("format_version", CONFIG_FORMAT_VERSION) != 1:  # format 1 had no network.name: U-Net only
            _section(filled, "network").setdefault("name", network)
        _section(filled, "loss").setdefault("name", LOSS_NAMES[0])
        _section(filled, "train")["fold"] = 0
    return shared_config(ExperimentConfig.from_dict(filled).settings_dict())


def _section(data: dict, name: str) -> dict:
    section = data.setdefault(name, {})
    return section if isinstance(section, dict) else {}


def recorded_networks(recorded: Mapping[str, object]) -> list[str]:
    """The networks a ``study.json`` lists; for one written before studies compared networks, its one network."""
    if "networks" in recorded:
        return list(recorded["networks"])
    config = recorded.get("config")
    network = config.get("network") if isinstance(config, dict) else None
    return [network.get("name", "unet") if isinstance(network, dict) else "unet"]


def check_settings(path: Path, settings: dict[str, object], record: bool = True) -> None:
    """Record the shared settings on the first run; refuse a rerun whose settings differ.

    Without this, a rerun with another budget would skip the finished runs and mix their
    scores with runs trained differently. Of several processes that start a study at once,
    exactly one records the settings and the others compare theirs with it. Both
    configurations are brought to today's config format first (:func:`current_config`), so a
    study recorded by an older version is the same study unless a setting really differs.

    The networks may grow: with ``record``, networks new to the study are added to its list.
    A folder whose runs are laid out as before networks were compared is refused
    (:func:`refuse_old_layout`).
    """
    current = json.loads(json.dumps(settings))
    if claims.create_new(path, json.dumps(current, indent=2) + "\n"):
        return
    recorded = json.loads(path.read_text())
    networks = recorded_networks(recorded)
    try:
        then = current_config(recorded.get("config", {}), networks[0])
    except ConfigError as exc:
        raise ConfigError(f"{path}: its recorded configuration cannot be read ({exc}); choose another --out") from exc
    now = current_config(current["config"], recorded_networks(current)[0])
    differences = flat_differences(
        {**{key: recorded.get(key, ABSENT) for key in COMPARED_SETTINGS}, "config": then},
        {**{key: current.get(key, ABSENT) for key in COMPARED_SETTINGS}, "config": now},
    )
    if differences:
        raise ConfigError(
            f"{path}: this study was started with other settings ({describe_differences(differences, 'then', 'now')}); "
            "rerun with the same ones or choose another --out"
        )
    if "networks" not in recorded:
        refuse_old_layout(path.parent, networks[0])
    if record and ("networks" not in recorded or not set(current["networks"]) <= set(networks)):
        add_networks(path, current)


def refuse_old_layout(out: Path, network: str) -> None:
    """Refuse a folder whose runs are laid out as before studies compared networks (``models/<loss>/fold<k>``).

    This version would not see those runs: it would train them again beside them, or report
    without them. The refusal says how to move them to today's layout instead.
    """
    found = [f"{top}/{loss}" for top in (MODELS_DIR, PREDICTIONS_DIR) for loss in LOSS_NAMES
             if (out / top / loss).is_dir()]
    if found:
        raise OutputError(
            f"{out}: this study's folders are laid out by an older version of hieseg.study ({', '.join(found)}: "
            f"models/<loss>/fold<k>), which this version would not see; it keeps each network's runs apart "
            f"(models/<network>/<loss>/fold<k>). Finish it with the version that made it, or move "
            f"models/<loss> to models/{network}/<loss> and predictions/<loss> to predictions/{network}/<loss> "
            "(the network it trained) and rerun, or choose another --out"
        )


def add_networks(path: Path, settings: Mapping[str, object]) -> None:
    """Rewrite ``study.json`` in today's form with the networks of ``settings`` added to those it lists.

    One process at a time (it holds :data:`SETTINGS_CLAIM` meanwhile), so that networks added by
    processes starting together are all kept; it rereads the file under the claim.
    """
    folder = path.parent / CLAIMS_DIR
    deadline = time.monotonic() + SETTINGS_WAIT_S
    while isinstance(claim := claims.acquire(folder, SETTINGS_CLAIM), claims.Holder):
        if time.monotonic() > deadline:
            raise OutputError(
                f"{path}: {claim} has been updating it for over {SETTINGS_WAIT_S:.0f} s; if that process is gone, "
                f"remove {folder / SETTINGS_CLAIM}.*.json and rerun"
            )
        time.sleep(SETTINGS_POLL_S)
    with claim:
        networks = dict.fromkeys([*recorded_networks(json.loads(path.read_text())), *settings["networks"]])
        text = json.dumps({**settings, "networks": list(networks)}, indent=2) + "\n"
        write_atomic(path, lambda temporary: temporary.write_text(text))


def case_burdens(files: Sequence[CaseFiles], progress: bool) -> dict[str, float]:
    """Lesion fraction of brain volume of every case, reading one case at a time to bound memory."""
    return {
        f.case_id: lesion_burden(load_case(f))
        for f in tqdm(files, desc="reading cases", unit="case", disable=not progress)
    }


def folds_for(path: Path, burdens: Mapping[str, float], config: ExperimentConfig) -> list[list[str]]:
    """The study's folds: computed once and written to ``path``; a rerun must find the same cases and burdens.

    A rerun takes the recorded folds, not folds computed anew, so every run of the study, of
    whichever network or loss and whenever it was added, is scored on the same held-out cases
    (even if :func:`hieseg.data.splits.stratified_folds` has changed since).
    """
    ids = sorted(burdens)
    folds = stratified_folds(ids, [burdens[i] for i in ids], config.train.folds, config.train.seed)
    record = {"seed": config.train.seed, "folds": folds, "burdens": {i: burdens[i] for i in ids}}
    if claims.create_new(path, json.dumps(record, indent=2) + "\n"):
        return folds
    recorded = json.loads(path.read_text())
    recorded_ids = sorted(case_id for fold in recorded["folds"] for case_id in fold)
    if recorded_ids != ids:
        added, removed = sorted(set(ids) - set(recorded_ids)), sorted(set(recorded_ids) - set(ids))
        raise DatasetError(
            f"{path}: the data's cases no longer match the study's folds (new: {', '.join(added) or 'none'}; "
            f"gone: {', '.join(removed) or 'none'}); choose another --out"
        )
    if recorded.get("burdens") != record["burdens"]:
        raise DatasetError(
            f"{path}: the cases' lesion burdens changed since the folds were made, so the folds would differ; "
            "choose another --out"
        )
    return [list(fold) for fold in recorded["folds"]]

