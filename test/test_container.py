"""The challenge image, built and run as grand-challenge runs it (``do_test_run.sh``).

Needs a Docker engine and the base image on this machine (``BASE_IMAGE``, default the
Dockerfile's CUDA image; ``../shared/tools/docker-cpu-base.sh`` makes a CPU one); skipped,
with the reason, where either is missing, so the suite passes without Docker. The build's pip
steps use the network named by ``DOCKER_BUILD_NETWORK`` (e.g. ``host``) when set.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_packaging import development_only

REPO = Path(__file__).resolve().parent.parent
TAG = "hie-seg-test"
ENGINE_TIMEOUT_S = 20
BUILD_AND_RUN_TIMEOUT_S = 3600

pytestmark = pytest.mark.slow


def docker(*args: str, timeout: float = ENGINE_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def base_image() -> str:
    """``BASE_IMAGE`` from the environment, else the Dockerfile's default."""
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    return os.environ.get("BASE_IMAGE") or default.group(1)


def why_docker_cannot_run() -> str | None:
    """Why the image cannot be built and run here (no engine, no base image), or None."""
    if shutil.which("docker") is None:
        return "no docker command on PATH"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}")
    except subprocess.TimeoutExpired:
        return f"the Docker engine did not answer within {ENGINE_TIMEOUT_S} s"
    if info.returncode != 0:
        return f"no Docker engine answers ({(info.stderr.strip().splitlines() or ['docker info failed'])[-1]})"
    if docker("image", "inspect", base_image()).returncode != 0:
        return (f"base image {base_image()} is not on this machine: docker pull it, or set BASE_IMAGE "
                "(../shared/tools/docker-cpu-base.sh builds local/torch-cpu:2.13.0)")
    return None


def test_the_image_segments_the_sample_and_refuses_a_case_without_zadc() -> None:
    problem = why_docker_cannot_run()
    if problem:
        pytest.skip(problem)
    env = {**os.environ, "DOCKER_IMAGE_TAG": TAG, "BASE_IMAGE": base_image()}
    run = subprocess.run([str(REPO / "do_test_run.sh")], env=env, capture_output=True, text=True,
                         timeout=BUILD_AND_RUN_TIMEOUT_S)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-4000:]
    assert "container test passed" in run.stdout
    seconds = re.findall(r"docker run: ([\d.]+) s, exit status (\d+)", run.stdout)
    assert [status for _, status in seconds] == ["0", "2"]
    assert re.search(r"\.mha: \d\.\d\de[+-]\d\d of voxels differ", run.stdout)

    packages = ",".join(development_only())
    leftovers = docker("run", "--rm", "--network", "none", "--entrypoint", "python", TAG, "-c",
                       f"import importlib.util as u; print(*[m for m in '{packages}'.split(',') if u.find_spec(m)])")
    assert leftovers.returncode == 0 and leftovers.stdout.strip() == "", leftovers.stdout + leftovers.stderr
    size = int(docker("image", "inspect", "--format", "{{.Size}}", TAG).stdout)
    print(f"image {TAG} on {base_image()}: {size / 1e9:.2f} GB; docker run of the sample case "
          f"{seconds[0][0]} s, of the refused case {seconds[1][0]} s")
