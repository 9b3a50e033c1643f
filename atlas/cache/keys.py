"""Content addresses: the canonical JSON of a job, its sha256 key, and file digests
(memoised per process by the file's identity)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def canonical_json(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no spaces; what keys are hashed over."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_default
    )


def _default(value: Any) -> Any:
    if isinstance(value, tuple | set | frozenset):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def make_key(description: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of everything that determines an asset."""
    return hashlib.sha256(canonical_json(description).encode("utf-8")).hexdigest()


_DIGESTS: dict[tuple, str] = {}  # file_identity -> digest, in this process


def file_identity(path: Path) -> tuple:
    """(path, inode, size, mtime): what an in-process memo of a file's content is keyed
    by (a file replaced or edited meanwhile has another identity).

    Raises:
        OSError: the file cannot be stat'ed.
    """
    info = os.stat(path)
    return (os.fspath(path), info.st_ino, info.st_size, info.st_mtime_ns)


def file_digest(path: Path) -> str:
    """Return the sha256 of a file's bytes, read in chunks.

    Args:
        path: the file.

    Returns:
        The lowercase hex digest.

    Raises:
        OSError: the file cannot be read.
    """
    known = file_identity(path)
    if known in _DIGESTS:  # e.g. a trimap planned for every model of the build
        return _DIGESTS[known]
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    _DIGESTS[known] = digest.hexdigest()
    return _DIGESTS[known]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
