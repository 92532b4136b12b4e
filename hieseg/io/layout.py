"""The on-disk layouts the project reads and writes, and where weights are found by default.

Two layouts of cases exist:

* the public BONBID-HIE training release, one folder per modality, files named by case id::

      <root>/1ADC_ss/<case>-ADC_ss.mha
      <root>/2Z_ADC/Zmap_<case>-ADC_smooth2mm_clipped10.mha
      <root>/3LABEL/<case>_lesion.mha

* the grand-challenge container interface, one case per run, files named by a uuid::

      <input>/images/skull-stripped-adc-brain-mri/<uuid>.mha
      <input>/images/z-score-adc/<uuid>.mha
      <output>/images/hie-lesion-segmentation/<uuid>.mha
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import SimpleITK as sitk

from hieseg.config.settings import CONFIG_FILENAME
from hieseg.errors import DatasetError, ImageError, InputError, ModelError
from hieseg.io.brain import check_brain
from hieseg.io.images import (
    MHA_SUFFIX,
    broken_link,
    check_plausible_spacing,
    check_same_geometry,
    read_image,
    require_binary,
)

ADC_DIR = "1ADC_ss"
ZADC_DIR = "2Z_ADC"
LABEL_DIR = "3LABEL"
ADC_SUFFIX = f"-ADC_ss{MHA_SUFFIX}"
ZADC_PREFIX = "Zmap_"
ZADC_SUFFIX = f"-ADC_smooth2mm_clipped10{MHA_SUFFIX}"
LABEL_SUFFIX = f"_lesion{MHA_SUFFIX}"
CONTAINER_MODEL_DIR = Path("/opt/ml/model")
BUNDLED_MODEL_DIR = Path(__file__).resolve().parents[2] / "model"
"""The ``model/`` folder beside the package's folder: the checkout's, or the image's ``/opt/app/model``.
An installed package has none, so it needs ``--model`` unless ``/opt/ml/model`` holds one."""

INTERFACES_RESOURCE = "resources/interfaces.json"
"""The challenge's input and output interfaces: package data of ``hieseg``, shipped with the code."""


@dataclass(frozen=True)
class ContainerInterface:
    """Where the container finds its case and writes its mask, relative to ``/input`` and ``/output``."""

    adc_dir: Path
    zadc_dir: Path
    output_dir: Path


@functools.cache
def container_interface() -> ContainerInterface:
    """The container's folders, read from the package's ``interfaces.json`` on first use (not at import)."""
    interfaces = json.loads(resources.files("hieseg").joinpath(INTERFACES_RESOURCE).read_text(encoding="utf-8"))
    return ContainerInterface(
        adc_dir=Path(interfaces["inputs"]["adc"]["relative_path"]),
        zadc_dir=Path(interfaces["inputs"]["zadc"]["relative_path"]),
        output_dir=Path(interfaces["outputs"]["lesion"]["relative_path"]),
    )


_INTERFACE_NAMES = {"CONTAINER_ADC_DIR": "adc_dir", "CONTAINER_ZADC_DIR": "zadc_dir", "CONTAINER_OUTPUT_DIR": "output_dir"}


def __getattr__(name: str) -> Path:
    """``CONTAINER_ADC_DIR``, ``CONTAINER_ZADC_DIR``, ``CONTAINER_OUTPUT_DIR``: the fields of
    :func:`container_interface` under the names that ``hieseg.synthesis.generator`` and the tests import,
    resolved when first asked for, so importing this module reads no file."""
    if name in _INTERFACE_NAMES:
        return getattr(container_interface(), _INTERFACE_NAMES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class CaseFiles:
    """Paths of the three files of one training case."""

    case_id: str
    adc: Path
    zadc: Path
    label: Path | None


@dataclass
class CaseImages:
    """The validated images of one case, all on the same native grid."""

    files: CaseFiles
    adc: sitk.Image
    zadc: sitk.Image
    label: sitk.Image | None


def adc_path(root: Path, case_id: str) -> Path:
    return Path(root) / ADC_DIR / f"{case_id}{ADC_SUFFIX}"


def zadc_path(root: Path, case_id: str) -> Path:
    return Path(root) / ZADC_DIR / f"{ZADC_PREFIX}{case_id}{ZADC_SUFFIX}"


def label_path(root: Path, case_id: str) -> Path:
    return Path(root) / LABEL_DIR / f"{case_id}{LABEL_SUFFIX}"


def discover_cases(root: Path, *, require_labels: bool = True) -> list[CaseFiles]:
    """List the cases of a release folder, sorted by id, after checking every partner exists."""
    cases, incomplete = find_cases(root, require_labels=require_labels)
    if incomplete:
        case_id, problem = next(iter(incomplete.items()))
        raise DatasetError(f"case {case_id}: {problem}")
    return cases


def discover_union(roots: Sequence[Path], *, require_labels: bool = True) -> list[CaseFiles]:
    """The cases of several release folders as one set, sorted by id as one folder's would be.

    Sorting by id makes the union of folders train exactly as a folder holding all their files
    would (the split and the sampling follow the case order). A case id found in two folders is a
    :class:`DatasetError` naming both, since one of them would silently shadow the other.
    """
    if not roots:
        raise DatasetError("no release folder given")
    first_seen: dict[str, Path] = {}
    cases: list[CaseFiles] = []
    for root in roots:
        for files in discover_cases(root, require_labels=require_labels):
            if files.case_id in first_seen:
                raise DatasetError(f"case {files.case_id} is in both {first_seen[files.case_id]} and {root}; "
                                   "a case may be given once")
            first_seen[files.case_id] = Path(root)
            cases.append(files)
    return sorted(cases, key=lambda files: files.case_id)


def find_cases(root: Path, *, require_labels: bool = True) -> tuple[list[CaseFiles], dict[str, str]]:
    """The complete cases of a release folder, sorted by id, and each incomplete one's missing partners.

    A folder that is not a release root (or holds no case at all) is a :class:`DatasetError`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: {'is a file, not a data folder' if root.exists() else 'data folder not found'}")
    adc_dir = root / ADC_DIR
    if not adc_dir.is_dir():
        raise DatasetError(f"{root}: missing the {ADC_DIR}/ folder of the BONBID-HIE layout")
    ids = {path.name[: -len(ADC_SUFFIX)] for path in adc_dir.glob(f"*{ADC_SUFFIX}")}
    ids |= _ids_in(root / ZADC_DIR, rf"^{re.escape(ZADC_PREFIX)}(.+){re.escape(ZADC_SUFFIX)}$")
    if require_labels:
        ids |= _ids_in(root / LABEL_DIR, rf"^(.+){re.escape(LABEL_SUFFIX)}$")
    if not ids:
        raise DatasetError(f"{root}: no cases found (expected {ADC_DIR}/<case>{ADC_SUFFIX})")
    cases, incomplete = [], {}
    for case_id in sorted(ids):
        files = CaseFiles(
            case_id=case_id,
            adc=adc_path(root, case_id),
            zadc=zadc_path(root, case_id),
            label=label_path(root, case_id) if require_labels else None,
        )
        missing = [p for p in (files.adc, files.zadc, files.label) if p is not None and not p.is_file()]
        if missing:
            incomplete[case_id] = "missing partner file(s): " + ", ".join(str(p) for p in missing)
        else:
            cases.append(files)
    return cases, incomplete


def _ids_in(folder: Path, pattern: str) -> set[str]:
    if not folder.is_dir():
        return set()
    regex = re.compile(pattern)
    return {match.group(1) for path in folder.iterdir() if (match := regex.match(path.name))}


def load_case(files: CaseFiles) -> CaseImages:
    """Read a case's images and check they share one grid, the ADC has a brain and the label is binary.

    Images that contradict the ADC's brain are logged as warnings (:func:`hieseg.io.brain.check_brain`).
    """
    try:
        adc = read_image(files.adc)
        check_plausible_spacing(adc, files.adc)
        zadc = read_image(files.zadc)
        check_same_geometry(adc, files.adc, zadc, files.zadc)
        label = None
        if files.label is not None:
            label = read_image(files.label)
            check_same_geometry(adc, files.adc, label, files.label)
            require_binary(label, files.label, "label")
        check_brain(adc, files.adc, zadc, files.zadc, label, files.label)
    except ImageError as exc:
        raise DatasetError(f"case {files.case_id}: {exc}") from exc
    return CaseImages(files=files, adc=adc, zadc=zadc, label=label)


def single_image(folder: Path) -> Path:
    """The one .mha file of an input folder; zero or several is an error that names the folder.

    Hidden files (a name starting with a dot, which file managers and copies leave) are ignored, and
    named when nothing else is there, as a file called ``.mha`` or ``...mha`` is hidden too.
    """
    if not folder.is_dir():
        raise ImageError(f"{folder}: {_not_a_folder(folder, 'a folder')}")
    every = sorted(folder.iterdir())
    entries = [p for p in every if not p.name.startswith(".")]
    images = [p for p in entries if p.suffix == MHA_SUFFIX]
    if len(images) != 1 or len(entries) != 1:
        listing = ", ".join(p.name for p in entries) or "nothing"
        hidden = [p.name for p in every if p.name.startswith(".")]
        ignored = f" (hidden, so ignored: {', '.join(hidden)})" if hidden and not entries else ""
        raise ImageError(f"{folder}: expected exactly one {MHA_SUFFIX} file, found {listing}{ignored}")
    return images[0]


def check_input_root(input_root: Path, error: type[InputError] = ImageError) -> None:
    """Refuse an input root that is missing, a file or a broken link, naming it, before looking for the images inside
    (as ``error``: a batch's root is a data set, a container case's root holds its images)."""
    if not input_root.is_dir():
        raise error(f"{input_root}: {_not_a_folder(input_root, 'the input folder')}")


def _not_a_folder(path: Path, what: str) -> str:
    """Why ``path`` is not the folder ``what`` names, in words: a file, a looping or dangling link, or nothing."""
    if path.exists():
        return f"is a file, not {what}"
    return broken_link(path) or "input folder not found"


def read_input_case(input_root: Path) -> CaseImages:
    """Read and check the ADC and Z_ADC of the container's single case (see :func:`hieseg.io.brain.check_brain`)."""
    check_input_root(input_root)
    interface = container_interface()
    adc_file = single_image(input_root / interface.adc_dir)
    zadc_file = single_image(input_root / interface.zadc_dir)
    adc = read_image(adc_file)
    check_plausible_spacing(adc, adc_file)
    zadc = read_image(zadc_file)
    check_same_geometry(adc, adc_file, zadc, zadc_file)
    check_brain(adc, adc_file, zadc, zadc_file)
    files = CaseFiles(case_id=adc_file.stem, adc=adc_file, zadc=zadc_file, label=None)
    return CaseImages(files=files, adc=adc, zadc=zadc, label=None)


def output_path(input_root: Path, output_root: Path) -> Path:
    """Where the container's mask goes: the output folder of the interface, under the ADC file's name."""
    check_input_root(input_root)
    interface = container_interface()
    return output_root / interface.output_dir / single_image(input_root / interface.adc_dir).name


def default_model_dir() -> Path:
    """The mounted /opt/ml/model when it holds a trained model, else the bundled model/ folder."""
    for folder in (CONTAINER_MODEL_DIR, BUNDLED_MODEL_DIR):
        if (folder / CONFIG_FILENAME).is_file():
            return folder
    if not (BUNDLED_MODEL_DIR.parent / "pyproject.toml").is_file():  # no checkout around the package: installed
        raise ModelError(f"no weights folder given: {CONTAINER_MODEL_DIR} holds no {CONFIG_FILENAME}, and an installed "
                         "hieseg carries no weights (the demo weights are the model/ folder of the repository); "
                         "pass --model DIR or set HIESEG_MODEL")
    raise ModelError(f"no weights folder given and neither {CONTAINER_MODEL_DIR} nor {BUNDLED_MODEL_DIR} holds a "
                     f"{CONFIG_FILENAME}; pass --model DIR or set HIESEG_MODEL")
