"""The package as others get it: declared dependencies, the lean inference set, ``pip install .`` elsewhere."""

import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from compare_outputs import compare

REPO = Path(__file__).resolve().parent.parent
INFERENCE_REQUIREMENTS = REPO / "requirements-inference.txt"
DEVELOPMENT_REQUIREMENTS = REPO / "requirements.txt"


def pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file (lower-case names), includes and comments left out."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            found[name.strip().lower()] = version.strip()
    return found


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def development_only() -> list[str]:
    """Packages of requirements.txt that the image does not get (their import names equal their names)."""
    return sorted(set(pins(DEVELOPMENT_REQUIREMENTS)) - set(pins(INFERENCE_REQUIREMENTS)))


def test_requirements_files_and_pyproject_declare_the_same_packages() -> None:
    requirements = pytest.importorskip("packaging.requirements")
    assert "-r requirements-inference.txt" in DEVELOPMENT_REQUIREMENTS.read_text().splitlines()
    assert set(development_only()) >= {"matplotlib", "pytest", "tensorboard", "tqdm"}
    assert not {"matplotlib", "pytest", "tensorboard", "tqdm"} & set(pins(INFERENCE_REQUIREMENTS))
    project = pyproject()["project"]
    declared = {}
    for text in project["dependencies"] + project["optional-dependencies"]["test"]:
        requirement = requirements.Requirement(text)
        declared[requirement.name.lower()] = requirement.specifier
    tested = {**pins(INFERENCE_REQUIREMENTS), **pins(DEVELOPMENT_REQUIREMENTS)}
    assert set(declared) == set(tested)
    assert all(declared[name].contains(version) for name, version in tested.items()), (declared, tested)


BLOCKING_RUNNER = """
import sys
from importlib.abc import MetaPathFinder

BLOCKED = set(sys.argv[1].split(","))


class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not in requirements-inference.txt)", name=name)
        return None


sys.meta_path.insert(0, Block())
from hieseg.cli.infer import main

sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_inference_runs_with_nothing_but_the_inference_requirements(tmp_path: Path) -> None:
    blocked = development_only()
    result = subprocess.run(
        [sys.executable, "-c", BLOCKING_RUNNER, ",".join(blocked), "--input", str(REPO / "test" / "input"),
         "--output", str(tmp_path / "out"), "--model", str(REPO / "model"), "--device", "cpu"],
        env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert compare(tmp_path / "out", REPO / "test" / "expected_output") == []


CHECK_INSTALLED = """
import sys
from importlib.metadata import entry_points
from pathlib import Path

import hieseg
from hieseg.io.layout import container_interface

assert Path(hieseg.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), hieseg.__file__
commands = {e.name: e for e in entry_points(group="console_scripts") if e.name.startswith("hieseg-")}
for entry in commands.values():
    assert callable(entry.load()), entry
print(" ".join(sorted(commands)))
print(container_interface().output_dir)
"""


@pytest.mark.slow
def test_pip_install_gives_the_library_and_its_commands_outside_the_checkout(tmp_path: Path) -> None:
    source, environment, elsewhere = tmp_path / "source", tmp_path / "venv", tmp_path / "elsewhere"
    shutil.copytree(REPO / "hieseg", source / "hieseg", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", source)
    # No pip of its own: the system's pip and setuptools (seen through the system site) install into it,
    # where ensurepip's older setuptools could not build a wheel without the network.
    venv.create(environment, system_site_packages=True, with_pip=False)
    # The running interpreter may itself be a virtual environment (CI's .venv) holding torch and pip:
    # the new environment sees its packages too, whatever the base interpreter has installed.
    site_packages = next((environment / "lib").glob("python*/site-packages"))
    (site_packages / "running_interpreter.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    binaries = environment / "bin"
    install = subprocess.run(
        [str(binaries / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(source)],
        capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    shutil.rmtree(source)  # the installed package must need nothing from where it came from
    elsewhere.mkdir()

    def run(*command: str) -> subprocess.CompletedProcess:
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HIESEG_MODEL")}
        return subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True)

    check = run(str(binaries / "python"), "-c", CHECK_INSTALLED)
    assert check.returncode == 0, check.stderr
    names, interface_folder = check.stdout.splitlines()
    assert names.split() == sorted(pyproject()["project"]["scripts"])
    assert all((binaries / name).is_file() for name in names.split())
    assert interface_folder == "images/hie-lesion-segmentation"

    case = ("--input", str(REPO / "test" / "input"), "--device", "cpu")
    segmented = run(str(binaries / "hieseg-infer"), *case, "--output", "out", "--model", str(REPO / "model"))
    assert segmented.returncode == 0, segmented.stderr
    assert compare(elsewhere / "out", REPO / "test" / "expected_output") == []
    without_model = run(str(binaries / "hieseg-infer"), *case, "--output", "out2")
    assert without_model.returncode == 2
    assert without_model.stderr.strip().splitlines()[-1].endswith(
        "an installed hieseg carries no weights (the demo weights are the model/ folder of the repository); "
        "pass --model DIR or set HIESEG_MODEL")
    assert not (elsewhere / "out2").exists() or not any((elsewhere / "out2").rglob("*.mha"))


def test_the_container_interface_is_package_data_read_on_first_use_not_at_import() -> None:
    probe = ("import hieseg.io.layout as layout; before = layout.container_interface.cache_info().currsize; "
             "print(before, layout.CONTAINER_OUTPUT_DIR, layout.container_interface.cache_info().currsize)")
    result = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "images/hie-lesion-segmentation", "1"]
    packaged = REPO / "hieseg" / "resources" / "interfaces.json"
    assert packaged.is_symlink() and packaged.resolve() == (REPO / "resources" / "interfaces.json").resolve()
    assert "*.json" in pyproject()["tool"]["setuptools"]["package-data"]["hieseg.resources"]
