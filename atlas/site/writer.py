"""Writing the site: assets under content-hashed names, pages from templates, atomic swap.

The site is written into a temporary folder beside the output folder and renamed into
place at the end; the previous site is kept until then. atlas only ever replaces a
folder that it created itself (it carries a marker file), and refuses two pages with one
path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from atlas.cache.store import Entry
from atlas.errors import AtlasError
from atlas.project import resources
from atlas.site.manifest import MARKER

if TYPE_CHECKING:  # jinja2 and Pillow load only when pages are written
    import jinja2

log = logging.getLogger(__name__)


class Slugs:
    """Safe, unique, stable file names for user-given names (images, layers, models).

    A slug keeps only ``[A-Za-z0-9_.-]`` (accents are folded to ASCII first). A name that
    had to change, or whose slug is taken (case-insensitively, for case-insensitive file
    systems), gets 8 hex digits of its SHA-256 appended, so two names never share a file
    and the same name always gets the same slug.
    """

    def __init__(self) -> None:
        self._taken: set[str] = set()
        self._by_name: dict[str, str] = {}

    def __call__(self, name: str, text: str | None = None) -> str:
        """The slug of ``name``; ``text`` (default: the name) is what the slug is made of.

        Args:
            name: the identity: the same name always returns the same slug.
            text: a readable form of the name to build the slug from, e.g. a file name
                without its extension.
        """
        if name in self._by_name:
            return self._by_name[name]
        text = name if text is None else text
        ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", ascii_text).strip("._-")[:80] or "item"
        if slug != text or slug.lower() in self._taken:
            # Names that differ only in characters the slug drops must not collide.
            base, salt = slug, 0
            while slug == base or slug.lower() in self._taken:
                digest = hashlib.sha256(f"{name}\0{salt}".encode() if salt else name.encode())
                slug, salt = f"{base}-{digest.hexdigest()[:8]}", salt + 1
        self._taken.add(slug.lower())
        self._by_name[name] = slug
        return slug


@dataclass
class Assets:
    """Cache files published into the site as ``assets/<hash>.<ext>``."""

    files: dict[str, Path] = field(default_factory=dict)  # site path -> source file
    sizes: dict[str, int] = field(default_factory=dict)  # site path -> bytes

    def publish(self, entry: Entry | None, name: str) -> str | None:
        if entry is None or name not in entry.meta.get("_files", {}):
            return None
        info = entry.meta["_files"][name]
        suffix = PurePosixPath(name).suffix
        site_path = f"assets/{info['sha256'][:20]}{suffix}"
        self.files.setdefault(site_path, entry.file(name))
        self.sizes.setdefault(site_path, info["size"])
        return site_path

    def size(self, entry: Entry | None, name: str) -> tuple[int, int]:
        """A cached picture's width and height (read from its header), (1, 1) if missing."""
        if entry is None or name not in entry.meta.get("_files", {}):
            return (1, 1)
        from PIL import Image

        with Image.open(entry.file(name)) as picture:
            return picture.size


@dataclass(frozen=True)
class Page:
    """One HTML file: its site path, template and declared context."""

    path: str
    template: str
    title: str
    context: object
    crumbs: tuple[tuple[str, str | None], ...] = ()

    @property
    def root(self) -> str:
        depth = self.path.count("/")
        return "../" * depth


def url(page_path: str, target: str) -> str:
    """A relative link from one site path to another.

    ``os.path.relpath`` on the page's folder, without its ``abspath`` calls (a third of
    the page stage's time went there): site paths are relative and hold no ``..``.
    """
    start = [part for part in page_path.split("/")[:-1] if part and part != "."]
    path = [part for part in target.split("/") if part and part != "."]
    if ".." in start or ".." in path or target.startswith("/"):
        source_dir = str(PurePosixPath(page_path).parent)
        return os.path.relpath(target, start=source_dir)
    common = 0
    for a, b in zip(start, path, strict=False):
        if a != b:
            break
        common += 1
    return "/".join([".."] * (len(start) - common) + path[common:]) or "."


def environment(user_templates: Path | None) -> jinja2.Environment:
    import jinja2

    loaders = [jinja2.FileSystemLoader(str(user_templates))] if user_templates else []
    loaders.append(jinja2.FileSystemLoader(str(resources.templates())))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,  # every name that reaches HTML comes from users or datasets
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.1f} %"
    env.filters["num"] = lambda v: "–" if v is None else f"{v:,}"
    env.filters["float"] = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"
    return env


def render_pages(
    pages: list[Page],
    env: jinja2.Environment,
    target: Path,
    site: dict,
    previous: Path | None = None,
    hashes: dict | None = None,
) -> dict[str, list]:
    """Render every page into ``target``; refuses two pages with one path.

    Args:
        previous: the site being replaced, if any; a page whose bytes hash as recorded in
            ``hashes`` and whose file there is untouched (same stamp) is hard-linked from
            it instead of written again.
        hashes: the previous manifest's pages: site path -> [sha256, stamp].

    Returns:
        site path -> [sha256 of its bytes, stamp of its file], for the new manifest.
    """
    recorded: dict[str, list] = {}
    hashes = hashes or {}
    for page in pages:
        if page.path in recorded:
            raise AtlasError(f"two pages would be written to {page.path}")
        template = env.get_template(page.template)

        def link(target_path: str, page: Page = page) -> str:
            return url(page.path, target_path)

        html = template.render(page=page, c=page.context, site=site, link=link, root=page.root)
        data = html.encode("utf-8")
        digest = hashlib.sha256(data).hexdigest()
        destination = os.path.join(target, page.path)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        if not _reuse(previous, page.path, hashes.get(page.path), digest, destination):
            with open(destination, "wb") as handle:
                handle.write(data)
        recorded[page.path] = [digest, _file_stamp(destination), len(data)]
    return recorded


def _file_stamp(path: str) -> str:
    status = os.stat(path)
    return f"{status.st_ino}:{status.st_size}:{status.st_mtime_ns}"


def _reuse(
    previous: Path | None, path: str, old: list | None, digest: str, destination: str
) -> bool:
    """Hard-link the previous site's copy of a page whose bytes did not change."""
    if previous is None or not old or old[0] != digest:
        return False
    source = os.path.join(previous, path)
    try:
        if _file_stamp(source) != old[1]:
            return False  # edited since it was written: write it afresh
        os.link(source, destination)
    except OSError:
        return False
    return True


def publish_files(assets: Assets, target: Path) -> None:
    (target / "assets").mkdir(parents=True, exist_ok=True)
    for site_path, source in sorted(assets.files.items()):
        destination = target / site_path
        try:
            os.link(source, destination)  # same file system: no copy needed
        except OSError:
            shutil.copyfile(source, destination)


def copy_static(user_templates: Path | None, target: Path) -> int:
    """Copy the static files (atlas's, then the user's over them); returns their bytes."""
    static = target / "static"
    shutil.copytree(resources.templates() / "static", static)
    if user_templates and (user_templates / "static").is_dir():
        shutil.copytree(user_templates / "static", static, dirs_exist_ok=True)
    return folder_size(static)


def prepare_temp(output: Path) -> Path:
    """A fresh folder beside the output, on the same file system (for an atomic rename)."""
    if (
        output.exists()
        and output.is_dir()
        and any(output.iterdir())
        and not (output / MARKER).exists()
    ):
        raise AtlasError(
            f"refusing to replace {output}: it is not empty and was not made by "
            "atlas (no .atlas-site marker); choose another site.output or empty it"
        )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        temp = output.parent / f".{output.name}.tmp-{uuid.uuid4().hex[:12]}"
        temp.mkdir()
    except OSError as error:
        raise AtlasError(f"cannot write the site next to {output}: {error.strerror}") from None
    return temp


def mark(folder: Path) -> None:
    """Put the marker that lets a later build replace this folder (once)."""
    if not (folder / MARKER).exists():
        (folder / MARKER).write_text("This folder is written by atlas build and replaced whole.\n")


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(
        at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), _RENAME_EXCHANGE
    )
    return result == 0


def swap_in(temp: Path, output: Path) -> None:
    """Replace the output folder by the finished temp folder.

    Where the system can exchange two folders atomically, there is no moment without a
    site; elsewhere the old site is renamed aside first and put back if the second rename
    does not happen (``clean_stale`` also restores it after a kill).
    """
    mark(temp)
    if not output.exists():
        os.rename(temp, output)
        return
    if _exchange(temp, output):
        shutil.rmtree(temp, ignore_errors=True)  # now holds the previous site
        return
    old = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:12]}"
    os.rename(output, old)
    try:
        os.rename(temp, output)
    except BaseException:
        os.rename(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)


def clean_stale(output: Path) -> None:
    """Tidy up after an interrupted build: drop temp folders; if a kill came between the
    two renames of a swap (no output folder, an old one aside), put the old site back."""
    for stale in output.parent.glob(f".{output.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    olds = sorted(output.parent.glob(f".{output.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not output.exists():
        os.rename(olds.pop(), output)
    for stale in olds:
        shutil.rmtree(stale, ignore_errors=True)


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
