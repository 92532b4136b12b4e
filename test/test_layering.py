"""The package's import rule: commands -> jobs -> library -> io/config/errors, never upwards.

Each sub-package of ``hieseg`` has a layer (``LAYERS``, as docs/architecture.md draws it); a module may
import its own package and packages of lower layers only. Library code never imports ``hieseg.cli``;
the entry points (``hieseg/<command>.py``, which ``python -m hieseg.<command>`` runs) import ``hieseg.cli`` alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hieseg"
LAYERS: dict[str, int] = {
    "errors": 0,
    "config": 1,
    "io": 2,
    "runtime": 3,
    "data": 4,
    "model": 4,
    "synthesis": 4,
    "inference": 5,
    "evaluation": 6,
    "reports": 7,
    "training": 8,
    "interop": 8,
    "benchmark": 9,
    "studies": 9,
    "cli": 10,
}
"""Library layers from the ground up; ``cli`` holds the command lines, above every job and library package."""
ENTRY = "entry point"


def part_of(path: Path, package: Path) -> str:
    """The layer name of a module of the package: its sub-package, ``errors``, or an entry point."""
    relative = path.relative_to(package)
    if len(relative.parts) == 1 and relative.stem not in ("__init__", "errors"):
        return ENTRY
    return relative.stem if len(relative.parts) == 1 else relative.parts[0]


def imported_parts(path: Path) -> list[tuple[int, str]]:
    """(line, part) of every import of a hieseg module in a file: ``hieseg.X...`` gives part X."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "hieseg" else [f"hieseg.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            segments = name.split(".")
            if segments[0] == "hieseg" and len(segments) > 1:
                found.append((node.lineno, segments[1]))
    return found


def violations(package: Path, layers: dict[str, int]) -> list[str]:
    """Every import against the rule, as ``file:line: part -> part``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        mine = part_of(path, package)
        for line, other in imported_parts(path):
            if other == mine or other == "__version__":
                continue
            allowed = other == "cli" if mine == ENTRY else (
                mine in layers and other in layers and layers[other] < layers[mine])
            if not allowed:
                found.append(f"{path.relative_to(package.parent)}:{line}: {mine} -> {other}")
    return found


def test_every_import_runs_down_the_layers() -> None:
    assert violations(PACKAGE, LAYERS) == []


def test_every_sub_package_has_a_layer() -> None:
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert packages - {"resources"} == set(LAYERS) - {"errors"}


@pytest.mark.parametrize(("module", "source", "expected"), [
    ("io/layout.py", "from hieseg.inference.predictor import Predictor\n", "io -> inference"),
    ("evaluation/baselines.py", "from hieseg.cli.infer import main\n", "evaluation -> cli"),
    ("data/splits.py", "from hieseg import evaluation\n", "data -> evaluation"),
    ("model/network.py", "import hieseg.synthesis.generator\n", "model -> synthesis"),
    ("predict.py", "from hieseg.inference.batch import predict_folder\n", "entry point -> inference"),
])
def test_an_import_against_the_rule_is_reported(tmp_path: Path, module: str, source: str, expected: str) -> None:
    package = tmp_path / "hieseg"
    path = package / module
    path.parent.mkdir(parents=True)
    path.write_text('"""A module."""\n\n' + source)
    assert violations(package, LAYERS) == [f"hieseg/{module}:3: {expected}"]
