"""Which settings two configurations differ in, by dotted key and with both values, for refusals that name them."""

from __future__ import annotations


class _Absent:
    """Stands for a key that one of two compared settings lacks (e.g. a field added to the config since)."""

    def __repr__(self) -> str:
        return "absent"


ABSENT = _Absent()


def flat_differences(old: object, new: object, prefix: str = "") -> dict[str, tuple[object, object]]:
    """Dotted keys whose values differ between two JSON-like values, with (old, new) values."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: dict[str, tuple[object, object]] = {}
        for key in sorted(set(old) | set(new)):
            found.update(flat_differences(old.get(key, ABSENT), new.get(key, ABSENT), f"{prefix}{key}."))
        return found
    return {} if old == new else {prefix.rstrip("."): (old, new)}


def describe_differences(differences: dict[str, tuple[object, object]], old_name: str, new_name: str) -> str:
    """``key: old there, new here`` for each difference, joined for a one-line message."""
    return "; ".join(f"{key}: {old!r} {old_name}, {new!r} {new_name}" for key, (old, new) in differences.items())
