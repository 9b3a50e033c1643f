"""The Oxford-IIIT Pet annotations and the scan of an image folder.

The scan decides which files a build uses: every image is read and fully decoded once (the
result is memoised by content digest, so a rebuild decodes nothing new), a bad file is
skipped with one warning, and the order is the sorted file names so that builds are
deterministic.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from atlas.data import layouts
from atlas.data.decode import check_files
from atlas.data.oxford import (
    Annotation,
    breed_from_filename,
    read_annotation_list,
    read_splits,
)
from atlas.errors import AtlasError

if TYPE_CHECKING:  # numpy and Pillow load only when images are decoded
    pass

log = logging.getLogger(__name__)

# Extensions always tried, whatever Pillow registers on this machine.
_IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})


@dataclass(frozen=True)
class DatasetImage:
    """One usable image of the scanned folder.

    Attributes:
        name: unique within the scan: the file stem (Oxford), else the path below the
            folder without the extension (``cat/IMG_0001``).
        path: the file.
        digest: sha256 of the file bytes.
        label: the photo's class (the breed key for the Oxford layout); None: unlabelled.
        group: the class's group (``"cat"`` or ``"dog"`` for the pets), None if none.
        split: the split the photo belongs to (``"trainval"``, ``"test"``, ``"train"``,
            ...) or None when the layout does not say.
        annotated: True when the label came from an annotation list, a metadata file or a
            class folder, False when it was read from an Oxford file name (or is None).
        width: decoded width in pixels, after EXIF rotation.
        height: decoded height in pixels, after EXIF rotation.
    """

    name: str
    path: Path
    digest: str
    label: str | None
    group: str | None
    split: str | None
    annotated: bool
    width: int
    height: int

    @property
    def breed(self) -> str | None:
        """The Oxford layout's word for the label (pets code reads it so)."""
        return self.label

    @property
    def species(self) -> str | None:
        """The Oxford layout's word for the group."""
        return self.group


@dataclass(frozen=True)
class Skipped:
    """A file the scan left out, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class DatasetScan:
    """The result of :func:`scan_dataset`: usable images and skipped files, by name, the
    layout they were read in, and (except for Oxford, whose breeds come from list.txt)
    the classes in their order and each class's group."""

    images: tuple[DatasetImage, ...]
    skipped: tuple[Skipped, ...]
    layout: str = "oxford"
    classes: tuple[str, ...] = ()
    groups: dict[str, str] | None = None

    @property
    def labelled(self) -> bool:
        """Whether the photos have classes (not a flat folder of unlabelled photos)."""
        return self.layout != "flat"


def scan_dataset(
    images_dir: Path,
    annotation_list: Path | None,
    *,
    known: dict[str, dict] | None = None,
    workers: int = 4,
    progress: bool = False,
    layout: str = "oxford",
    classes: Sequence[str] | None = None,
    groups: dict[str, str] | None = None,
    known_breeds: Sequence[str] = (),
) -> DatasetScan:
    """List, validate and label the images of a folder in one of the layouts of
    :mod:`atlas.data.layouts` (``auto``: detected, and logged).

    Files are taken in sorted name order; hidden files, folders and extensions Pillow does
    not know are ignored. Each file is hashed and fully decoded; one that cannot be used (bad
    image, unlabelled or duplicate name, symlink leaving the folder, name that is not valid
    Unicode) becomes a :class:`Skipped` with one warning. Labels come from
    ``annotation_list``, else from the file name; splits from trainval.txt and test.txt
    next to it.

    Args:
        images_dir: the folder of images (searched recursively for ``folders``).
        annotation_list: the Oxford list.txt, or None to label from file names only.
        layout: ``auto``, ``folders``, ``metadata``, ``oxford`` or ``flat``.
        classes: the class order (``dataset.classes``), for folders and metadata.
        groups: class -> group (``dataset.groups``), for layouts without their own.
        known_breeds: the pets' breed keys, to tell Oxford file names from camera names.
        known: memo of earlier decodes, digest to ``{"ok", "reason", "width", "height"}``.
            Digests found in it are not decoded again; new results are added to it.
        workers: threads decoding in parallel.
        progress: show a progress bar.

    Returns:
        The usable images and the skipped files.

    Raises:
        AtlasError: the folder does not exist or an annotation file is malformed.
        ConfigError: (exit 2) a metadata file or ``dataset.classes`` that does not fit.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise AtlasError(f"{images_dir}: image folder not found")
    memo = known if known is not None else {}
    if layout == "auto":
        layout = layouts.detect(
            images_dir, annotation_list, layouts.DETECT_EXTENSIONS, known_breeds
        )
        log.debug("%s: dataset layout %s", images_dir, layout)
    if layout == "oxford":
        return _scan_oxford(images_dir, annotation_list, memo, workers, progress)
    return _scan_layout(images_dir, layout, classes, groups, memo, workers, progress)


def image_extensions() -> frozenset[str]:
    """The file extensions read as photos outside the Oxford layout: Keras' own (jpg,
    jpeg, png, bmp, gif) and every format Pillow opens."""
    return _IMAGE_EXTENSIONS | frozenset(layouts.KERAS_EXTENSIONS) | _pillow_extensions()


def _scan_layout(
    images_dir: Path,
    layout: str,
    classes: Sequence[str] | None,
    groups: dict[str, str] | None,
    memo: dict,
    workers: int,
    progress: bool,
) -> DatasetScan:
    """A folders, metadata or flat layout: listed, checked and labelled."""
    listing = _listing(images_dir, layout, classes)
    listed, skipped = _unique(listing.files)
    results = check_files([item.path for item in listed], memo, workers, progress)
    group_of = {**(groups or {}), **(listing.groups or {})}
    images: list[DatasetImage] = []
    for item, (digest, record) in zip(listed, results, strict=True):
        if digest is not None:
            memo[digest] = record
        if not record["ok"]:
            skipped.append(_skip(item.path, record["reason"]))
            continue
        group = item.group or group_of.get(item.label) if item.label is not None else None
        images.append(
            DatasetImage(
                item.name,
                item.path,
                digest,
                item.label,
                group,
                item.split,
                item.label is not None,
                record["width"],
                record["height"],
            )
        )
    skipped.sort(key=lambda item: str(item.path))
    return DatasetScan(tuple(images), tuple(skipped), layout, listing.classes, group_of or None)


def _listing(root: Path, layout: str, classes: Sequence[str] | None) -> layouts.Listing:
    extensions = image_extensions()
    if layout == "folders":
        return layouts.list_folders(root, extensions, classes)
    if layout == "metadata":
        return layouts.list_metadata(root, classes)
    return layouts.list_flat(root, extensions)


def _unique(files) -> tuple[list, list[Skipped]]:
    """The listed files whose names are usable and unique (any letter case)."""
    kept, skipped, seen = [], [], {}
    for item in files:
        reason = _utf8_problem(item.name) or _collision(item.name, seen)
        if reason is not None:
            skipped.append(_skip(item.path, reason))
            continue
        seen[item.name.casefold()] = item.path.name
        kept.append(item)
    return kept, skipped


def _scan_oxford(
    images_dir: Path, annotation_list: Path | None, memo: dict, workers: int, progress: bool
) -> DatasetScan:
    """The Oxford-IIIT Pet layout: labels from list.txt, else from the file names."""
    annotations = read_annotation_list(annotation_list) if annotation_list else {}
    splits = read_splits(Path(annotation_list).parent) if annotation_list else {}
    candidates, skipped = _list_candidates(images_dir, annotations)
    results = check_files([path for path, _ in candidates], memo, workers, progress)
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
        label=breed,
        group=species,
        split=split,
        annotated=annotation is not None,
        width=record["width"],
        height=record["height"],
    )


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
        if reason is None:
            reason = _collision(name, seen)
        if reason is None:
            reason = _name_problem(name, annotations)
        if reason is not None:
            skipped.append(_skip(path, reason))
            continue
        seen[name.casefold()] = entry.name
        candidates.append((path, name))
    return candidates, skipped


def _utf8_problem(name: str) -> str | None:
    # Undecodable bytes would break every page and JSON file that names the image.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    return None


def _collision(name: str, seen: dict[str, str]) -> str | None:
    """Why a name cannot be used beside the names ``seen`` (casefolded -> file name)."""
    if name.casefold() not in seen:
        return None
    return (
        f"same name as {seen[name.casefold()]} apart from letter case or extension; "
        "their pages would collide"
    )


def _name_problem(name: str, annotations: dict[str, Annotation]) -> str | None:
    """Say why a file stem cannot name a labelled image, or None when it can."""
    problem = _utf8_problem(name)
    if problem is not None or name in annotations:
        return problem
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


def _skip(path: Path, reason: str) -> Skipped:
    log.warning("skipping %s: %s", display_path(path), reason)
    return Skipped(path=path, reason=reason)


def display_path(path: Path) -> str:
    """A printable form of a path whose name may hold undecodable bytes."""
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def _pillow_extensions() -> frozenset[str]:
    from PIL import Image

    return frozenset(extension.lower() for extension in Image.registered_extensions())
