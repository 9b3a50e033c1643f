"""What a built site was made from, so that a rebuild can leave an up-to-date site alone.

The cache keeps, per output folder, a manifest of the site last written there: a digest
of every input of the pages, a stamp of the written tree, and each page's content hash.
A rebuild compares:

* the **inputs digest**: atlas's own code and templates, the versions of the libraries
  that turn contexts into HTML, the config, the notes and breed files, the dataset scan,
  and for every cache entry a page may read its key and its stamp (inode, size, mtime of
  its files, see :meth:`atlas.cache.store.Cache.stamp`): a re-rendered entry has a new stamp;
* the **tree stamp**: every file of the site with its inode, size and mtime, so a site
  that was edited, pruned or added to since is never taken as up to date.

Both equal: nothing is written. Otherwise the pages are rendered and a page whose bytes
hash as before, and whose file is untouched, is hard-linked from the previous site
instead of written again (see :func:`atlas.site.writer.render_pages`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from pathlib import Path
from typing import Any

from atlas.project.folders import SITE_MARKER

log = logging.getLogger(__name__)

FORMAT = 1
ASSETS = "assets/"  # content-addressed files, hard-linked from the cache
MARKER = SITE_MARKER  # the sign that atlas made (and may replace) a folder
# In the cache, not in the site: the manifest holds inodes, and two builds of the same
# inputs must give byte-identical sites. Output folder -> its manifest.
MEMO = "site-manifest.json"
PACKAGE = Path(__file__).resolve().parent
# Turn page contexts into bytes: a new version may change a page.
LIBRARIES = ("jinja2", "markdown", "matplotlib", "pillow")


def _files_digest(digest: Any, root: Path, pattern: str) -> None:
    """Feed every file under ``root`` matching ``pattern`` (path and bytes) to ``digest``."""
    if not root.is_dir():
        return
    for path in sorted(root.rglob(pattern)):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())


def _file(digest: Any, path: Path | None) -> None:
    digest.update(f"{path}\0".encode())
    if path is not None and path.is_file():
        digest.update(hashlib.sha256(path.read_bytes()).digest())


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def inputs_digest(context: Any, templates: Path) -> str | None:
    """The digest of everything the pages are made from (the ledger's timings aside).

    Args:
        context: the :class:`atlas.plan.context.BuildContext` after rendering.
        templates: atlas's own templates folder.

    Returns:
        a hex digest, or None when the site can never be up to date (``site.timestamp``).
    """
    config = context.config
    if config.site.timestamp:
        return None
    digest = hashlib.sha256(f"atlas site manifest {FORMAT}\0".encode())
    _files_digest(digest, PACKAGE, "*.py")
    _files_digest(digest, templates, "*")
    if config.site.templates is not None:
        _files_digest(digest, config.site.templates, "*")
    digest.update(repr([_version(name) for name in LIBRARIES]).encode())
    digest.update(repr(config).encode())
    for path in (
        config.site.notes,
        config.dataset.class_index,
        config.dataset.breeds,
        *(model.notes for model in config.models),
    ):
        _file(digest, path)
    digest.update(repr(context.scan).encode())
    digest.update(repr([image.name for image in context.detailed]).encode())
    for key in entry_keys(context):
        digest.update(f"{key}={context.cache.stamp(key)}\n".encode())
    return digest.hexdigest()


def entry_keys(context: Any) -> list[str]:
    """Every cache key the pages may read, in a fixed order."""
    from atlas.plan.jobs import facts_job, photo_job

    keys = [photo_job(image).key for image in context.scan.images]
    for plan in context.models:
        keys.append(facts_job(plan.config, plan.identity).key)
        keys += [job.key for job in plan.predict + plan.images + plan.scores]
        for layer in plan.layers:
            name = layer["name"]
            keys += [job.key for job in plan.units[name]]
            keys += [job.key for job in plan.views.get(name, ())]
            keys += [job.key for job in (plan.grids.get(name), plan.exemplars.get(name)) if job]
        keys += [job.key for job in plan.atlases.values()]  # the activation atlas pages
    return keys


def tree_stamp(root: Path) -> str:
    """A digest of every file under ``root``.

    Pages and other files count with their inode, size and mtime. Assets count with their
    name and inode only (free from the directory listing, no ``stat``: there are some
    20,000): their names are their content hashes, and they are hard links to cache files,
    so an asset edited in place changes its cache entry's stamp, hence the inputs digest.
    """
    digest = hashlib.sha256()
    pending = [("", os.fspath(root))]
    while pending:
        prefix, folder = pending.pop()
        with os.scandir(folder) as found:
            entries = sorted(found, key=lambda entry: entry.name)
        for entry in entries:
            relative = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                pending.append((relative + "/", entry.path))
            elif prefix == ASSETS:
                digest.update(f"{relative}\0{entry.inode()}\n".encode())
            else:
                status = entry.stat(follow_symlinks=False)
                digest.update(
                    f"{relative}\0{status.st_ino}\0{status.st_size}\0"
                    f"{status.st_mtime_ns}\n".encode()
                )
    return digest.hexdigest()


def read(cache: Any, output: Path) -> dict | None:
    """The manifest of the site in ``output``, or None (never built with this cache)."""
    manifest = cache.read_memo(MEMO).get(os.fspath(output))
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    return manifest


def up_to_date(output: Path, inputs: str | None, manifest: dict | None) -> bool:
    """Whether the site in ``output`` was built from ``inputs`` and is untouched since."""
    if inputs is None or manifest is None or manifest.get("inputs") != inputs:
        return False
    try:
        return manifest.get("tree") == tree_stamp(output)
    except OSError:
        return False


def write(
    cache: Any, output: Path, tree: str, inputs: str | None, pages: dict[str, list], size: int
) -> None:
    """Record what the site now in ``output`` was built from (``tree``: its stamp)."""
    memo = cache.read_memo(MEMO)
    memo[os.fspath(output)] = {
        "format": FORMAT,
        "inputs": inputs,
        "tree": tree,
        "pages": pages,
        "bytes": size,
    }
    cache.write_memo(MEMO, memo)
