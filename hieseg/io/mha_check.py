"""Checks of a MetaImage (.mha/.mhd) file and its path before SimpleITK sees them.

SimpleITK trusts a MetaImage header: a compressed block shorter than ``CompressedDataSize`` or with
flipped bits is inflated as far as it goes and the rest of the volume left at 0, without an error
(a mask of 0.33 ml instead of 15.6, exit 0); an external data file that is a FIFO blocks the read
forever; a path that is not valid UTF-8 aborts the whole process inside the library. Here the header is
parsed up to its ``ElementDataFile`` line and the voxel data are measured against it (compressed data
are inflated by zlib, which verifies their Adler-32 checksum), so each of these is an
:class:`~hieseg.errors.ImageError` that names the file and the precise cause. A header this module
cannot make sense of is left to SimpleITK, whose failures :mod:`hieseg.io.images` explains.
"""

from __future__ import annotations

import math
import os
import re
import stat
import zlib
from pathlib import Path

import numpy as np

from hieseg.errors import HiesegError, ImageError

HEADER_LIMIT = 64 * 1024
"""Bytes searched for the header's end: ITK writes about 600; a file without ``ElementDataFile`` in them is
not a MetaImage, and is left to SimpleITK to refuse."""
INFLATE_CHUNK = 1024 * 1024
"""Bytes inflated at a time: a block that inflates far beyond its announced size is stopped early, and output
chunks of this size stay in the CPU cache (measured twice as fast as inflating a 5 MB volume at once)."""
SINGULAR_DETERMINANT = 1e-6
"""|det| of a direction matrix below which it is singular: a rotation's is 1, so this is no rounding."""
METAIO_SUFFIXES = (".mha", ".mhd")
ELEMENT_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}
"""Bytes per value of MetaIO's scalar element types (MetaIO's ``MET_ValueTypeSize``)."""
_HEADER_END = re.compile(rb"^ElementDataFile[ \t]*=[ \t]*([^\r\n]*)\r?\n", re.MULTILINE)


def check_path_encodable(path: Path, error: type[HiesegError] = ImageError) -> None:
    """Refuse a path SimpleITK cannot take: one whose bytes are not UTF-8 (a name with a Latin-1 byte, which
    Python keeps as a surrogate escape) makes the library abort the process, losing every other case of a batch.
    The path is printed with its bad bytes backslash-escaped (``case_\\xff``), as it cannot be printed as it is."""
    raw = os.fsencode(path)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{raw.decode('utf-8', 'backslashreplace')}: the path is not valid UTF-8 (byte "
                    f"{raw[exc.start]:#x}), which the image library cannot open; rename it") from exc


def check_metaimage(path: Path) -> None:
    """Refuse a MetaImage file whose voxel data do not match its header (see the module's docstring).

    Raises :class:`ImageError` naming ``path`` and the cause; returns quietly for a file of another format or a
    header this module does not model (ASCII data, a list of slice files, ``HeaderSize``), which SimpleITK reads.
    """
    path = Path(path)
    if path.suffix.lower() not in METAIO_SUFFIXES:
        return
    content = _read_bytes(path, path)
    end = _HEADER_END.search(content, 0, HEADER_LIMIT)
    if end is None:
        return
    header = _header_fields(content[: end.start()])
    _check_direction(path, header)
    data_file = end.group(1).strip().decode("utf-8", errors="replace")
    local = data_file == "LOCAL"
    if not local and (data_file.startswith("LIST") or "%" in data_file or " " in data_file):
        return
    external = Path(os.path.normpath(path.parent / data_file))
    if not local:
        _require_regular_data_file(path, external)
    expected = _voxel_bytes(header)
    if expected is None or header.get("BinaryData", "True") != "True" or "HeaderSize" in header:
        return
    if local:
        _check_data(path, header, memoryview(content)[end.end():], expected, "after the header")
    else:
        _check_data(path, header, memoryview(_read_bytes(external, path)), expected, f"in its data file {data_file}")


def _read_bytes(file: Path, named: Path) -> bytes:
    """The bytes of ``file``; a file that cannot be opened is an :class:`ImageError` with the system's reason."""
    try:
        return file.read_bytes()
    except PermissionError as exc:
        raise ImageError(f"{named}: cannot be read: permission denied"
                         + ("" if file == named else f" on its data file {file}")) from exc
    except OSError as exc:
        raise ImageError(f"{named}: cannot be read ({exc.strerror or exc})") from exc


def _header_fields(header: bytes) -> dict[str, str]:
    """The ``key = value`` lines of a MetaImage header."""
    fields = {}
    for line in header.decode("latin-1").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _voxel_bytes(header: dict[str, str]) -> int | None:
    """Bytes of voxel data the header announces: prod(DimSize) x element size x channels (None if unknown)."""
    element = ELEMENT_BYTES.get(header.get("ElementType", ""))
    try:
        sizes = [int(v) for v in header["DimSize"].split()]
        channels = int(header.get("ElementNumberOfChannels", "1"))
    except (KeyError, ValueError):
        return None
    if element is None or not sizes or min(sizes) < 1 or channels < 1:
        return None
    return math.prod(sizes) * element * channels


def _check_direction(path: Path, header: dict[str, str]) -> None:
    """Refuse a direction matrix (``TransformMatrix``) that is singular: no orientation maps voxels to space."""
    try:
        values = np.array([float(v) for v in header["TransformMatrix"].split()])
    except (KeyError, ValueError):
        return
    size = math.isqrt(values.size)
    if size * size != values.size or size == 0:
        return
    if not np.isfinite(values).all() or abs(np.linalg.det(values.reshape(size, size))) < SINGULAR_DETERMINANT:
        raise ImageError(f"{path}: the direction matrix (TransformMatrix {' '.join(header['TransformMatrix'].split())}) "
                         "is singular, so the voxels have no orientation in space; the header is damaged")


def _require_regular_data_file(path: Path, external: Path) -> None:
    """Refuse a missing data file, or one that is no regular file (reading a FIFO would block forever)."""
    try:
        mode = external.stat().st_mode
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: its voxel data file {external} (ElementDataFile) does not exist") from exc
    except OSError as exc:
        raise ImageError(f"{path}: its voxel data file {external} cannot be read ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(mode):
        raise ImageError(f"{path}: its voxel data file {external} is not a regular file ({file_kind(mode)})")


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words, from its ``st_mode``."""
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a plain file"


def _check_data(path: Path, header: dict[str, str], data: memoryview, expected: int, where: str) -> None:
    """Refuse voxel data of the wrong length, or compressed data that do not inflate to ``expected`` bytes."""
    compressed = header.get("CompressedData", "False") == "True"
    announced = header.get("CompressedDataSize", "") if compressed else str(expected)
    if announced.isdigit() and int(announced) != len(data):
        _wrong_length(path, int(announced), len(data), where, compressed)
    if not compressed:
        return
    inflated = _inflated_size(path, data, expected)
    if inflated != expected:
        raise ImageError(f"{path}: the compressed voxel data inflate to {'more than ' if inflated > expected else ''}"
                         f"{inflated} bytes, the header's DimSize and ElementType need {expected}")


def _wrong_length(path: Path, announced: int, held: int, where: str, compressed: bool) -> None:
    """Refuse voxel data of another length than the header announces: short is truncated (the reader would fill the
    rest with 0), long is a damaged header (the reader would take a prefix of the data)."""
    kind = " (compressed)" if compressed else ""
    if held < announced:
        raise ImageError(f"{path}: cannot be read as an image (truncated: the header announces {announced} bytes of "
                         f"voxel data{kind}, the file holds {held} of them {where})")
    raise ImageError(f"{path}: the header announces {announced} bytes of voxel data{kind}, the file holds {held} "
                     f"{where}: the header is damaged")


def _inflated_size(path: Path, data: bytes | memoryview, expected: int) -> int:
    """Bytes that ``data`` inflate to (stopping just past ``expected``); a stream zlib finds corrupt, whose
    checksum fails, that ends early or is followed by other bytes is an :class:`ImageError`."""
    inflater = zlib.decompressobj()
    total, pending = 0, data
    try:
        while pending and total <= expected:
            total += len(inflater.decompress(pending, INFLATE_CHUNK))
            pending = inflater.unconsumed_tail
        if total <= expected:
            total += len(inflater.flush())
    except zlib.error as exc:
        cause = "fail their checksum" if "incorrect data check" in str(exc) else f"do not inflate ({exc})"
        raise ImageError(f"{path}: compressed voxel data {cause}: corrupt") from exc
    if total <= expected and not inflater.eof:
        raise ImageError(f"{path}: compressed voxel data end before their stream does: truncated or corrupt")
    if inflater.unused_data:
        raise ImageError(f"{path}: {len(inflater.unused_data)} bytes follow the end of the compressed voxel data")
    return total
