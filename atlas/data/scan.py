"""The Oxford-IIIT Pet annotations and the scan of an image folder.

The scan decides which files a build uses: every image is read and fully decoded once (the
result is memoised by content digest, so a rebuild decodes nothing new), a bad file is
skipped with one warning, and the order is the sorted file names so that builds are
deterministic.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from atlas.cache.keys import file_digest
from atlas.data.oxford import (
    Annotation,
    breed_from_filename,
    read_annotation_list,
    read_splits,
)
from atlas.errors import AtlasError, BadImageError

if TYPE_CHECKING:  # numpy and Pillow load only when images are decoded
    pass

log = logging.getLogger(__name__)

# Extensions always tried, whatever Pillow registers on this machine.
_IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})


@dataclass(frozen=True)
class DatasetImage:
    """One usable image of the scanned folder.

    Attributes:
        name: the file stem, unique within the scan.
        path: the file.
        digest: sha256 of the file bytes.
        breed: the breed key.
        species: ``"cat"`` or ``"dog"``.
        split: ``"trainval"``, ``"test"`` or None when the split files do not list it.
        annotated: True when breed and species came from the annotation list, False when
            they were derived from the file name.
        width: decoded width in pixels, after EXIF rotation.
        height: decoded height in pixels, after EXIF rotation.
    """

    name: str
    path: Path
    digest: str
    breed: str
    species: str
    split: str | None
    annotated: bool
    width: int
    height: int


@dataclass(frozen=True)
class Skipped:
    """A file the scan left out, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class DatasetScan:
    """The result of :func:`scan_dataset`: usable images and skipped files, by name."""

    images: tuple[DatasetImage, ...]
    skipped: tuple[Skipped, ...]


def scan_dataset(
    images_dir: Path,
    annotation_list: Path | None,
    *,
    known: dict[str, dict] | None = None,
    workers: int = 4,
    progress: bool = False,
) -> DatasetScan:
    """List, validate and label the images of a folder.

    Files are taken in sorted name order; hidden files, folders and extensions Pillow does
    not know are ignored. Each file is hashed and fully decoded; one that cannot be used (bad
    image, unlabelled or duplicate name, symlink leaving the folder, name that is not valid
    Unicode) becomes a :class:`Skipped` with one warning. Labels come from
    ``annotation_list``, else from the file name; splits from trainval.txt and test.txt
    next to it.

    Args:
        images_dir: the folder of images (not searched recursively).
        annotation_list: list.txt, or None to label from file names only.
        known: memo of earlier decodes, digest to ``{"ok", "reason", "width", "height"}``.
            Digests found in it are not decoded again; new results are added to it.
        workers: threads decoding in parallel.
        progress: show a progress bar.

    Returns:
        The usable images and the skipped files.

    Raises:
        AtlasError: the folder does not exist or an annotation file is malformed.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise AtlasError(f"{images_dir}: image folder not found")
    annotations = read_annotation_list(annotation_list) if annotation_list else {}
    splits = read_splits(Path(annotation_list).parent) if annotation_list else {}
    memo = known if known is not None else {}

    candidates, skipped = _list_candidates(images_dir, annotations)
    results = _check_files([path for path, _ in candidates], memo, workers, progress)
    images: list[DatasetImage] = []
    for (path, name), (digest, record) in zip(candidates, results, strict=True):
        if digest is not None:
            memo[digest] = record
        if not record["ok"]:
            skipped.append(_skip(path, record["reason"]))
            continue
        images.append(
            _labelled(path, name, digest, record, annotations.get(name), splits.get(name))
        )
    skipped.sort(key=lambda item: item.path.name)
    return DatasetScan(images=tuple(images), skipped=tuple(skipped))


def _labelled(
    path: Path,
    name: str,
    digest: str,
    record: dict,
    annotation: Annotation | None,
    split: str | None,
) -> DatasetImage:
    """A usable image, labelled by its annotation, else by its file name."""
    breed, species = (
        (annotation.breed, annotation.species) if annotation else breed_from_filename(name)
    )
    return DatasetImage(
        name=name,
        path=path,
        digest=digest,
        breed=breed,
        species=species,
        split=split,
        annotated=annotation is not None,
        width=record["width"],
        height=record["height"],
    )


def _check_files(
    paths: list[Path], memo: dict[str, dict], workers: int, progress: bool
) -> list[tuple[str | None, dict]]:
    """Each file's digest and decode record (:func:`_check_file`), decoded in threads."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        checks = pool.map(lambda path: _check_file(path, memo), paths)
        if progress:
            from tqdm import tqdm

            checks = tqdm(checks, total=len(paths), desc="scan", unit="img")
        return list(checks)


def _list_candidates(
    images_dir: Path, annotations: dict[str, Annotation]
) -> tuple[list[tuple[Path, str]], list[Skipped]]:
    """Pick the image files of a folder; return ``(path, name)`` pairs and early skips."""
    extensions = _IMAGE_EXTENSIONS
    root = images_dir.resolve()
    candidates: list[tuple[Path, str]] = []
    skipped: list[Skipped] = []
    seen: dict[str, str] = {}  # casefolded stem -> first file name
    with os.scandir(images_dir) as entries:
        ordered = sorted(entries, key=lambda entry: entry.name)
    for entry in ordered:
        path = Path(entry.path)
        if entry.name.startswith(".") or path.suffix.lower() not in extensions:
            if extensions is _IMAGE_EXTENSIONS:  # listing Pillow's costs all its plugins
                extensions = _IMAGE_EXTENSIONS | _pillow_extensions()
            if entry.name.startswith(".") or path.suffix.lower() not in extensions:
                continue
        reason = _entry_problem(entry, root)
        if reason == "":
            continue  # a folder or other non-file: not a candidate at all
        name = path.stem
        folded = name.casefold()
        if reason is None and folded in seen:
            reason = (
                f"same name as {seen[folded]} apart from letter case or extension; "
                "their pages would collide"
            )
        if reason is None:
            reason = _name_problem(name, annotations)
        if reason is not None:
            skipped.append(_skip(path, reason))
            continue
        seen[folded] = entry.name
        candidates.append((path, name))
    return candidates, skipped


def _name_problem(name: str, annotations: dict[str, Annotation]) -> str | None:
    """Say why a file stem cannot name a labelled image, or None when it can."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        # Undecodable bytes would break every page and JSON file that names the image.
        return "file name is not valid UTF-8"
    if name in annotations:
        return None
    try:
        breed_from_filename(name)
    except AtlasError:
        return "not in the annotation list and the file name does not say the breed"
    return None


def _entry_problem(entry: os.DirEntry, root: Path) -> str | None:
    """None for a usable regular file, a reason to skip it, or "" to ignore it silently."""
    try:
        if entry.is_symlink():
            target = Path(entry.path).resolve()
            if not target.is_relative_to(root):
                return f"symbolic link to {display_path(target)}, outside the image folder"
            return None if target.is_file() else "symbolic link to something that is not a file"
        return None if entry.is_file(follow_symlinks=False) else ""
    except OSError as error:
        return f"cannot inspect file ({error.strerror or error})"


def _check_file(path: Path, memo: dict[str, dict]) -> tuple[str | None, dict]:
    """Hash a file and decode it unless its digest is memoised; return digest and record."""
    try:
        digest = file_digest(path)
    except OSError as error:
        return None, _record(False, f"cannot read file ({error.strerror or error})")
    cached = memo.get(digest)
    if _is_record(cached):
        return digest, cached
    from atlas.data.images import open_rgb

    try:
        width, height = open_rgb(path).size
    except BadImageError as error:
        return digest, _record(False, error.reason)
    return digest, _record(True, None, width, height)


def _record(ok: bool, reason: str | None, width: int = 0, height: int = 0) -> dict:
    return {"ok": ok, "reason": reason, "width": width, "height": height}


def _is_record(value: object) -> bool:
    # The memo is persisted by the build; a damaged entry is a miss, not a crash.
    return (
        isinstance(value, dict)
        and isinstance(value.get("ok"), bool)
        and isinstance(value.get("width"), int)
        and isinstance(value.get("height"), int)
        and (value["ok"] or isinstance(value.get("reason"), str))
    )


def _skip(path: Path, reason: str) -> Skipped:
    log.warning("skipping %s: %s", display_path(path), reason)
    return Skipped(path=path, reason=reason)


def display_path(path: Path) -> str:
    """A printable form of a path whose name may hold undecodable bytes."""
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def _pillow_extensions() -> frozenset[str]:
    from PIL import Image

    return frozenset(extension.lower() for extension in Image.registered_extensions())
