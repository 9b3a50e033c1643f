"""The Oxford-IIIT Pet annotations and the scan of an image folder.

The scan decides which files a build uses: every image is read and fully decoded once (the
result is memoised by content digest, so a rebuild decodes nothing new), a bad file is
skipped with one warning, and the order is the sorted file names so that builds are
deterministic.
"""

from __future__ import annotations

import logging
import os
import re
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from atlas.cache import file_digest, file_identity
from atlas.errors import AtlasError, BadImageError

if TYPE_CHECKING:  # numpy and Pillow load only when images are decoded
    import numpy as np

log = logging.getLogger(__name__)

SPECIES_CODES = {"1": "cat", "2": "dog"}
SPLIT_FILES = (("trainval", "trainval.txt"), ("test", "test.txt"))

_NAME_PATTERN = re.compile(r"^(?P<breed>.+?)_(?P<number>\d+)$")
# Extensions always tried, whatever Pillow registers on this machine.
_IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})


@dataclass(frozen=True)
class Annotation:
    """One line of the dataset's list.txt.

    Attributes:
        class_id: 1-37, the breed's index over both species.
        species: ``"cat"`` or ``"dog"``.
        breed_id: the breed's index within its species.
        breed: the breed key from the image name, e.g. ``"american_pit_bull_terrier"``.
    """

    class_id: int
    species: str
    breed_id: int
    breed: str


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


def read_annotation_list(path: Path) -> dict[str, Annotation]:
    """Parse a list.txt, trainval.txt or test.txt file.

    Each line is ``name CLASS-ID SPECIES BREED-ID``; ``#`` lines are comments. The header's
    id ranges are deliberately not read: the official header gets them wrong.

    Args:
        path: the annotation file.

    Returns:
        Image name (file stem) to annotation, in file order.

    Raises:
        AtlasError: the file cannot be read, or a line is malformed (named by line number).
    """
    try:
        known = file_identity(path)
        if known in _ANNOTATIONS:  # the scan and a breeds model's label space both read it
            return dict(_ANNOTATIONS[known])
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AtlasError(f"{path}: cannot read annotation list ({error})") from None
    annotations = _parse_annotations(path, text)
    _ANNOTATIONS[known] = annotations
    return dict(annotations)


_ANNOTATIONS: dict[tuple, dict[str, Annotation]] = {}  # by file_identity, in this process


def _parse_annotations(path: Path, text: str) -> dict[str, Annotation]:
    annotations: dict[str, Annotation] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        annotation, problem = _parse_annotation_line(stripped)
        if problem:
            raise AtlasError(f"{path}, line {number}: {problem}: {stripped!r}")
        name = stripped.split()[0]
        if name in annotations:
            raise AtlasError(f"{path}, line {number}: {name} is listed twice")
        annotations[name] = annotation
    return annotations


def read_splits(annotations_dir: Path) -> dict[str, str]:
    """Read which split each image belongs to.

    Args:
        annotations_dir: the folder holding trainval.txt and test.txt; either may be absent.

    Returns:
        Image name to ``"trainval"`` or ``"test"``.

    Raises:
        AtlasError: a split file is malformed.
    """
    splits: dict[str, str] = {}
    for split, file_name in SPLIT_FILES:
        path = Path(annotations_dir) / file_name
        if not path.is_file():
            continue
        for name in read_annotation_list(path):
            if splits.get(name, split) != split:
                log.warning("%s is in both %s and %s; using %s", name, splits[name], split, split)
            splits[name] = split
    return splits


def breed_from_filename(stem: str) -> tuple[str, str]:
    """Derive breed and species from an Oxford-style file name.

    ``"Abyssinian_101"`` gives ``("Abyssinian", "cat")``: the dataset names cat breeds with a
    capital letter and dog breeds in lower case.

    Args:
        stem: the file name without extension.

    Returns:
        ``(breed key, species)``.

    Raises:
        AtlasError: the name is not ``<breed>_<number>``.
    """
    match = _NAME_PATTERN.match(stem)
    if match is None or not match.group("breed")[0].isalpha():
        raise AtlasError(
            f"{stem}: file name does not say the breed (expected <breed>_<number>, "
            "e.g. Abyssinian_12.jpg)"
        )
    breed = match.group("breed")
    return breed, "cat" if breed[0].isupper() else "dog"


def breed_title(breed: str) -> str:
    """Turn a breed key into a display name.

    Args:
        breed: e.g. ``"american_pit_bull_terrier"``.

    Returns:
        e.g. ``"American Pit Bull Terrier"``; existing capitals are kept.
    """
    return " ".join(word[:1].upper() + word[1:] for word in breed.split("_") if word)


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
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        checks = pool.map(lambda path: _check_file(path, memo), (p for p, _ in candidates))
        if progress:
            from tqdm import tqdm

            checks = tqdm(checks, total=len(candidates), desc="scan", unit="img")
        results = list(checks)

    images: list[DatasetImage] = []
    for (path, name), (digest, record) in zip(candidates, results, strict=True):
        if digest is not None:
            memo[digest] = record
        if not record["ok"]:
            skipped.append(_skip(path, record["reason"]))
            continue
        annotation = annotations.get(name)
        breed, species = (
            (annotation.breed, annotation.species) if annotation else breed_from_filename(name)
        )
        images.append(
            DatasetImage(
                name=name,
                path=path,
                digest=digest,
                breed=breed,
                species=species,
                split=splits.get(name),
                annotated=annotation is not None,
                width=record["width"],
                height=record["height"],
            )
        )
    skipped.sort(key=lambda item: item.path.name)
    return DatasetScan(images=tuple(images), skipped=tuple(skipped))


def iter_batches(
    images: Sequence[DatasetImage],
    size: tuple[int, int],
    batch_size: int = 64,
    workers: int = 2,
) -> Iterator[tuple[list[DatasetImage], np.ndarray]]:
    """Decode images in parallel and yield them as network-input batches, in order.

    At most two batches of images are decoded ahead of the consumer, so memory does not
    grow with the dataset. An image that fails to decode (it changed since the scan) is
    logged once and left out; batches are refilled, so only the last one is short.

    Args:
        images: the images, e.g. ``scan.images``.
        size: ``(height, width)`` of the network input.
        batch_size: images per batch.
        workers: decoding threads.

    Yields:
        ``(images in the batch, uint8 array of shape (N, height, width, 3))``, N >= 1.

    Raises:
        ValueError: ``batch_size`` or ``workers`` is not positive.
    """
    import numpy as np

    from atlas.images import load_array

    if batch_size < 1 or workers < 1:
        raise ValueError(f"batch_size and workers must be positive: {batch_size}, {workers}")
    window = 2 * batch_size
    queue: deque[tuple[DatasetImage, Future[np.ndarray]]] = deque()
    pending = iter(images)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:

        def refill() -> None:
            for image in pending:
                queue.append((image, pool.submit(load_array, image.path, size)))
                if len(queue) >= window:
                    return

        refill()
        batch: list[DatasetImage] = []
        arrays: list[np.ndarray] = []
        while queue:
            image, future = queue.popleft()
            try:
                arrays.append(future.result())
            except BadImageError as error:
                log.warning("skipping %s: %s", _display(image.path), error.reason)
                continue
            finally:
                refill()
            batch.append(image)
            if len(batch) == batch_size:
                yield batch, np.stack(arrays)
                batch, arrays = [], []
        if batch:
            yield batch, np.stack(arrays)
    finally:
        # A consumer that stops early must not wait for the whole prefetch window.
        pool.shutdown(wait=True, cancel_futures=True)


def _parse_annotation_line(line: str) -> tuple[Annotation | None, str | None]:
    fields = line.split()
    if len(fields) != 4:
        return None, f"expected 4 fields (name CLASS-ID SPECIES BREED-ID), found {len(fields)}"
    name, class_id, species, breed_id = fields
    if not (class_id.isdigit() and breed_id.isdigit()) or int(class_id) < 1 or int(breed_id) < 1:
        return None, "CLASS-ID and BREED-ID must be positive integers"
    if species not in SPECIES_CODES:
        return None, f"SPECIES must be 1 (cat) or 2 (dog), not {species!r}"
    match = _NAME_PATTERN.match(name)
    if match is None:
        return None, f"image name {name!r} is not <breed>_<number>"
    return Annotation(int(class_id), SPECIES_CODES[species], int(breed_id), match["breed"]), None


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
                return f"symbolic link to {_display(target)}, outside the image folder"
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
    from atlas.images import open_rgb

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
    log.warning("skipping %s: %s", _display(path), reason)
    return Skipped(path=path, reason=reason)


def _display(path: Path) -> str:
    """A printable form of a path whose name may hold undecodable bytes."""
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def _pillow_extensions() -> frozenset[str]:
    from PIL import Image

    return frozenset(extension.lower() for extension in Image.registered_extensions())
