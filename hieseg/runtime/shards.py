"""One task's slice of a sorted work list, for the tasks of a scheduler's job array."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

Item = TypeVar("Item")


@dataclass(frozen=True)
class Shard:
    """Slice ``index`` of ``count`` of a sorted work list, for one task of a scheduler's job array."""

    index: int
    count: int

    def take(self, items: Sequence[Item]) -> list[Item]:
        """Every ``count``-th item starting at ``index``: the shards of one list are disjoint and cover it."""
        return list(items[self.index :: self.count])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
