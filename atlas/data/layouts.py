"""The folder layouts photos come in, each listed as (file, name, class, group, split).

* ``folders``: one subfolder per class, as ``keras.utils.image_dataset_from_directory`` and
  torchvision's ``ImageFolder`` read them; the classes are the sorted folder names (Keras'
  order) unless ``dataset.classes`` gives the order; an optional split level above them
  (``train/``, ``val/`` or ``validation/``, ``test/``) gives each photo its split; photos
  in folders below a class belong to it.
* ``metadata``: a ``metadata.csv`` or ``metadata.jsonl`` beside the photos with the columns
  ``file_name`` and ``label``, optionally ``split`` and ``group`` (Hugging Face
  ``imagefolder``).
* ``oxford``: the Oxford-IIIT Pet layout (``list.txt``, or breeds in the file names):
  :mod:`atlas.data.oxford`, listed by :mod:`atlas.data.scan`.
* ``flat``: a folder of unlabelled photos.

``auto`` tries them in that order (:func:`detect`). A photo's name is its path below the
folder without the extension (``cat/IMG_0001``): two photos of one file name in two class
folders stay two photos.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from atlas.data.oxford import breed_from_filename
from atlas.errors import AtlasError, ConfigError

log = logging.getLogger(__name__)

SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "validation", "test": "test"}
METADATA_FILES = ("metadata.csv", "metadata.jsonl")
# What Keras' image_dataset_from_directory reads; Pillow's other formats are added.
KERAS_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Enough to tell a folder of photos in detect(), without loading every Pillow plugin (that
# costs a no-op rebuild of the default site a tenth of a second); listing reads them all.
DETECT_EXTENSIONS = frozenset(KERAS_EXTENSIONS) | {".webp", ".tif", ".tiff", ".jpe", ".jfif"}


@dataclass(frozen=True)
class Listed:
    """One photo file of a layout, before it is decoded."""

    path: Path
    name: str
    label: str | None
    group: str | None = None
    split: str | None = None


@dataclass(frozen=True)
class Listing:
    """A folder's photos by its layout, the classes in their order, each class's group."""

    layout: str
    files: tuple[Listed, ...]
    classes: tuple[str, ...] = ()
    groups: dict[str, str] | None = None


def is_image_name(name: str, extensions: frozenset[str]) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions


def detect(root: Path, annotations: Path | None, extensions: frozenset[str], known_breeds) -> str:
    """The layout of a folder: folders, metadata, oxford or flat (in that order).

    Class folders are subfolders with photos, no photo beside them and no metadata file.
    Oxford is recognised by its annotation list (given, or ``annotations/list.txt`` beside
    the images folder) or by file names that all start with a known pets breed
    (``Abyssinian_12.jpg``); camera names such as ``IMG_1234.jpg`` are not breeds.
    """
    entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    folders = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    images = [e.name for e in entries if e.is_file() and is_image_name(e.name, extensions)]
    metadata = any((root / name).is_file() for name in METADATA_FILES)
    if (
        folders
        and not images
        and not metadata  # Hugging Face's imagefolder keeps its photos in folders too
        and any(_has_images(Path(f.path), extensions) for f in folders)
    ):
        return "folders"
    if metadata:
        return "metadata"
    if annotations is not None or (root.parent / "annotations" / "list.txt").is_file():
        return "oxford"
    if images and all(_breed_prefix(name) in known_breeds for name in images):
        return "oxford"
    return "flat"


def _breed_prefix(file_name: str) -> str | None:
    try:
        return breed_from_filename(os.path.splitext(file_name)[0])[0]
    except AtlasError:
        return None


def _has_images(folder: Path, extensions: frozenset[str]) -> bool:
    for _, _, files in os.walk(folder):
        if any(is_image_name(name, extensions) for name in files):
            return True
    return False


def list_folders(
    root: Path, extensions: frozenset[str], order: Sequence[str] | None = None
) -> Listing:
    """Class subfolders, with an optional split level above them.

    Raises:
        ConfigError: ``order`` (``dataset.classes``) names a folder that does not exist.
    """
    top = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    splits = [name for name in top if name.lower() in SPLIT_FOLDERS]
    if splits and len(splits) == len(top):
        bases = [(root / name, SPLIT_FOLDERS[name.lower()]) for name in splits]
    else:
        bases = [(root, None)]
    found = sorted({c for base, _ in bases for c in _subfolders(base)})
    classes = _class_order(found, order, root)
    files = []
    for base, split in bases:
        for label in classes:
            folder = base / label
            listed = _walk(folder, root, extensions, label, split) if folder.is_dir() else []
            if not listed and folder.is_dir():
                log.warning("%s: no photo in this class folder", folder)
            files += listed
    return Listing("folders", tuple(files), tuple(classes))


def _subfolders(base: Path) -> list[str]:
    return [e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith(".")]


def _class_order(found: list[str], order: Sequence[str] | None, root: Path) -> list[str]:
    if order is None:
        return found
    missing = [name for name in order if name not in found]
    if missing:
        raise ConfigError(
            [
                (
                    "dataset.classes",
                    f"names {missing[0]!r}, but {root} has no such class folder "
                    f"(its folders: {', '.join(found) or 'none'})",
                )
            ]
        )
    extra = [name for name in found if name not in order]
    if extra:
        log.warning("%s: class folder %r is not in dataset.classes: left out", root, extra[0])
    return list(order)


def _walk(
    folder: Path, root: Path, extensions: frozenset[str], label: str, split: str | None
) -> list[Listed]:
    listed = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if is_image_name(name, extensions):
                path = Path(current) / name
                listed.append(Listed(path, _name(path, root), label, None, split))
    return listed


def _name(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def list_flat(root: Path, extensions: frozenset[str]) -> Listing:
    """Every photo in the folder itself, without labels."""
    names = sorted(
        e.name for e in os.scandir(root) if e.is_file() and is_image_name(e.name, extensions)
    )
    return Listing("flat", tuple(Listed(root / n, _name(root / n, root), None) for n in names))


def list_metadata(root: Path, order: Sequence[str] | None = None) -> Listing:
    """The photos a ``metadata.csv`` or ``metadata.jsonl`` lists, with their labels.

    Raises:
        ConfigError: the file lacks ``file_name`` or ``label``, a listed file does not
            exist, or a label is not in ``order`` (``dataset.classes``).
    """
    path = next(root / name for name in METADATA_FILES if (root / name).is_file())
    rows = _read_rows(path)
    files, groups = [], {}
    for line, row in rows:
        where = f"{path.name} line {line}"
        relative = str(row.get("file_name") or "").strip()
        label = str(row.get("label") if row.get("label") is not None else "").strip()
        if not relative or not label:
            _refuse(f"{path}: {where} has no file_name or no label")
        target = (root / relative).resolve()
        if not target.is_relative_to(root.resolve()) or not target.is_file():
            _refuse(f"{path}: {where} lists {relative!r}, which is not a file in {root}")
        if order is not None and label not in order:
            _refuse(
                f"{path}: {where} has label {label!r}, which dataset.classes does not "
                f"name (it names: {', '.join(order)})"
            )
        group = str(row["group"]).strip() if row.get("group") not in (None, "") else None
        if group is not None:
            groups[label] = group
        split = str(row["split"]).strip() if row.get("split") not in (None, "") else None
        files.append(Listed(root / relative, _name(root / relative, root), label, group, split))
    classes = list(order) if order is not None else sorted({f.label for f in files})
    return Listing("metadata", tuple(files), tuple(classes), groups or None)


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        _refuse(f"{path}: cannot read ({error})")
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    _refuse(f"{path}: line {number} is not JSON ({error.msg})")
                rows.append((number, row if isinstance(row, dict) else {}))
        columns = set().union(*(row for _, row in rows)) if rows else set()
    else:
        reader = csv.DictReader(text.splitlines())
        columns = set(reader.fieldnames or ())
        rows = [(number, row) for number, row in enumerate(reader, start=2)]
    missing = [c for c in ("file_name", "label") if c not in columns]
    if missing:
        _refuse(
            f"{path}: no {missing[0]} column; a metadata file needs file_name and label "
            "(and optionally split and group)"
        )
    return rows


def _refuse(message: str) -> None:
    raise ConfigError([("dataset.images", message)])


def read_classes_file(path: Path) -> tuple[str, ...]:
    """One class name per line (blank lines and surrounding spaces ignored).

    Raises:
        ConfigError: the file cannot be read or names no class.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([("dataset.classes", f"{path}: cannot read ({error})")]) from None
    names = tuple(line.strip() for line in lines if line.strip())
    if not names:
        raise ConfigError([("dataset.classes", f"{path}: names no class")])
    return names


def read_groups(path: Path) -> dict[str, str]:
    """``class<TAB>group`` per line.

    Raises:
        ConfigError: a line without a tab, or the file cannot be read.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([("dataset.groups", f"{path}: cannot read ({error})")]) from None
    groups = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ConfigError(
                [("dataset.groups", f"{path}: line {number} is not CLASS<TAB>GROUP: {line!r}")]
            )
        groups[parts[0].strip()] = parts[1].strip()
    return groups
