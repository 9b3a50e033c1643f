"""The content-addressed asset cache: a local folder (store) or an fsspec URL (remote).

Keys (:mod:`atlas.cache.keys`) are sha256 over a job's canonical JSON; an entry that cannot
be read is a miss with a warning, and every write is atomic.
"""

from __future__ import annotations

from pathlib import Path

from atlas.cache.store import Cache


def open_cache(location: Path | str) -> Cache:
    """The cache at a folder, or at an fsspec URL (``s3://...``: :mod:`atlas.cache.remote`)."""
    if isinstance(location, str) and "://" in location:
        from atlas.cache.remote import RemoteCache

        return RemoteCache(location)
    return Cache(Path(location))
