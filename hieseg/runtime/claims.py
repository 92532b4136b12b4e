"""Atomic claims on pieces of work in a folder that several processes, even on several machines, share.

A process that wants to do a piece of work (one run of a study, writing its report) first
claims it; exactly one of any number of processes that try at the same moment gets the claim,
the others learn who holds it and leave the work alone.

A claim is a small JSON file ``<folder>/<key>.<n>.json`` naming its holder: host, pid, the
process's start time (to tell a reused pid) and the time of the claim. It is written to a
temporary file and hard-linked into place: ``link`` fails when the name exists, atomically,
also on NFS (the classic NFS-safe lock file), and the claim is complete from the moment its
name appears. The numbers only grow: the claim that counts is the highest, and taking over a
claim means creating the next number, which again only one process can do. Older numbers
are removed once a newer one is taken.

A claim ends in one of three ways:

* its holder releases it (done, failed, Ctrl-C or SIGTERM, as a scheduler sends at a time
  limit): the file is rewritten as released, and anyone may take the next number;
* its holder dies without releasing it (SIGKILL, the out-of-memory killer, a crash): on the
  same host the claim is then stale, because its pid no longer runs (or runs another
  process, started at another time), and the next claimant takes it over;
* its holder was on another host: no process here can tell whether it still runs, so the
  claim stands until a process is started with ``takeover`` for it (the study's
  ``--reclaim``), which the user gives when they know that process is gone.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hieseg.errors import OutputError
from hieseg.io.images import current_umask, write_atomic

CLAIM_SUFFIX = ".json"
PROC = Path("/proc")


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a claim."""

    host: str
    pid: int
    process_start: int | None
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat``), where the system has it."""
    claimed_at: float
    """Unix time of the claim."""
    released: bool = False

    @classmethod
    def this_process(cls) -> Holder:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_start(pid), time.time())

    @property
    def is_local(self) -> bool:
        """Held by a process of this host, whose life this process can check."""
        return self.host == socket.gethostname()

    def is_stale(self) -> bool:
        """Released, or held by a process of this host that no longer runs; a claim from another host is not."""
        if self.released:
            return True
        return self.is_local and not is_running(self.pid, self.process_start)

    def __str__(self) -> str:
        since = datetime.datetime.fromtimestamp(self.claimed_at).isoformat(sep=" ", timespec="seconds")
        return f"{self.host} pid {self.pid} since {since}"


@dataclass(frozen=True)
class Claim:
    """A claim this process holds; releasing it (or leaving its ``with`` block) frees the work for others."""

    path: Path
    number: int
    holder: Holder

    def release(self) -> None:
        """Mark the claim released, unless a newer claim has replaced it (taken over with ``--reclaim``)."""
        if self.path.exists():
            record = json.dumps(asdict(replace(self.holder, released=True)))
            write_atomic(self.path, lambda temporary: temporary.write_text(record))

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def acquire(folder: Path, key: str, takeover: int | None = None) -> Claim | Holder:
    """Claim ``key``: the new :class:`Claim`, or the :class:`Holder` of the claim that stands.

    ``takeover`` is the number of a claim this process may take over although it cannot tell
    that its holder is gone (one seen by :func:`latest_numbers` when the user asked for it).
    """
    folder = Path(folder)
    while True:
        latest = latest_claim(folder, key)
        if latest is None:
            number = 0
        else:
            current, holder = latest
            if not (holder.is_stale() or current == takeover):
                return holder
            number = current + 1
        claim = _create(folder, key, number)
        if claim is not None:
            _remove_older(folder, key, number)
            return claim


def latest_claim(folder: Path, key: str) -> tuple[int, Holder] | None:
    """The highest-numbered claim of ``key`` and its holder, or ``None`` when it was never claimed."""
    while True:
        numbers = _numbers(folder, key)
        if not numbers:
            return None
        path = _path(folder, key, numbers[-1])
        try:
            return numbers[-1], Holder(**json.loads(path.read_text()))
        except FileNotFoundError:
            continue  # taken over (and removed) while it was being read: look again
        except (ValueError, TypeError) as exc:
            raise OutputError(f"{path}: not a claim ({exc}); remove it if no process works on this any more") from exc


def latest_numbers(folder: Path, keys: Iterable[str]) -> dict[str, int]:
    """The number of each key's standing claim (keys never claimed are left out), e.g. to take them over."""
    found = {key: latest_claim(folder, key) for key in keys}
    return {key: latest[0] for key, latest in found.items() if latest is not None}


def is_running(pid: int, started: int | None) -> bool:
    """Whether process ``pid`` of this host runs and, where ``started`` is known, is the one started then."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    if _state(pid) == "Z":
        return False  # a zombie has ended; its parent just has not collected it
    current = process_start(pid)
    return started is None or current is None or current == started


def process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of ``/proc/<pid>/stat``); ``None`` without /proc."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (which may hold spaces), from field 3 on."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def create_new(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it exists, atomically: exactly one of several concurrent callers
    creates it (and gets ``True``), and readers never see it incomplete."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
        try:
            with os.fdopen(handle, "w") as stream:
                stream.write(text)
            os.chmod(temporary, 0o666 & ~current_umask())
            os.link(temporary, path)
        finally:
            os.unlink(temporary)
    except FileExistsError:
        return False
    except OSError as exc:
        raise OutputError(f"{path}: cannot be created ({exc.strerror or exc})") from exc
    return True


def _create(folder: Path, key: str, number: int) -> Claim | None:
    """Create claim ``number`` of ``key``; ``None`` when another process was first."""
    holder = Holder.this_process()
    path = _path(folder, key, number)
    return Claim(path, number, holder) if create_new(path, json.dumps(asdict(holder))) else None


def _remove_older(folder: Path, key: str, number: int) -> None:
    for older in _numbers(folder, key):
        if older < number:
            _path(folder, key, older).unlink(missing_ok=True)


def _numbers(folder: Path, key: str) -> list[int]:
    pattern = re.compile(rf"{re.escape(key)}\.(\d+){re.escape(CLAIM_SUFFIX)}")
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(int(match.group(1)) for name in names if (match := pattern.fullmatch(name)))


def _path(folder: Path, key: str, number: int) -> Path:
    return Path(folder) / f"{key}.{number}{CLAIM_SUFFIX}"
