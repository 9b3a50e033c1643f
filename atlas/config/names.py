"""Names in the config matched against a model's layers and the dataset's photos: each
is the name itself or a glob pattern (``conv_pw_*``)."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence


def is_glob(pattern: str) -> bool:
    """Whether a name in the config is a glob pattern (``*``, ``?`` or ``[``)."""
    return any(char in pattern for char in "*?[")


def name_matches(name: str, pattern: str) -> bool:
    """Whether an image or layer name is the pattern itself or matches it as a glob."""
    return name == pattern or (is_glob(pattern) and fnmatch.fnmatchcase(name, pattern))


def select_layers(names: Sequence[str], patterns: Sequence[str] | None) -> list[str]:
    """The layer names matching any of the patterns (names or globs), in model order."""
    if patterns is None:
        return list(names)
    return [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def unmatched_patterns(names: Sequence[str], patterns: Sequence[str] | None) -> list[int]:
    """Indices of the patterns that match no layer name (a config error)."""
    if patterns is None:
        return []
    return [
        i for i, p in enumerate(patterns) if not any(fnmatch.fnmatchcase(name, p) for name in names)
    ]
