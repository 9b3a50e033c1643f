"""The Oxford-IIIT Pet layout: ``list.txt`` (name, class id, species, breed id), the
``trainval.txt``/``test.txt`` splits beside it, and breed names read from file names
(``Abyssinian_12.jpg``: capitalised breeds are cats)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from atlas.cache.keys import file_identity
from atlas.errors import AtlasError

log = logging.getLogger(__name__)

SPECIES_CODES = {"1": "cat", "2": "dog"}
SPLIT_FILES = (("trainval", "trainval.txt"), ("test", "test.txt"))

_NAME_PATTERN = re.compile(r"^(?P<breed>.+?)_(?P<number>\d+)$")


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


def breed_title(breed: str | None) -> str:
    """Turn a breed key into a display name.

    Args:
        breed: e.g. ``"american_pit_bull_terrier"``.

    Returns:
        e.g. ``"American Pit Bull Terrier"``; existing capitals are kept.
    """
    if not breed:
        return ""  # an unlabelled photo (a flat folder)
    return " ".join(word[:1].upper() + word[1:] for word in breed.split("_") if word)


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
