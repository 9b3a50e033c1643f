"""The asset cache on shared storage: any fsspec URL (``s3://``, ``gs://``, ``file://``, ...).

Object stores cannot rename a folder atomically, so an entry is published in two steps:

1. its files are uploaded under a folder of their own, ``<key[:2]>/<key>/<token>/``
   (a random token per writer, so two writers never overwrite each other's files);
2. its manifest, ``<key[:2]>/<key>/meta.json`` (the metadata, each file's size and
   sha256, and the token), is created last and exclusively (``If-None-Match: *`` on S3).

An entry without a manifest is missing; of two racing writers one manifest wins and the
loser deletes its own files. Readers check every downloaded file against the manifest: a
mismatch is a miss plus a warning, as in the local cache.

Entries read or written are kept in a local mirror (a :class:`~atlas.cache.store.Cache` folder,
``$ATLAS_CACHE_MIRROR`` or the system's temp folder), so the site is written from local
files and a warm build downloads nothing twice. The cache lock, the checksum stamps and the
dataset scan memo live in the mirror: they are per machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from atlas.cache.keys import canonical_json
from atlas.cache.store import META, Cache, Entry
from atlas.errors import CacheError

log = logging.getLogger(__name__)

MIRROR_ENV = "ATLAS_CACHE_MIRROR"


def is_url(location: Path | str) -> bool:
    return isinstance(location, str) and "://" in location


def mirror_folder(url: str) -> Path:
    """The local mirror of a remote cache: one folder per URL."""
    base = Path(os.environ.get(MIRROR_ENV) or Path(tempfile.gettempdir()) / "atlas-mirror")
    return base / hashlib.sha256(url.encode()).hexdigest()[:16]


class RemoteCache(Cache):
    """A :class:`~atlas.cache.store.Cache` whose entries live at an fsspec URL; see the module
    docstring."""

    def __init__(self, url: str, *, verify: bool = True, mirror: Path | None = None):
        try:
            import fsspec
        except ImportError:
            raise CacheError(
                f"the cache {url} needs fsspec (pip install 'keras-atlas[remote]' "
                "or fsspec and s3fs/gcsfs)"
            ) from None
        try:
            local = url.startswith(("file://", "local://"))  # folders are not implied there
            self.fs, self.base = fsspec.core.url_to_fs(
                url, **({"auto_mkdir": True} if local else {})
            )
        except (ImportError, ValueError) as error:
            raise CacheError(f"cannot use the cache {url}: {error}") from None
        self.url = url.rstrip("/")
        self.base = self.base.rstrip("/")
        super().__init__(mirror or mirror_folder(self.url), verify=verify)
        self._listed: set[str] | None = None

    def __str__(self) -> str:
        return self.url

    def _remote(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    def _entry(self, key: str, *parts: str) -> str:
        return self._remote(key[:2], key, *parts)

    # -- reading ----------------------------------------------------------------------
    def get(self, key: str) -> Entry | None:
        """The entry from the mirror, else downloaded and checked; None if missing."""
        entry = super().get(key)
        if entry is not None:
            return entry
        self.misses -= 1  # counted below
        try:
            entry = self._download(key)
        except OSError as error:
            raise CacheError(f"cache {self.url}: {error}") from None
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def _download(self, key: str) -> Entry | None:
        try:
            manifest = json.loads(self.fs.cat_file(self._entry(key, META)))
        except FileNotFoundError:
            return None
        except ValueError as error:
            log.warning(
                "cache entry %s has a damaged manifest (%s); rendering it again",
                self._entry(key),
                error,
            )
            self._drop(key)
            return None
        token = manifest.pop("_dir", "")
        files = {}
        try:
            for name, info in manifest.get("_files", {}).items():
                data = self.fs.cat_file(self._entry(key, token, name))
                if len(data) != info["size"] or hashlib.sha256(data).hexdigest() != info["sha256"]:
                    raise ValueError(f"{name} does not match its checksum")
                files[name] = data
        except (FileNotFoundError, ValueError, KeyError, TypeError) as error:
            log.warning(
                "cache entry %s is damaged (%s); rendering it again", self._entry(key), error
            )
            self._drop(key)
            return None
        meta = {k: v for k, v in manifest.items() if k != "_files"}
        return Cache.put(self, key, meta, files)  # into the mirror only

    def has(self, key: str) -> bool:
        """Whether the entry exists: its manifest in the store (listed once per cache
        object; the files are downloaded when the entry is read), or a sound mirror copy."""
        return self._listing_has(key) or Cache.get(self, key) is not None

    def stamp(self, key: str) -> str | None:
        """The mirror copy's stamp (see :meth:`Cache.stamp`), downloading the entry first."""
        if key not in self._present and self.get(key) is None:
            return None
        return self._present.get(key)

    def read_memo(self, name: str) -> dict:
        """Memos (scan, site manifest) are per machine: in the mirror."""
        data = Cache.read_aux(self, name)
        try:
            memo = json.loads(data) if data is not None else {}
        except ValueError:
            return {}
        return memo if isinstance(memo, dict) else {}

    def write_memo(self, name: str, memo: dict) -> None:
        try:
            Cache.write_aux(self, name, json.dumps(memo, sort_keys=True).encode("utf-8"))
        except CacheError as error:
            log.warning("cannot save %s: %s", name, error)

    def _listing_has(self, key: str) -> bool:
        if self._listed is None:
            self._listed = set(self.keys())
        return key in self._listed

    # -- writing ----------------------------------------------------------------------
    def put(self, key: str, meta: dict[str, Any], files: dict[str, bytes] | None = None) -> Entry:
        """Store the entry in the mirror, then publish it: files first, manifest last."""
        entry = Cache.put(self, key, meta, files)
        token = uuid.uuid4().hex[:12]
        try:
            for name, data in (files or {}).items():
                self.fs.pipe_file(self._entry(key, token, name), data)
            manifest = dict(entry.meta, _dir=token)
            try:
                self._create(self._entry(key, META), canonical_json(manifest).encode())
            except FileExistsError:  # another writer published the key first: keep theirs
                self._remove_files(key, token)
                entry = self._adopt(key) or entry
        except OSError as error:
            raise CacheError(f"cannot write to the cache {self.url}: {error}") from None
        if self._listed is not None:
            self._listed.add(key)
        return entry

    def _adopt(self, key: str) -> Entry | None:
        """Replace the mirror's copy by the published entry (the winner of a race)."""
        import shutil

        self._verified.pop(key, None)
        shutil.rmtree(self.path_of(key), ignore_errors=True)
        return self._download(key)

    def _remove_files(self, key: str, token: str) -> None:
        try:
            self.fs.rm(self._entry(key, token), recursive=True)
        except (FileNotFoundError, OSError) as error:
            log.debug("could not remove %s: %s", self._entry(key, token), error)

    def _drop(self, key: str) -> None:
        """Remove an entry: the manifest first (then the entry is missing), then files."""
        for path in (self._entry(key, META), self._entry(key)):
            try:
                self.fs.rm(path, recursive=True)
            except (FileNotFoundError, OSError):
                pass

    # -- small shared files -------------------------------------------------------------
    def read_aux(self, name: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._remote(name))
        except (FileNotFoundError, OSError):
            return None

    def write_aux(self, name: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(self._remote(name), data)
        except OSError as error:
            raise CacheError(f"cannot write to the cache {self.url}: {error}") from None

    def _create(self, path: str, data: bytes) -> None:
        """Write a new file whole, or raise FileExistsError if it exists.

        fsspec's local ``mode="create"`` checks, then writes: two racing writers can both
        pass the check and interleave their bytes. On a local (or mounted) file system the
        file is written aside and linked into place, which is atomic and exclusive.
        """
        protocol = self.fs.protocol
        if "file" not in (protocol if isinstance(protocol, tuple) else (protocol,)):
            self.fs.pipe_file(path, data, mode="create")
            return
        target = Path(self.fs._strip_protocol(path))
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        temp.write_bytes(data)
        try:
            os.link(temp, target)
        finally:
            temp.unlink(missing_ok=True)

    def create_exclusive(self, name: str, data: bytes) -> bool:
        try:
            self._create(self._remote(name), data)
            return True
        except FileExistsError:
            return False
        except OSError as error:
            raise CacheError(f"cannot write to the cache {self.url}: {error}") from None

    # -- maintenance ------------------------------------------------------------------
    def keys(self) -> list[str]:
        """Every published entry (one listing of the store)."""
        try:
            paths = self.fs.find(self.base)
        except FileNotFoundError:
            return []
        keys = set()
        for path in paths:
            parts = path.rstrip("/").split("/")
            if parts[-1] == META and len(parts) >= 3 and parts[-3] == parts[-2][:2]:
                keys.add(parts[-2])
        return sorted(keys)

    def prune(self, keep: set[str]) -> tuple[int, int]:
        """Remove published entries not in ``keep`` (and their mirror copies)."""
        removed = freed = 0
        for key in self.keys():
            if key in keep:
                continue
            try:
                manifest = json.loads(self.fs.cat_file(self._entry(key, META)))
                freed += sum(int(i.get("size", 0)) for i in manifest.get("_files", {}).values())
            except (OSError, ValueError, AttributeError):
                pass
            self._drop(key)
            removed += 1
        super().prune(keep)
        return removed, freed

    def remove_all(self) -> None:
        """Delete the whole remote cache and its local mirror."""
        import shutil

        try:
            self.fs.rm(self.base, recursive=True)
        except FileNotFoundError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
