"""The content-addressed asset cache.

An entry is a folder ``<root>/<key[:2]>/<key>/`` holding the asset files and a
``meta.json`` (the numbers the site shows, plus each file's size and sha256). It is built
in a temporary folder beside it and renamed into place, so an entry either exists whole
or not at all; a kill -9 leaves at most a ``.tmp-*`` folder that the next build removes.
An entry that cannot be read or does not match its ``meta.json`` is a miss plus a
warning, never a crash: the cache is only an optimisation.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atlas.cache.keys import canonical_json, sha256_file
from atlas.errors import CacheError
from atlas.project.folders import mark_cache

log = logging.getLogger(__name__)

META = "meta.json"
LOCK = ".lock"
# key -> the (inode, size, mtime) of meta.json and its files when their checksums last
# matched: a warm build re-hashes (or even reads) only entries whose files changed since
# (git's index does the same).
STAMPS = "checked.json"


@dataclass(frozen=True)
class Entry:
    """A readable cache entry: its folder, its metadata and its files."""

    key: str
    path: Path
    meta: dict[str, Any]

    def file(self, name: str) -> Path:
        return self.path / name

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()


class Cache:
    """Assets by key under one folder; see the module docstring."""

    def __init__(self, root: Path, *, verify: bool = True):
        self.root = Path(root)
        self._root = os.fspath(self.root)
        self.verify = verify
        self.hits = 0
        self.misses = 0
        self.written = 0
        self._lock_handle = None
        self._verified: dict[str, Entry] = {}  # read and checked once per build
        self._stamps: dict[str, str] | None = None
        self._stamps_changed = False
        self._present: dict[str, str] = {}  # key -> stamp, for entries found sound

    # -- locking -----------------------------------------------------------------------
    def lock(self, wait: float = 0.0, shared: bool = False) -> None:
        """Take the cache's build lock, or raise CacheError if another build holds it.

        Shards of one build (``--shard I/N``) take it shared: they write disjoint entries,
        each atomically; a whole build takes it exclusively.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            mark_cache(self.root)  # atlas clean removes only marked caches
            handle = open(self.root / LOCK, "a+")  # noqa: SIM115 - held for the build
        except OSError as error:
            raise _os_error(self.root, error) from None
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    raise CacheError(
                        f"the cache {self.root} is in use by another atlas build; wait for it "
                        "to finish (or use --wait)"
                    ) from None
                time.sleep(0.2)
        self._lock_handle = handle
        if not shared:  # another shard may be writing its temp folders right now
            self._remove_temp_folders()

    def unlock(self) -> None:
        if self._lock_handle is not None:
            self._save_stamps()
            self._lock_handle.close()
            self._lock_handle = None

    def _load_stamps(self) -> dict[str, str]:
        if self._stamps is None:
            try:
                stamps = json.loads((self.root / STAMPS).read_text(encoding="utf-8"))
                self._stamps = stamps if isinstance(stamps, dict) else {}
            except (OSError, ValueError):
                self._stamps = {}
        return self._stamps

    def _save_stamps(self) -> None:
        if not self._stamps_changed or self._stamps is None:
            return
        temp = self.root / f".{STAMPS}.{uuid.uuid4().hex}"
        try:
            temp.write_text(json.dumps(self._stamps, sort_keys=True), encoding="utf-8")
            os.replace(temp, self.root / STAMPS)
            self._stamps_changed = False
        except OSError as error:  # only an optimisation: the next build re-hashes
            temp.unlink(missing_ok=True)
            log.warning("could not save %s (%s)", self.root / STAMPS, error)

    def _remove_temp_folders(self) -> None:
        # Left by a build killed mid-write; safe to remove once we hold the lock.
        for shard in self.root.iterdir() if self.root.is_dir() else ():
            if shard.is_dir():
                for child in shard.glob(".tmp-*"):
                    shutil.rmtree(child, ignore_errors=True)

    # -- reading ----------------------------------------------------------------------
    def path_of(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Entry | None:
        """The entry for ``key``, or None (a miss) if absent, unreadable or damaged."""
        if key in self._verified:
            self.hits += 1
            return self._verified[key]
        path = self.path_of(key)
        folder = os.fspath(path)  # plain strings: thousands of entries per build
        if not os.path.isdir(folder):
            self.misses += 1
            return None
        try:
            with open(os.path.join(folder, META), encoding="utf-8") as handle:
                meta = json.load(handle)
            files = meta.get("_files", {})
            for name, info in files.items():
                if os.stat(os.path.join(folder, name)).st_size != info["size"]:
                    raise ValueError(f"{name} has the wrong size")
            stamp = _stamp(folder, list(files))
            if self.verify:
                self._check_sums(key, path, files, stamp)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            log.warning("cache entry %s is damaged (%s); rendering it again", path, error)
            shutil.rmtree(path, ignore_errors=True)
            self._present.pop(key, None)
            self.misses += 1
            return None
        self.hits += 1
        entry = Entry(key=key, path=path, meta=meta)
        self._verified[key] = entry
        self._present[key] = stamp
        return entry

    def _check_sums(self, key: str, path: Path, files: dict, stamp: str) -> None:
        stamps = self._load_stamps()
        if stamps.get(key) == stamp:
            return  # hashed before and untouched since
        for name, info in files.items():
            if sha256_file(path / name) != info["sha256"]:
                raise ValueError(f"{name} does not match its checksum")
        self._record(key, stamp)

    def _record(self, key: str, stamp: str) -> None:
        stamps = self._load_stamps()
        if stamps.get(key) != stamp:
            stamps[key] = stamp
            self._stamps_changed = True

    def has(self, key: str) -> bool:
        """Whether a sound entry exists, for planning: a damaged one is removed (and so
        rendered again).

        An entry whose files (``meta.json`` included) have the (inode, size, mtime) they
        had when their checksums last matched is sound without reading it: a warm build
        checks thousands of entries with a few ``stat`` calls each. Anything else is read
        and verified by :meth:`get`.
        """
        if key in self._present:
            self.hits += 1
            return True
        recorded = self._load_stamps().get(key) if self.verify else None
        if recorded is not None:
            folder = os.path.join(self._root, key[:2], key)
            try:
                names = [part.rsplit(":", 3)[0] for part in recorded.split("/")]
                if names[0] == META and _stamp(folder, names[1:]) == recorded:
                    self.hits += 1
                    self._present[key] = recorded
                    return True
            except OSError:
                pass  # gone or changed: get() says which
        return self.get(key) is not None

    def stamp(self, key: str) -> str | None:
        """What identifies the present entry's files (meta.json's and each asset's inode,
        size and mtime), or None if the entry is absent. A re-rendered or copied entry has
        another stamp, so a digest over stamps changes whenever an entry's content may."""
        if key not in self._present and not self.has(key):
            return None
        return self._present[key]

    def files_bytes(self, key: str) -> int | None:
        """The bytes of a present entry's files (``meta.json`` aside), from its stamp:
        no need to read the entry. None if the entry is absent."""
        stamp = self.stamp(key)
        if stamp is None:
            return None
        return sum(int(part.rsplit(":", 3)[2]) for part in stamp.split("/")[1:])

    # -- writing ----------------------------------------------------------------------
    def put(self, key: str, meta: dict[str, Any], files: dict[str, bytes] | None = None) -> Entry:
        """Store an entry atomically; an existing entry with the key is kept as it is."""
        files = files or {}
        for name in files:
            if "/" in name or "\\" in name or name.startswith(".") or name == META:
                raise ValueError(f"bad asset file name {name!r}")
        final = self.path_of(key)
        temp = final.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            temp.mkdir(parents=True)
            record = dict(meta)
            record["_files"] = {}
            for name, data in files.items():
                _write_synced(temp / name, data)
                record["_files"][name] = {
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            _write_synced(temp / META, canonical_json(record).encode("utf-8"))
            ours = True
            try:
                os.rename(temp, final)
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                shutil.rmtree(temp, ignore_errors=True)  # written meanwhile: same content
                ours = False
        except OSError as error:
            shutil.rmtree(temp, ignore_errors=True)
            raise _os_error(self.root, error) from None
        except BaseException:  # e.g. Ctrl-C mid-write: leave no temp folder behind
            shutil.rmtree(temp, ignore_errors=True)
            raise
        self.written += 1
        entry = Entry(key=key, path=final, meta=record)
        self._verified[key] = entry
        if ours:  # the checksums were just computed from these bytes: no re-hash later
            with contextlib.suppress(OSError):
                stamp = _stamp(os.fspath(final), list(record["_files"]))
                self._present[key] = stamp
                if self.verify:
                    self._record(key, stamp)
        return entry

    # -- small shared files beside the entries (throughput, shard splits) --------------
    def read_aux(self, name: str) -> bytes | None:
        """A small file of the cache by relative name, or None if absent or unreadable."""
        try:
            return (self.root / name).read_bytes()
        except OSError:
            return None

    def write_aux(self, name: str, data: bytes) -> None:
        """Replace a small file of the cache atomically (last writer wins)."""
        target = self.root / name
        temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(data)
            os.replace(temp, target)
        except OSError as error:
            temp.unlink(missing_ok=True)
            raise _os_error(self.root, error) from None

    def create_exclusive(self, name: str, data: bytes) -> bool:
        """Create a small file only if it does not exist; False if it already did."""
        target = self.root / name
        temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(data)
            os.link(temp, target)  # fails if the name exists: whole file or nothing
            return True
        except FileExistsError:
            return False
        except OSError as error:
            raise _os_error(self.root, error) from None
        finally:
            temp.unlink(missing_ok=True)

    # -- memos: small JSON files beside the entries, each only an optimisation -----------
    def read_memo(self, name: str) -> dict:
        """The JSON memo ``name`` (e.g. the dataset scan's), or {} if absent or unreadable."""
        data = self.read_aux(name)
        try:
            memo = json.loads(data) if data is not None else {}
        except ValueError:
            return {}
        return memo if isinstance(memo, dict) else {}

    def write_memo(self, name: str, memo: dict) -> None:
        """Replace the memo ``name``; a failure is a warning (the next build works it out
        again)."""
        try:
            self.write_aux(name, json.dumps(memo, sort_keys=True).encode("utf-8"))
        except CacheError as error:
            log.warning("cannot save %s: %s", name, error)

    def remove_all(self) -> None:
        """Delete the whole cache folder."""
        shutil.rmtree(self.root)

    # -- maintenance ------------------------------------------------------------------
    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for shard in self.root.iterdir()
            if shard.is_dir()
            for entry in shard.iterdir()
            if entry.is_dir() and not entry.name.startswith(".")
        )

    def prune(self, keep: set[str]) -> tuple[int, int]:
        """Remove entries not in ``keep``; returns (entries removed, bytes freed)."""
        removed = freed = 0
        for key in self.keys():
            if key in keep:
                continue
            path = self.path_of(key)
            self._verified.pop(key, None)
            self._present.pop(key, None)
            freed += sum(f.stat().st_size for f in path.iterdir() if f.is_file())
            shutil.rmtree(path, ignore_errors=True)
            if self._load_stamps().pop(key, None) is not None:
                self._stamps_changed = True
            removed += 1
        return removed, freed


def _stamp(folder: str, names: list[str]) -> str:
    """``name:inode:size:mtime_ns`` of meta.json and of each named file, "/"-joined."""
    parts = []
    for name in (META, *names):
        status = os.stat(f"{folder}/{name}")  # os.path.join costs more than the stat
        parts.append(f"{name}:{status.st_ino}:{status.st_size}:{status.st_mtime_ns}")
    return "/".join(parts)


def _write_synced(path: Path, data: bytes) -> None:
    # No fsync: the rename is what protects against a killed build (the kernel keeps the
    # written pages); sizes and checksums in meta.json catch anything else on read.
    with open(path, "wb") as handle:
        handle.write(data)


def _os_error(root: Path, error: OSError) -> CacheError:
    if error.errno == errno.ENOSPC:
        return CacheError(
            f"the disk holding the cache {root} is full; free some space "
            "(the previous site is untouched)"
        )
    if error.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return CacheError(
            f"cannot write to the cache folder {root}: {error.strerror}; "
            "choose another folder with the `cache` key"
        )
    return CacheError(f"cache {root}: {error}")
