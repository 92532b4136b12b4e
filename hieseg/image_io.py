"""Reading and writing .mha volumes with SimpleITK, and checking their geometry.

Every failure is raised as :class:`ImageError` with the file's path in the message, so a
command line can print it as is and exit non-zero.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

GEOMETRY_TOLERANCE = 1e-4
"""Relative tolerance when comparing spacing, origin and direction of partner images."""


class ImageError(ValueError):
    """An image that cannot be used: unreadable, wrong dimension, non-finite or misaligned."""


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
                found.append(f"{name} {tuple(np.round(mine, 4))} vs {tuple(np.round(theirs, 4))}")
        return found

    def affine(self) -> np.ndarray:
        """4x4 voxel-to-world (ITK/LPS) matrix for array axes ordered (x, y, z)."""
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(self.direction).reshape(3, 3) @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix


def read_image(path: Path, *, require_finite: bool = True) -> sitk.Image:
    """Read a 3D scalar image, failing with a message that names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reader error"
        raise ImageError(f"{path}: cannot be read as an image ({reason})") from exc
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


def require_binary(image: sitk.Image, path: Path, what: str = "mask") -> None:
    """Raise :class:`ImageError` unless every voxel is 0 or 1."""
    values = np.unique(sitk.GetArrayViewFromImage(image))
    if not np.isin(values, (0, 1)).all():
        raise ImageError(f"{path}: {what} must be binary 0/1, found values {values[:8].tolist()}")


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


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temporary file in the destination folder, then rename it into place.

    A crash or a full disk therefore never leaves a half-written file where a reader (the
    challenge platform, a resumed run) would pick it up. The temporary file keeps the
    destination's suffix, which writers such as SimpleITK use to choose the format.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_image_atomic(image: sitk.Image, path: Path, *, compress: bool = True) -> None:
    """Write an image with :func:`write_atomic`."""
    write_atomic(path, lambda temporary: sitk.WriteImage(image, str(temporary), compress))
