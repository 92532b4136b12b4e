"""Exit 0 means the mask on disk is the mask the model made (issue 30): outputs verified, never half-written.

A written file is flushed, checked and read back before it takes its name; an empty output path
is refused; a killed writer's temporary file is cleaned up by the next writer; and closed or
broken standard streams, no usable temporary folder or a name with non-UTF-8 bytes do not change
what a run writes or how it ends. The ways a command is started run in subprocesses, the rest
in-process on the small synthetic case of ``conftest.container``.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import UUID, files_under
from test_faults import mask_file, refused

from hieseg.cli import infer as inference_cli
from hieseg.cli import predict as predict_cli
from hieseg.errors import OutputError
from hieseg.inference import batch
from hieseg.io import images
from hieseg.io.images import (
    read_image,
    write_atomic,
    write_bytes_atomic,
    write_image_atomic,
)
from hieseg.io.tables import read_csv, write_csv_atomic

REPO = Path(__file__).resolve().parent.parent
INFERENCE = REPO / "inference.py"
TMPFS_SIZE = "200k"
SUBPROCESS_TIMEOUT_S = 600
REAL_WRITE = sitk.WriteImage
KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from hieseg.io.images import write_atomic

def write_then_killed(temporary: Path) -> None:
    temporary.write_text("half")
    os.kill(os.getpid(), signal.SIGKILL)

write_atomic(Path(sys.argv[1]), write_then_killed)
"""
"""A writer killed with SIGKILL between its write and its rename."""


def one_error_line(status: int, err: str, *fragments: str) -> None:
    """A refusal as :func:`test_faults.refused` checks it, from stderr already read."""
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err


def temporaries(folder: Path) -> list[Path]:
    return [path for path in files_under(folder) if path.name.startswith(images.TEMPORARY_PREFIX)]


def small_image(value: int = 1) -> sitk.Image:
    image = sitk.GetImageFromArray(np.full((4, 5, 6), value, dtype=np.uint8))
    image.SetSpacing((1.5, 1.5, 3.0))
    return image


# ---- a written file is verified before it takes its name ------------------------------------------

def _empty(image: sitk.Image, path: str, *args: object) -> None:
    Path(path).write_bytes(b"")


def _truncated(image: sitk.Image, path: str, *args: object) -> None:
    REAL_WRITE(image, path, False)
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


def _other_voxels(image: sitk.Image, path: str, *args: object) -> None:
    other = sitk.GetImageFromArray(1 - sitk.GetArrayFromImage(image))
    other.CopyInformation(image)
    REAL_WRITE(other, path, True)


def _other_spacing(image: sitk.Image, path: str, *args: object) -> None:
    other = sitk.Image(image)
    other.SetSpacing(tuple(step * 2 for step in image.GetSpacing()))
    REAL_WRITE(other, path, True)


def _other_pixel_type(image: sitk.Image, path: str, *args: object) -> None:
    REAL_WRITE(sitk.Cast(image, sitk.sitkInt16), path, True)


SILENT_FAULTS = {
    "empty": (_empty, "the written file is empty, 0 bytes; is the disk full?"),
    "truncated": (_truncated, "cannot be read back as an image; is the disk full?"),
    "voxels": (_other_voxels, "the written file reads back with"),
    "spacing": (_other_spacing, "reads back with another geometry: spacing ("),
    "pixel type": (_other_pixel_type, "reads back as 16-bit signed integer, not the 8-bit unsigned integer written"),
}
"""Ways an image writer can leave another file than the image while reporting success, and what each gets."""


@pytest.mark.parametrize("fault", SILENT_FAULTS)
def test_a_mask_that_does_not_read_back_as_written_is_refused(container, capsys, monkeypatch, fault: str) -> None:
    writer, message = SILENT_FAULTS[fault]
    monkeypatch.setattr(sitk, "WriteImage", writer)
    status = inference_cli.main([])
    captured = capsys.readouterr()
    assert "wrote" not in captured.out
    one_error_line(status, captured.err, f"error: {mask_file(container['output'])}: cannot be written (", message)
    assert files_under(container["output"]) == []


def test_a_failed_flush_to_the_disk_is_refused(container, capsys, monkeypatch) -> None:
    def no_space(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    refused(inference_cli.main([]), capsys, f"{mask_file(container['output'])}: cannot be written (No space left")
    assert files_under(container["output"]) == []


def test_every_writer_gets_the_non_empty_check_and_an_older_file_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    target.write_text("{}")
    with pytest.raises(OutputError, match=re.escape(f"{target}: cannot be written (the written file is empty")):
        write_atomic(target, lambda temporary: temporary.write_text(""))
    assert target.read_text() == "{}" and temporaries(tmp_path) == []


def test_written_bytes_are_read_back(tmp_path: Path, monkeypatch) -> None:
    def short_write(self: Path, data: bytes) -> int:
        with self.open("wb") as handle:
            return handle.write(data[: len(data) // 2])

    target = tmp_path / batch.TABLE_NAME
    monkeypatch.setattr(Path, "write_bytes", short_write)
    with pytest.raises(OutputError, match=re.escape(f"{target}: cannot be written (the written file holds 4 bytes, "
                                                    "not the 9 written; is the disk full?)")):
        write_bytes_atomic(target, b"case_id\r\n")
    assert files_under(tmp_path) == []


def test_predict_fails_the_cases_whose_mask_does_not_read_back(small_release, untrained_model_dir, tmp_path,
                                                               capsys, monkeypatch) -> None:
    monkeypatch.setattr(sitk, "WriteImage", _empty)
    out = tmp_path / "masks"
    status = predict_cli.main(["--input", str(small_release), "--output", str(out), "--model",
                               str(untrained_model_dir), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2, err
    rows = read_csv(out / batch.TABLE_NAME)
    assert rows and all(row["status"] == batch.FAILED for row in rows)
    assert all("cannot be written (the written file is empty, 0 bytes" in row["error"] for row in rows)
    assert files_under(out) == [out / batch.TABLE_NAME]


@contextmanager
def full_tmpfs(folder: Path) -> Iterator[Path]:
    """A 200 kB tmpfs mounted on ``folder``, filled to the last byte; unmounted when the block ends."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        with (folder / "filler").open("wb", buffering=0) as filler:
            with pytest.raises(OSError) as full:
                while True:
                    filler.write(bytes(4096))
            assert full.value.errno == errno.ENOSPC
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_refuses_the_mask_and_leaves_nothing(container, capsys, monkeypatch, tmp_path: Path) -> None:
    with full_tmpfs(tmp_path / "full") as full:
        monkeypatch.setenv("HIESEG_OUTPUT", str(full))
        refused(inference_cli.main([]), capsys, f"error: {mask_file(full)}: cannot be written (")
        assert files_under(full) == [full / "filler"]


# ---- an empty output path ---------------------------------------------------------------------------

@pytest.mark.parametrize("variable, flag", [("HIESEG_OUTPUT", "--output"), ("HIESEG_INPUT", "--input"),
                                            ("HIESEG_MODEL", "--model")])
@pytest.mark.parametrize("given", ["environment", "flag"])
def test_an_empty_path_is_refused(container, capsys, monkeypatch, tmp_path: Path, variable: str, flag: str,
                                  given: str) -> None:
    working = tmp_path / "working"
    working.mkdir()
    monkeypatch.chdir(working)
    if given == "environment":
        monkeypatch.setenv(variable, "")
    with pytest.raises(SystemExit) as ended:
        inference_cli.main([flag, ""] if given == "flag" else [])
    unset = f" ({variable} is set but empty)" if given == "environment" else ""
    refused(ended.value.code, capsys, f"error: argument {flag}: an empty path, which would mean the current "
                                      f"folder{unset}; give a path (see ")
    assert files_under(working) == [] and files_under(container["output"]) == []


@pytest.mark.parametrize("flag", ["--output", "--input"])
def test_predict_refuses_an_empty_path(tmp_path: Path, capsys, monkeypatch, flag: str) -> None:
    monkeypatch.chdir(tmp_path)
    paths = {"--input": str(tmp_path / "cases"), "--output": str(tmp_path / "masks"), flag: ""}
    with pytest.raises(SystemExit) as ended:
        predict_cli.main([part for pair in paths.items() for part in pair])
    refused(ended.value.code, capsys, f"argument {flag}: an empty path, which would mean the current folder")
    assert files_under(tmp_path) == []


# ---- a killed writer's temporary file ---------------------------------------------------------------

def test_the_temporary_file_names_its_writer_and_destination(container, monkeypatch) -> None:
    seen = []

    def recording(image: sitk.Image, path: str, *args: object) -> None:
        seen.append(Path(path).name)
        REAL_WRITE(image, path, *args)

    monkeypatch.setattr(sitk, "WriteImage", recording)
    assert inference_cli.main([]) == 0
    assert re.fullmatch(rf"\.tmp-{os.getpid()}-[a-z0-9_]+-{re.escape(UUID)}\.mha", seen[0]), seen


def test_a_killed_writers_temporary_file_is_removed_and_a_running_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "case.mha"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], cwd=REPO, timeout=SUBPROCESS_TIMEOUT_S)
    assert killed.returncode == -9
    (left,) = temporaries(tmp_path)
    assert left.name.endswith("-case.mha")
    with subprocess.Popen(["sleep", "60"]) as running:
        try:
            live = tmp_path / f".tmp-{running.pid}-abcdefgh-case.mha"
            other_destination = tmp_path / f".tmp-{killed_pid(left)}-abcdefgh-other.mha"
            for path in (live, other_destination):
                path.write_text("in progress")
            write_image_atomic(small_image(), target)
        finally:
            running.kill()
    assert not left.exists()
    assert live.exists() and other_destination.exists()
    assert read_image(target).GetSize() == (6, 5, 4)


def killed_pid(temporary: Path) -> int:
    return int(temporary.name.split("-")[1])


def test_a_destination_name_too_long_to_repeat_gets_a_hashed_temporary_name(tmp_path: Path) -> None:
    target = tmp_path / ("c" * 240 + ".csv")
    write_bytes_atomic(target, b"case_id\r\n")
    assert target.read_bytes() == b"case_id\r\n" and temporaries(tmp_path) == []


# ---- how the command was started --------------------------------------------------------------------

def _stderr_closed(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", 'exec "$0" "$@" 2>&-', *command], stdout=subprocess.PIPE, text=True,
                          cwd=REPO, timeout=SUBPROCESS_TIMEOUT_S)


def _stdout_a_closed_pipe(command: list[str]) -> subprocess.CompletedProcess:
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run(command, stdout=writer, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              timeout=SUBPROCESS_TIMEOUT_S)
    finally:
        os.close(writer)


STARTS: dict[str, Callable[[list[str]], subprocess.CompletedProcess]] = {
    "stderr closed (2>&-)": _stderr_closed,
    "stdout a pipe whose reader is gone": _stdout_a_closed_pipe,
}


@pytest.mark.parametrize("start", STARTS)
def test_closed_or_broken_standard_streams_do_not_change_the_outcome(container, start: str) -> None:
    done = STARTS[start]([sys.executable, str(INFERENCE)])
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "Traceback" not in (done.stderr or "") and "BrokenPipe" not in (done.stderr or "")
    if done.stdout is not None:
        assert done.stdout.startswith(f"wrote {mask_file(container['output'])} (lesion volume ")
    mask = read_image(mask_file(container["output"]))
    assert mask.GetSize() == read_image(container["input"] / "images" / "skull-stripped-adc-brain-mri" /
                                        f"{UUID}.mha").GetSize()


@pytest.mark.parametrize("memory_file", [True, False], ids=["memory file", "no memory file"])
def test_no_usable_temporary_folder_still_reads_and_writes(container, monkeypatch, capsys, tmp_path,
                                                           memory_file: bool) -> None:
    # tempfile tries $TMPDIR, then /tmp, /var/tmp, /usr/tmp and the working folder: all unusable on a read-only system
    monkeypatch.setattr(tempfile, "_candidate_tempdir_list", lambda: [str(tmp_path / "missing")])
    monkeypatch.setattr(tempfile, "tempdir", None)
    if not memory_file:
        monkeypatch.delattr(os, "memfd_create", raising=False)
    with pytest.raises(FileNotFoundError, match="No usable temporary directory"):
        tempfile.TemporaryFile()
    assert inference_cli.main([]) == 0
    assert capsys.readouterr().out.startswith("wrote ")
    assert read_image(mask_file(container["output"])).GetPixelID() == sitk.sitkUInt8


# ---- names with non-UTF-8 bytes ---------------------------------------------------------------------

def test_a_name_with_non_utf8_bytes_is_written_escaped(tmp_path: Path) -> None:
    name = os.fsdecode(b"case\xff")
    results = [batch.CaseResult(name, batch.FAILED, error=f"case {name}: no such file"),
               batch.CaseResult("case_b", batch.WRITTEN, seconds=1.0, lesion_ml=2.0, mask=str(tmp_path / "b.mha"))]
    batch.write_table(results, tmp_path / batch.TABLE_NAME)
    text = (tmp_path / batch.TABLE_NAME).read_bytes().decode("utf-8")
    assert "case\\xff,failed" in text and "case case\\xff: no such file" in text
    assert [row["case_id"] for row in read_csv(tmp_path / batch.TABLE_NAME)] == ["case_b", "case\\xff"]


def test_any_lone_surrogate_is_escaped(tmp_path: Path) -> None:
    write_csv_atomic(tmp_path / "t.csv", ["name"], [{"name": "a\ud800b"}, {"name": tmp_path / "é"}])
    assert [row["name"] for row in read_csv(tmp_path / "t.csv")] == ["a\\ud800b", str(tmp_path / "é")]


def test_an_output_path_with_non_utf8_bytes_is_refused_before_the_image_library_sees_it(container, capsys,
                                                                                          monkeypatch) -> None:
    output = container["output"] / os.fsdecode(b"out\xff")
    monkeypatch.setenv("HIESEG_OUTPUT", str(output))
    refused(inference_cli.main([]), capsys, "out\\xff", "the path is not valid UTF-8 (byte 0xff)")
    assert files_under(container["output"]) == []
