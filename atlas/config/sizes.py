"""Sizes as users write them in the config (``500MB``, ``1.5 GiB``)."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes from ``500MB``, ``1GB``, ``1.5 GiB``, ``2000000`` (decimal units; ``iB``: 1024).

    Raises:
        ValueError: text that is not a size.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"expected a size such as 500MB or 1GB, got {text!r}")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** "_KMGT".index(unit.upper() or "_"))
