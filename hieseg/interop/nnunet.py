"""A BONBID-HIE release as an nnU-Net v2 raw dataset, with the project's folds, and nnU-Net's predictions read back.

:func:`export_nnunet` writes, under an ``nnUNet_raw`` folder::

    DatasetNNN_BONBIDHIE/
        dataset.json           channel_names {"0": "ADC", "1": "Z_ADC"}, labels, numTraining, file_ending ".mha"
        imagesTr/<case>_0000.mha   the release's ADC      (hard link, symbolic link or copy)
        imagesTr/<case>_0001.mha   its Z_ADC
        labelsTr/<case>.mha        its lesion label
        imagesTs/<case>_0000.mha, _0001.mha   (with ``test``: a second release, labels not needed)
        splits_final.json      hie-seg's folds (``hieseg.data.splits``, same seed and folds as train.py)
        hieseg_export.json     where it came from, how the files were placed, the folds' settings

What nnU-Net v2 (checked against nnunetv2 2.8.1) expects, and why this layout meets it:

* datasets are found by the prefix ``Dataset%03d`` of their folder, in ``nnUNet_raw``,
  ``nnUNet_preprocessed`` and ``nnUNet_results`` (``utilities/dataset_name_id_conversion.py``);
  two folders with one id make it fail, so an id used in any of them is refused here;
* ``dataset.json`` needs ``channel_names``, ``labels`` (background 0, consecutive), ``numTraining``
  and ``file_ending`` (``experiment_planning/verify_dataset_integrity.py``); channel names other
  than "CT" get nnU-Net's z-score normalisation;
* a case ``X`` is ``imagesTr/X_0000<ending>`` ... one per channel and ``labelsTr/X<ending>``;
  ``.mha`` is read by its SimpleITK reader, whose predictions are ``<X>.mha`` on the input's grid;
* ``splits_final.json`` is a list of ``{"train": [...], "val": [...]}``, one per fold, read from
  ``nnUNet_preprocessed/DatasetNNN_*/``; the planner copies it there from the raw dataset folder
  when it plans (``ExperimentPlanner.__init__``), and asserts that a split already there agrees.

The release's case ids are kept as nnU-Net's case identifiers, so nnU-Net's predictions are
``<case>.mha``, the names ``python -m hieseg.evaluate`` and ``python -m hieseg.compare`` read:
nothing to rename, and no switch to tell them the folder came from nnU-Net.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hieseg
from hieseg.data.burden import lesion_burden
from hieseg.data.splits import stratified_folds
from hieseg.errors import ConfigError, DatasetError, OutputError
from hieseg.interop.staging import staged_folder
from hieseg.io.images import require_writable
from hieseg.io.layout import CaseFiles, discover_cases, load_case

LOG = logging.getLogger(__name__)
DATASET_NAME = "BONBIDHIE"
CHANNEL_NAMES = {"0": "ADC", "1": "Z_ADC"}
LABELS = {"background": 0, "lesion": 1}
FILE_ENDING = ".mha"
SPLITS_FILE = "splits_final.json"
EXPORT_RECORD = "hieseg_export.json"
ENVIRONMENT_FOLDERS = ("nnUNet_preprocessed", "nnUNet_results")
"""The other folders where nnU-Net looks a dataset id up (besides nnUNet_raw, the export's --out)."""
MAX_DATASET_ID = 999
LINK_METHODS = ("auto", "hard", "symlink", "copy")
PLANS_FILE = "plans.json"
PREDICTION_MARKERS = ("plans.json", "dataset.json", "predict_from_raw_data_args.json")
"""Files nnU-Net's ``nnUNetv2_predict`` writes beside the masks."""


@dataclass
class NnunetExport:
    """What :func:`export_nnunet` wrote: the dataset folder, the cases, and how the files were placed."""

    folder: Path
    training_cases: list[str]
    test_cases: list[str]
    splits: list[dict[str, list[str]]]
    placed: dict[str, int] = field(default_factory=dict)
    """How many files were hard-linked ("hard"), symbolically linked ("symlink") or copied ("copy")."""


def dataset_folder_name(dataset_id: int) -> str:
    """``DatasetNNN_BONBIDHIE``, the id with 3 digits as nnU-Net names datasets."""
    return f"Dataset{dataset_id:03d}_{DATASET_NAME}"


def check_dataset_id(dataset_id: int) -> None:
    if not 1 <= dataset_id <= MAX_DATASET_ID:
        raise ConfigError(f"--dataset-id must be in [1, {MAX_DATASET_ID}] (nnU-Net names datasets DatasetNNN), "
                          f"got {dataset_id}")


def datasets_with_id(dataset_id: int, folders: Sequence[Path]) -> list[Path]:
    """The dataset folders (``DatasetNNN_*``) of ``dataset_id`` in any of ``folders``, as nnU-Net finds them."""
    prefix = f"Dataset{dataset_id:03d}"
    found = []
    for folder in folders:
        if Path(folder).is_dir():
            found += sorted(p for p in Path(folder).iterdir() if p.is_dir() and p.name.startswith(prefix))
    return found


def nnunet_folders(raw: Path) -> list[Path]:
    """``raw`` and the nnU-Net folders named by the environment (``nnUNet_preprocessed``, ``nnUNet_results``)."""
    return [Path(raw)] + [Path(os.environ[name]) for name in ENVIRONMENT_FOLDERS if os.environ.get(name)]


def case_burdens(cases: Sequence[CaseFiles]) -> list[float]:
    """Each case's lesion burden, read and checked as train.py reads them (:func:`hieseg.data.burden.lesion_burden`)."""
    return [lesion_burden(load_case(files)) for files in cases]


def nnunet_splits(case_ids: Sequence[str], burdens: Sequence[float], folds: int, seed: int) -> list[dict[str, list[str]]]:
    """hie-seg's stratified folds (:func:`hieseg.data.splits.stratified_folds`) as nnU-Net's ``splits_final.json``."""
    validation_folds = stratified_folds(case_ids, burdens, folds, seed)
    return [{"train": sorted(set(case_ids) - set(validation)), "val": list(validation)}
            for validation in validation_folds]


def dataset_json(training_cases: int) -> dict[str, Any]:
    return {
        "channel_names": dict(CHANNEL_NAMES),
        "labels": dict(LABELS),
        "numTraining": training_cases,
        "file_ending": FILE_ENDING,
        "name": DATASET_NAME,
        "description": "BONBID-HIE: HIE lesions in neonatal diffusion MRI, channels skull-stripped ADC and Z_ADC; "
                       "exported by hie-seg with its case ids and its folds (splits_final.json)",
        "reference": "https://bonbid-hie2023.grand-challenge.org/",
        "licence": "see the BONBID-HIE data terms",
        "converted_by": f"hieseg-export nnunet (hie-seg {hieseg.__version__})",
    }


def export_nnunet(
    data: Path,
    out: Path,
    dataset_id: int,
    *,
    folds: int,
    seed: int,
    test: Path | None = None,
    link: str = "auto",
) -> NnunetExport:
    """Write ``out/DatasetNNN_BONBIDHIE`` from the release ``data`` (and ``test``'s cases into imagesTs).

    Refused before anything is written: an id outside 1-999 or already used in ``out`` or the
    nnU-Net folders of the environment, a release with missing partners or files train.py
    would refuse, an unwritable ``out``. The dataset is written into a temporary folder in
    ``out`` and renamed at the end, so nnU-Net never sees half a dataset.
    """
    data, out = Path(data), Path(out)
    check_dataset_id(dataset_id)
    if link not in LINK_METHODS:
        raise ConfigError(f"--link must be one of {', '.join(LINK_METHODS)}, got {link!r}")
    target = out / dataset_folder_name(dataset_id)
    used = datasets_with_id(dataset_id, nnunet_folders(out))
    if used:
        raise OutputError(f"dataset id {dataset_id} is already used by {', '.join(map(str, used))}; "
                          "nnU-Net finds datasets by id, so choose another --dataset-id")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: is a file, not a folder")
    require_writable(out, folder=True)
    training = discover_cases(data)
    testing = discover_cases(test, require_labels=False) if test is not None else []
    case_ids = [case.case_id for case in training]
    splits = nnunet_splits(case_ids, case_burdens(training), folds, seed)
    for files in testing:
        load_case(files)
    placer = _Placer(link)
    with staged_folder(target) as staging:
        for files in training:
            placer.place(files.adc, staging / "imagesTr" / f"{files.case_id}_0000{FILE_ENDING}")
            placer.place(files.zadc, staging / "imagesTr" / f"{files.case_id}_0001{FILE_ENDING}")
            placer.place(files.label, staging / "labelsTr" / f"{files.case_id}{FILE_ENDING}")
        for files in testing:
            placer.place(files.adc, staging / "imagesTs" / f"{files.case_id}_0000{FILE_ENDING}")
            placer.place(files.zadc, staging / "imagesTs" / f"{files.case_id}_0001{FILE_ENDING}")
        _write_json(staging / "dataset.json", dataset_json(len(training)))
        _write_json(staging / SPLITS_FILE, splits)
        _write_json(staging / EXPORT_RECORD, {
            "source": str(data.resolve()),
            "test_source": None if test is None else str(Path(test).resolve()),
            "files": placer.counts,
            "folds": folds,
            "seed": seed,
            "hieseg": hieseg.__version__,
        })
    return NnunetExport(folder=target, training_cases=case_ids, test_cases=[c.case_id for c in testing],
                        splits=splits, placed=dict(placer.counts))


class _Placer:
    """Puts a release file into the dataset: a hard link, else a symbolic link, else a copy ("auto"), or as asked."""

    def __init__(self, method: str) -> None:
        self.order = {"auto": ["hard", "symlink", "copy"], "hard": ["hard"], "symlink": ["symlink"],
                      "copy": ["copy"]}[method]
        self.counts: dict[str, int] = {}

    def place(self, source: Path, destination: Path) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        source = Path(source).resolve()
        errors = []
        for method in list(self.order):
            try:
                if method == "hard":
                    os.link(source, destination)
                elif method == "symlink":
                    os.symlink(source, destination)
                else:
                    shutil.copy2(source, destination)
            except OSError as exc:
                errors.append(f"{method}: {exc.strerror or exc}")
                if len(self.order) > 1:
                    self.order.remove(method)  # the file system refuses it: do not try it for every file
                continue
            self.counts[method] = self.counts.get(method, 0) + 1
            return
        raise OutputError(f"{destination}: cannot place {source} ({'; '.join(errors)})")


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=4) + "\n")


def describe_placement(counts: dict[str, int]) -> str:
    names = {"hard": "hard-linked", "symlink": "symbolically linked", "copy": "copied"}
    return ", ".join(f"{count} {names[method]}" for method, count in counts.items()) or "no files"


# ------------------------------------------------------------------------------------------- nnU-Net's side, read back


def is_nnunet_predictions(folder: Path) -> bool:
    """Whether ``folder`` was written by ``nnUNetv2_predict`` (it leaves plans.json, dataset.json and its arguments)."""
    return all((Path(folder) / name).is_file() for name in PREDICTION_MARKERS)


def plans_target_spacing(plans: dict[str, Any], configuration: str = "3d_fullres") -> tuple[float, float, float]:
    """The network grid (mm, x, y, z) of a configuration of nnU-Net plans.

    nnU-Net's spacings are in the array order of its SimpleITK reader (z, y, x), and a
    configuration's ``spacing`` is further permuted by the plans' ``transpose_forward``; this undoes both.
    """
    try:
        transposed = [float(s) for s in plans["configurations"][configuration]["spacing"]]
        forward = [int(a) for a in plans["transpose_forward"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"nnU-Net plans without a {configuration} spacing ({exc})") from exc
    zyx = [0.0] * 3
    for position, axis in enumerate(forward):
        zyx[axis] = transposed[position]
    return tuple(round(v, 4) for v in reversed(zyx))  # type: ignore[return-value]


def describe_predictions(folder: Path) -> tuple[str, tuple[float, float, float] | None]:
    """A description of a folder of predicted masks, and nnU-Net's 3d_fullres grid when nnU-Net wrote it.

    The configuration nnU-Net predicted with is not recorded in the folder, so the grid is the
    plans' 3d_fullres one, named as such and used for nothing but the description.
    """
    folder = Path(folder)
    if not is_nnunet_predictions(folder):
        return f"{folder}: predicted masks", None
    try:
        plans = json.loads((folder / PLANS_FILE).read_text())
        grid = plans_target_spacing(plans)
    except (OSError, ValueError, DatasetError):
        return f"{folder}: nnU-Net v2 predictions (plans unreadable)", None
    name = plans.get("plans_name", "?")
    dataset = plans.get("dataset_name", "?")
    shown = " × ".join(f"{s:g}" for s in grid)
    return f"{folder}: nnU-Net v2 predictions ({dataset}, plans {name}, 3d_fullres grid {shown} mm)", grid

