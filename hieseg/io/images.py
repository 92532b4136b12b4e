"""Reading and writing .mha volumes with SimpleITK, checking their geometry, and safe writes.

Every reading failure is raised as :class:`ImageError` and every writing failure as
:class:`OutputError`, with the file's path and the problem in plain words and numbers, so a
command line can print it as is and exit with status 2.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hieseg.errors import ImageError, OutputError

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
    """Read a 3D scalar image, failing with a message that names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: {_not_a_file(path)}")
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


def _not_a_file(path: Path) -> str:
    """Why ``path`` is no readable file, in words: a folder, a broken or looping link, or nothing at all."""
    if path.is_dir():
        return "is a folder, not an image file"
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # Python raises RuntimeError for a loop before 3.13, OSError since
            if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
                return "a symbolic link that loops back on itself"
        return f"a symbolic link to {os.readlink(path)}, which does not exist"
    return "file not found"


def read_geometry(path: Path) -> Geometry:
    """The geometry an image file's header announces, without reading its voxels (:class:`ImageError` if none)."""
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


@contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """Collect what C++ libraries write to file descriptor 2 meanwhile (ITK's MetaIO diagnostics).

    The readers print several lines of their own on failure, which would break the one-line
    error of the command lines; the text is appended to the yielded list when the block ends,
    so the failure can be explained from it.
    """
    captured: list[str] = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no standard error to redirect (a daemon): nothing to collect
        yield captured
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


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


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temporary file in the destination folder, then rename it into place.

    A crash, a full disk, Ctrl-C or SIGTERM (see ``hieseg.cli.common``) therefore never leaves
    a half-written file where a reader (the challenge platform, a resumed run) would pick it
    up, and the temporary file is removed. The temporary file keeps the destination's suffix,
    which writers such as SimpleITK use to choose the format, and gets the mode an ordinary new
    file would get (0666 less the umask) instead of the private 0600 of temporary files.
    Failing to write raises :class:`OutputError`.
    """
    path = Path(path)
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
        temporary = Path(name)
        os.close(handle)
        write(temporary)
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
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
    """Write an image with :func:`write_atomic`; a writer failure is an :class:`OutputError`."""

    def write(temporary: Path) -> None:
        try:
            sitk.WriteImage(image, str(temporary), compress)
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()
            raise OutputError(f"{path}: cannot be written ({reason[-1] if reason else 'writer error'})") from exc

    write_atomic(path, write)


def mask_volume_ml(mask: sitk.Image) -> float:
    """Volume of a 0/1 mask's lesion voxels in ml."""
    return float(sitk.GetArrayViewFromImage(mask).sum()) * float(np.prod(mask.GetSpacing())) / MM3_PER_ML
