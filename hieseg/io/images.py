"""Reading and writing .mha volumes with SimpleITK, checking their geometry, and safe writes.

Every reading failure is raised as :class:`ImageError` and every writing failure as
:class:`OutputError`, with the file's path and the problem in plain words and numbers, so a
command line can print it as is and exit with status 2.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import BinaryIO

import numpy as np
import SimpleITK as sitk

from hieseg.errors import ImageError, OutputError
from hieseg.io.mha_check import check_metaimage, check_path_encodable, file_kind

LOG = logging.getLogger(__name__)
GEOMETRY_TOLERANCE = 1e-4
"""Relative tolerance when comparing spacing, origin and direction of partner images."""
PROBE_PREFIX = ".hieseg-probe-"
MHA_SUFFIX = ".mha"
"""The one image format the project reads and writes (MetaImage, as the challenge uses)."""
MM3_PER_ML = 1000.0
PLAUSIBLE_SPACING_MM = (0.1, 20.0)
"""Voxel sizes of a clinical MRI acquisition: finer or coarser on any axis means a wrong header (units, a typo)."""
_SHORT_READ = re.compile(r"ideal\s*=\s*(\d+)\s*:\s*actual\s*=\s*(\d+)")
"""MetaIO's report of a data block shorter than its header announces (written to stderr)."""


@dataclass(frozen=True)
class Geometry:
    """Size (x, y, z), spacing in mm, origin in mm and row-major 3x3 direction of an image."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        return cls(
            size=tuple(image.GetSize()),
            spacing=tuple(image.GetSpacing()),
            origin=tuple(image.GetOrigin()),
            direction=tuple(image.GetDirection()),
        )

    def differences(self, other: Geometry) -> list[str]:
        """Names and values of the fields that differ from ``other`` (empty when they agree)."""
        found = []
        if self.size != other.size:
            found.append(f"size {self.size} vs {other.size}")
        for name in ("spacing", "origin", "direction"):
            mine, theirs = np.asarray(getattr(self, name)), np.asarray(getattr(other, name))
            scale = max(1.0, float(np.abs(mine).max(initial=0.0)))
            if mine.shape != theirs.shape or not np.allclose(mine, theirs, atol=GEOMETRY_TOLERANCE * scale):
                found.append(f"{name} {plain_numbers(mine)} vs {plain_numbers(theirs)}")
        return found

    def affine(self) -> np.ndarray:
        """4x4 voxel-to-world (ITK/LPS) matrix for array axes ordered (x, y, z)."""
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(self.direction).reshape(3, 3) @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix


def plain_numbers(values: Sequence[float], decimals: int = 4) -> str:
    """Numbers as ``(1.1102, 1, 2.5)``: rounded, without numpy's type names."""
    return "(" + ", ".join(f"{round(float(v), decimals):g}" for v in values) + ")"


def read_image(path: Path, *, require_finite: bool = True) -> sitk.Image:
    """Read a 3D scalar image, failing with a message that names the file and the problem.

    Before SimpleITK sees it, the path must be UTF-8 (the library aborts the process otherwise), the file
    readable, and a MetaImage's voxel data must match its header (:mod:`hieseg.io.mha_check`; the library
    would fill a damaged block with zeros, silently)."""
    path = Path(path)
    check_path_encodable(path)
    if not path.is_file():
        raise ImageError(f"{path}: {_not_a_file(path)}")
    _require_readable(path)
    check_metaimage(path)
    with _stderr_captured() as reader_messages:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError:
            image = None
    if image is None:
        raise ImageError(f"{path}: cannot be read as an image ({_read_failure(path, ''.join(reader_messages))})")
    if "".join(reader_messages).strip():
        LOG.warning("%s: the image reader reports: %s", path, " ".join("".join(reader_messages).split()))
    if image.GetDimension() != 3:
        raise ImageError(f"{path}: expected a 3D image, got {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(
            f"{path}: expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    if require_finite:
        array = sitk.GetArrayViewFromImage(image)
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            bad = int(np.size(array) - np.isfinite(array).sum())
            raise ImageError(f"{path}: contains {bad} NaN or infinite voxel(s)")
    return image


def _require_readable(path: Path) -> None:
    """Refuse a file this process may not open, before SimpleITK reports it as "not an image"."""
    try:
        with open(path, "rb"):
            pass
    except PermissionError as exc:
        raise ImageError(f"{path}: cannot be read: permission denied") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def _not_a_file(path: Path) -> str:
    """Why ``path`` is no readable file, in words: a folder, a FIFO or other special file, a broken or looping
    link, or nothing at all."""
    if path.is_dir():
        return "is a folder, not an image file"
    if path.exists():
        return f"not a regular file ({file_kind(path.stat().st_mode)})"
    return broken_link(path) or "file not found"


def broken_link(path: Path) -> str | None:
    """Why ``path``, a symbolic link that leads nowhere, does (a loop, or a missing target), in words; None when
    ``path`` is no symbolic link."""
    if not path.is_symlink():
        return None
    try:
        path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # Python raises RuntimeError for a loop before 3.13, OSError since
        if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
            return "a symbolic link that loops back on itself"
    return f"a symbolic link to {os.readlink(path)}, which does not exist"


def read_geometry(path: Path) -> Geometry:
    """The geometry an image file's header announces, without reading its voxels (:class:`ImageError` if none)."""
    path = Path(path)
    check_path_encodable(path)
    if not path.is_file():  # a FIFO would block the reader
        raise ImageError(f"{path}: {_not_a_file(path)}")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with _stderr_captured():
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise ImageError(f"{path}: no readable image header") from exc
    return Geometry(tuple(reader.GetSize()), tuple(reader.GetSpacing()), tuple(reader.GetOrigin()),
                    tuple(reader.GetDirection()))


def _read_failure(path: Path, reader_messages: str) -> str:
    """Why SimpleITK could not read a file, in words; its own message blames a missing file for any failure."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty, 0 bytes"
    short = _SHORT_READ.search(reader_messages)
    if short:
        return (f"truncated: the header announces {int(short.group(1))} bytes of voxel data, "
                f"the file holds {int(short.group(2))} of them")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with _stderr_captured():
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return f"no readable image header in its {size} bytes; not an image or damaged"
    return f"the header reads but the voxel data do not; the file of {size} bytes is truncated or corrupt"


CAPTURE_NAME = "hieseg-stderr"
"""Name of the memory file that collects C libraries' messages (shown in ``/proc/<pid>/fd``)."""


@contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """Collect what C++ libraries write to file descriptor 2 meanwhile (ITK's MetaIO diagnostics).

    The readers print several lines of their own on failure, which would break the one-line
    error of the command lines; the text is appended to the yielded list when the block ends,
    so the failure can be explained from it. Where no file can be made to collect it in (no
    memory file and no usable temporary folder) or there is no standard error (a daemon, ``2>&-``),
    the block runs as it is and nothing is collected.
    """
    captured: list[str] = []
    _flush_quietly(sys.stderr)
    sink = _capture_sink()
    if sink is None:
        yield captured
        return
    with sink:
        try:
            saved = os.dup(2)
        except OSError:  # no standard error to redirect: nothing to collect
            yield captured
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


def _flush_quietly(stream: object) -> None:
    """Flush a standard stream before its descriptor is borrowed; one that is missing, closed or whose reader went
    away has nothing to flush that anyone could read."""
    try:
        stream.flush()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        pass


def _capture_sink() -> BinaryIO | None:
    """A file to collect C libraries' messages in: an anonymous memory file (Linux), else a temporary file; ``None``
    when neither can be made (a read-only system without a usable temporary folder)."""
    if hasattr(os, "memfd_create"):
        try:
            return open(os.memfd_create(CAPTURE_NAME, os.MFD_CLOEXEC), "w+b")
        except OSError:
            pass
    try:
        return tempfile.TemporaryFile(mode="w+b")
    except OSError:
        return None


def require_binary(image: sitk.Image, path: Path, what: str = "mask") -> None:
    """Raise :class:`ImageError` unless every voxel is 0 or 1."""
    values = np.unique(sitk.GetArrayViewFromImage(image))
    if not np.isin(values, (0, 1)).all():
        raise ImageError(f"{path}: {what} must be binary 0/1, found values {values[:8].tolist()}")


def check_plausible_spacing(image: sitk.Image, path: Path) -> None:
    """Refuse an image whose voxel size is outside ``PLAUSIBLE_SPACING_MM`` on some axis, naming the file.

    Such a header (mm read as m, 100 mm slices) would make the resampling to the network grid
    allocate terabytes, or leave a brain of a few voxels: an error, not a prediction.
    """
    low, high = PLAUSIBLE_SPACING_MM
    spacing = image.GetSpacing()
    if not all(low <= step <= high for step in spacing):
        raise ImageError(f"{path}: voxel size {plain_numbers(spacing)} mm is outside the {low:g}-{high:g} mm of an "
                         "MRI acquisition on some axis; check the spacing in the image header")


def check_same_geometry(reference: sitk.Image, reference_path: Path, other: sitk.Image, other_path: Path) -> None:
    """Raise :class:`ImageError` when two images of one case are not on the same grid."""
    differences = Geometry.of(reference).differences(Geometry.of(other))
    if differences:
        raise ImageError(
            f"{other_path}: geometry disagrees with {reference_path}: " + "; ".join(differences)
        )


def to_xyz_array(image: sitk.Image, dtype: type = np.float32) -> np.ndarray:
    """Voxel array with axes ordered (x, y, z), the order MONAI transforms expect."""
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(dtype, copy=False))


def from_xyz_array(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Image from an (x, y, z) array, carrying the reference image's geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    image.CopyInformation(reference)
    return image


def require_writable(path: Path, *, folder: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: a file ``path``, or a ``folder``.

    Nothing is created: the deepest existing parent must be a folder in which a file can be
    made (tried with a probe file, removed at once, so permissions, read-only mounts and root
    are all judged as the real write will be), and a file's path must not be a folder.
    """
    path = Path(path)
    if not folder and path.is_dir():
        raise OutputError(f"{path}: is a folder, so the file cannot be written there")
    if folder and path.exists() and not path.is_dir():
        raise OutputError(f"{path}: is a file, not a folder")
    existing = path if folder else path.parent
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{existing}: is not a folder, so {path} cannot be written")
    try:
        handle, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=existing)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write in {existing} ({exc.strerror})") from exc
    os.close(handle)
    os.unlink(probe)


TEMPORARY_PREFIX = ".tmp-"
"""Start of a temporary file's name: ``.tmp-<pid>-<random>-<destination's name>`` (see :func:`write_atomic`)."""
NAME_MAX_BYTES = 255
"""The longest file name the usual file systems take (ext4, XFS, tmpfs, NFS)."""
TEMPORARY_NAME_RESERVE = 32
"""Bytes of a temporary file's name besides the destination's: the prefix, a pid, a random part, two dashes."""
DIGEST_CHARACTERS = 16
"""Hex digits of the hash that stands for a destination name too long to repeat in its temporary file's name."""
FULL_DISK_HINT = "is the disk full?"


def write_atomic(path: Path, write: Callable[[Path], None], *, verify: Callable[[Path], str] | None = None) -> None:
    """Let ``write`` fill a temporary file in the destination folder, check it, then rename it into place.

    A crash, a full disk, Ctrl-C or SIGTERM (see ``hieseg.cli.common``) therefore never leaves
    a half-written file where a reader (the challenge platform, a resumed run) would pick it
    up, and the temporary file is removed. The temporary file keeps the destination's suffix,
    which writers such as SimpleITK use to choose the format, and gets the mode an ordinary new
    file would get (0666 less the umask) instead of the private 0600 of temporary files.

    Before the rename the file is pushed to the disk (``fsync``, which reports a write the disk
    could not take) and must not be empty; ``verify``, if given, then reads it back and says what
    is wrong with it ('' when nothing). Writers such as SimpleITK do not report a full disk: they
    leave an empty or short file, which must not take the destination's name. The temporary
    file's name says whose it is and for which file (``.tmp-<pid>-<random>-<name>``), and the
    ones a writer that no longer runs left for this destination (killed between its write and
    its rename) are removed first. Failing to write raises :class:`OutputError` naming ``path``;
    what stood at ``path`` before (nothing, or an older file) is then left as it was.
    """
    path = Path(path)
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        temporary = _new_temporary(path)
        write(temporary)
        problem = _flushed_problem(temporary) or (verify(temporary) if verify is not None else "")
        if problem:
            raise OutputError(f"{path}: cannot be written ({problem})")
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
        _sync_folder(path.parent)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{path}: cannot be written ({exc.strerror or exc})") from exc
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)


def current_umask() -> int:
    """The process's file-mode creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_image_atomic(image: sitk.Image, path: Path, *, compress: bool = True) -> None:
    """Write an image with :func:`write_atomic`, read back and compared with ``image`` before it takes ``path``'s
    name (SimpleITK reports no full disk); a writer failure or a difference is an :class:`OutputError`."""

    require_image_path(path)

    def write(temporary: Path) -> None:
        with _stderr_captured() as writer_messages:  # MetaIO's own lines on a failure; the error says it in one
            try:
                sitk.WriteImage(image, str(temporary), compress)
            except RuntimeError as exc:
                reason = str(exc).strip().splitlines()
                raise OutputError(f"{path}: cannot be written ({reason[-1] if reason else 'writer error'})") from exc
        if "".join(writer_messages).strip():
            LOG.debug("%s: the image writer reports: %s", path, " ".join("".join(writer_messages).split()))

    write_atomic(path, write, verify=lambda temporary: _image_difference(image, temporary))


def require_image_path(path: Path) -> None:
    """Refuse an image's output path that is not UTF-8, before SimpleITK aborts the process on it
    (:func:`~hieseg.io.mha_check.check_path_encodable`, as an :class:`OutputError`)."""
    check_path_encodable(path, OutputError)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` with :func:`write_atomic`, read back and compared before it takes ``path``'s name."""
    write_atomic(path, lambda temporary: temporary.write_bytes(data),
                 verify=lambda temporary: _bytes_difference(data, temporary))


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files for ``path`` whose writer no longer runs, and return them.

    A writer killed between its write and its rename (SIGKILL, the out-of-memory killer) leaves
    its temporary file; one whose process still runs is kept, so concurrent writers of one file
    still work. Only this host's processes can be checked: a file of a writer on another host
    sharing the folder is taken for stale when its pid does not run here.
    """
    pattern = _temporary_pattern(path)
    try:
        with os.scandir(path.parent) as entries:
            found = [(Path(entry.path), int(match.group(1))) for entry in entries
                     if (match := pattern.fullmatch(entry.name)) and entry.is_file(follow_symlinks=False)]
    except OSError:  # a folder one may write in but not list: no leftover can be seen, the write may still work
        return []
    removed = []
    for temporary, pid in found:
        if _process_runs(pid):
            continue
        try:
            temporary.unlink(missing_ok=True)
        except OSError as exc:  # another user's, in a shared folder: theirs to remove; this write goes on
            LOG.debug("%s: cannot remove %s (%s)", path, temporary.name, exc.strerror)
            continue
        LOG.info("%s: removed %s, left by a writer that no longer runs", path, temporary.name)
        removed.append(temporary)
    return removed


def _temporary_tag(path: Path) -> str:
    """What a temporary file's name ends with to name its destination: the destination's name, or, where that
    would make the name too long, a hash of it and its suffix."""
    if len(os.fsencode(path.name)) + TEMPORARY_NAME_RESERVE <= NAME_MAX_BYTES:
        return path.name
    return hashlib.sha256(os.fsencode(path.name)).hexdigest()[:DIGEST_CHARACTERS] + path.suffix


def _temporary_pattern(path: Path) -> re.Pattern[str]:
    """The names of ``path``'s temporary files, the writer's pid as the first group (see :func:`_new_temporary`)."""
    return re.compile(re.escape(TEMPORARY_PREFIX) + r"(\d+)-[a-z0-9_]+-" + re.escape(_temporary_tag(path)))


def _new_temporary(path: Path) -> Path:
    """A new, empty temporary file beside ``path``: ``.tmp-<pid>-<random>-<name>``, ending in ``path``'s suffix."""
    handle, name = tempfile.mkstemp(prefix=f"{TEMPORARY_PREFIX}{os.getpid()}-", suffix=f"-{_temporary_tag(path)}",
                                    dir=path.parent)
    os.close(handle)
    return Path(name)


def _process_runs(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (one of another user counts; a pid no system has does not)."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (OSError, OverflowError):  # ProcessLookupError, or a pid out of range
        return False
    return True


def _flushed_problem(temporary: Path) -> str:
    """Push a written file to the disk (``fsync`` raises the error of a write the disk could not take) and say
    what is wrong with it: '' or, for an empty file, that it is empty."""
    handle = os.open(temporary, os.O_RDONLY)
    try:
        os.fsync(handle)
        size = os.fstat(handle).st_size
    finally:
        os.close(handle)
    return "" if size else f"the written file is empty, 0 bytes; {FULL_DISK_HINT}"


def _sync_folder(folder: Path) -> None:
    """Push a rename in ``folder`` to the disk, where the file system can (some refuse ``fsync`` on a folder,
    which then leaves the rename to the system's own write-back)."""
    try:
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _image_difference(image: sitk.Image, temporary: Path) -> str:
    """How the image file ``temporary`` differs from ``image``, which was written to it ('' when it does not):
    unreadable, or another pixel type, size, spacing, origin, direction or voxel values."""
    with _stderr_captured():
        try:
            back = sitk.ReadImage(str(temporary))
        except RuntimeError:
            return (f"the written file of {temporary.stat().st_size} bytes cannot be read back as an image; "
                    f"{FULL_DISK_HINT}")
    if back.GetPixelID() != image.GetPixelID():
        return (f"the written file reads back as {back.GetPixelIDTypeAsString()}, not the "
                f"{image.GetPixelIDTypeAsString()} written")
    made, found = Geometry.of(image), Geometry.of(back)
    differences = [f"{field.name} {getattr(found, field.name)} instead of {getattr(made, field.name)}"
                   for field in fields(Geometry) if getattr(found, field.name) != getattr(made, field.name)]
    if differences:
        return "the written file reads back with another geometry: " + "; ".join(differences)
    written, read = sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(back)
    if not np.array_equal(written, read, equal_nan=np.issubdtype(written.dtype, np.floating)):
        return f"the written file reads back with {int(np.count_nonzero(written != read))} other voxel value(s)"
    return ""


def _bytes_difference(data: bytes, temporary: Path) -> str:
    """How the file ``temporary`` differs from ``data``, which was written to it ('' when it does not)."""
    found = temporary.read_bytes()
    if found == data:
        return ""
    if len(found) != len(data):
        return f"the written file holds {len(found)} bytes, not the {len(data)} written; {FULL_DISK_HINT}"
    return f"the written file differs from the {len(data)} bytes written"


def mask_volume_ml(mask: sitk.Image) -> float:
    """Volume of a 0/1 mask's lesion voxels in ml."""
    return float(sitk.GetArrayViewFromImage(mask).sum()) * float(np.prod(mask.GetSpacing())) / MM3_PER_ML
