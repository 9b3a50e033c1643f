"""The folders atlas writes (the site and the cache), and the rule that keeps a user's files.

atlas marks each folder it makes: the site carries ``.atlas-site``, the cache a
``CACHEDIR.TAG`` (the Cache Directory Tagging convention, which backup tools honour).
A config whose ``site.output`` or ``cache`` is the project folder, a folder above it, the
home folder, ``/``, or an existing folder with files in it but without the marker is
refused before anything is written (:func:`folder_problem`). ``atlas clean`` removes a
marked site whole, and from a cache only the entries atlas wrote (:func:`clean_cache`).
"""

from __future__ import annotations

import fnmatch
import logging
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

SITE_MARKER = ".atlas-site"
CACHE_MARKER = "CACHEDIR.TAG"
CACHE_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This folder is an atlas asset cache (https://bford.info/cachedir/).\n"
    "# atlas clean --cache removes what atlas wrote here and nothing else.\n"
)
# The small files atlas keeps beside the entries (memos, stamps, throughput, shard splits),
# as patterns relative to the cache; a file atlas adds there must match one of them
# (tests/test_folders.py builds a project and checks that clean leaves nothing).
CACHE_FILES = (
    ".lock",
    "checked.json",
    "*-memo.json",
    "site-manifest.json",
    "throughput.json",
    "calibration.json",
    "shards/*.json",
)
_SHARD = re.compile(r"[0-9a-f]{2}")
_KEY = re.compile(r"[0-9a-f]{64}")
_TEMP_SUFFIX = re.compile(r"\.[0-9a-f]{32}")  # .NAME.<uuid hex>: a small file being replaced
_FOLDERS = {pattern.split("/")[0] for pattern in CACHE_FILES if "/" in pattern}


def folder_problem(key: str, folder: Path, project: Path, marker: str) -> str | None:
    """Why ``folder`` may not be used as the folder of config key ``key``, or None.

    Args:
        key: ``site.output`` or ``cache``, named in the message.
        folder: the resolved folder.
        project: the config file's folder.
        marker: the file that shows atlas made the folder.
    """
    home = Path.home().resolve()
    if folder == Path(folder.anchor):
        what = "the file-system root"
    elif folder == home:
        what = "your home folder"
    elif folder == project:
        what = "the project folder (the folder of the config file)"
    elif folder in project.parents:
        what = "a folder above the project folder"
    else:
        return _existing_problem(key, folder, marker)
    return (
        f"refusing to use {what} ({folder}) as {key}: atlas replaces or removes this "
        "folder; choose a folder of its own, e.g. "
        + ("_site" if key == "site.output" else ".atlas-cache")
    )


def _existing_problem(key: str, folder: Path, marker: str) -> str | None:
    try:
        if not folder.exists():
            return None
        if not folder.is_dir():
            return f"{folder} exists and is not a folder; choose another {key}"
        if is_marked(folder, marker) or not any(folder.iterdir()):
            return None
    except OSError as error:
        return f"cannot use {folder} as {key}: {error.strerror or error}"
    return (
        f"refusing to use {folder} as {key}: it holds files atlas did not write (no "
        f"{marker} marker); choose a new or empty folder"
    )


def is_marked(folder: Path, marker: str) -> bool:
    """Whether atlas made ``folder``: it holds the marker (or, for a cache made before
    caches were marked, nothing but what atlas writes into one)."""
    if (folder / marker).is_file():
        return True
    return marker == CACHE_MARKER and _is_unmarked_cache(folder)


def _is_unmarked_cache(folder: Path) -> bool:
    """Nothing but what atlas writes in a cache: a cache from before caches were marked,
    or one that ``atlas plan`` started (it writes memos without taking the lock)."""
    return all(_is_cache_item(folder, child) for child in folder.iterdir())


def _is_cache_file(root: Path, path: Path) -> bool:
    """Whether ``path`` is one of atlas's small files in the cache ``root`` (or a temp
    file of one)."""
    if path.is_symlink() or not path.is_file():
        return False
    relative = path.relative_to(root)
    name = relative.name
    if name.startswith(".") and _TEMP_SUFFIX.search(name):
        name = _TEMP_SUFFIX.sub("", name[1:])
    candidate = relative.with_name(name).as_posix()
    return any(fnmatch.fnmatchcase(candidate, pattern) for pattern in CACHE_FILES)


def _is_cache_item(root: Path, path: Path) -> bool:
    if path.name == CACHE_MARKER or _is_cache_file(root, path):
        return True
    if path.is_symlink() or not path.is_dir():
        return False
    if _SHARD.fullmatch(path.name):
        return True
    return path.name in _FOLDERS and all(_is_cache_file(root, child) for child in path.iterdir())


def mark_cache(root: Path) -> None:
    """Write the cache marker into ``root`` (an existing folder) unless it is there."""
    tag = root / CACHE_MARKER
    if not tag.exists():
        tag.write_text(CACHE_TAG, encoding="utf-8")


def clean_cache(root: Path) -> list[Path]:
    """Remove what atlas wrote in the cache ``root``: entries, temp folders, its own files
    and the marker; then the folder itself if nothing else is left.

    Returns:
        The paths atlas did not write, left in place.
    """
    kept: list[Path] = []
    for child in sorted(root.iterdir()):
        if child.is_symlink():
            kept.append(child)
        elif _SHARD.fullmatch(child.name) and child.is_dir():
            kept += _clean_shard(child)
        elif child.name in _FOLDERS and child.is_dir():
            kept += _clean_folder(root, child)
        elif _is_cache_file(root, child):
            child.unlink()
        elif child.name != CACHE_MARKER:
            kept.append(child)
    if kept:
        return kept
    (root / CACHE_MARKER).unlink(missing_ok=True)
    root.rmdir()
    return kept


def _clean_folder(root: Path, folder: Path) -> list[Path]:
    kept = []
    for child in sorted(folder.iterdir()):
        if _is_cache_file(root, child):
            child.unlink()
        else:
            kept.append(child)
    if not kept:
        folder.rmdir()
    return kept


def _clean_shard(shard: Path) -> list[Path]:
    kept = []
    for entry in sorted(shard.iterdir()):
        is_entry = _KEY.fullmatch(entry.name) or entry.name.startswith(".tmp-")
        if is_entry and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            kept.append(entry)
    if not kept:
        shard.rmdir()
    return kept


def remove_site(output: Path) -> None:
    """Remove a site folder atlas made (the caller has checked its marker)."""
    shutil.rmtree(output)
