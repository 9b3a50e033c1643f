"""The ImageNet class index and the mapping of pet breeds to ImageNet classes.

``data/breeds.json`` says, for each Oxford-IIIT Pet breed, which ImageNet classes name it
(possibly none) and which ImageNet classes are cats and dogs; this module loads it and
checks every WordNet id against the class index.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from atlas.errors import AtlasError

log = logging.getLogger(__name__)

IMAGENET_CLASSES = 1000
SPECIES = ("cat", "dog")
_BREED_FIELDS = {"title": str, "species": str, "imagenet": list, "note": str}


@dataclass(frozen=True)
class Breed:
    """One pet breed and the ImageNet classes that count as recognising it.

    Attributes:
        key: the breed as written in the file names, e.g. ``"american_pit_bull_terrier"``.
        title: display name.
        species: ``"cat"`` or ``"dog"``.
        wnids: WordNet ids of the matching ImageNet classes; empty when ImageNet has none.
        class_indices: the same classes as indices into the 1000 outputs.
        note: why the mapping is what it is.
    """

    key: str
    title: str
    species: str
    wnids: tuple[str, ...]
    class_indices: tuple[int, ...]
    note: str

    @property
    def mapped(self) -> bool:
        """Whether ImageNet has a class for this breed."""
        return bool(self.class_indices)


@dataclass(frozen=True)
class BreedMap:
    """All breeds, the species of ImageNet classes, and the class labels.

    Attributes:
        breeds: breed key to breed, in file order.
        species_classes: species to the indices of its ImageNet classes.
        classes: the class index, ``(wnid, label)`` per output.
    """

    breeds: dict[str, Breed]
    species_classes: dict[str, frozenset[int]]
    classes: tuple[tuple[str, str], ...]

    def species_of_class(self, index: int) -> str | None:
        """Return ``"cat"`` or ``"dog"`` for a domestic cat or dog class, else None.

        A map without species classes (another dataset's, :mod:`atlas.data.classmap`)
        gives the group of the dataset class the ImageNet class stands for."""
        for species, indices in self.species_classes.items():
            if index in indices:
                return species
        if not self.species_classes:
            for breed in self.breeds.values():
                if index in breed.class_indices and breed.species:
                    return breed.species
        return None

    def label(self, index: int) -> str:
        """Return a readable label for a class index, e.g. ``"Persian cat"``."""
        return self.classes[index][1].replace("_", " ")


def load_class_index(path: Path) -> list[tuple[str, str]]:
    """Load Keras' ``imagenet_class_index.json``.

    Args:
        path: the JSON file, ``{"0": ["n01440764", "tench"], ...}``.

    Returns:
        ``(wnid, label)`` for indices 0-999, in order.

    Raises:
        AtlasError: the file is missing, not JSON, or not exactly 1000 entries of
            ``[wnid, label]`` keyed "0" to "999".
    """
    raw = _read_json(path)
    expected = {str(index) for index in range(IMAGENET_CLASSES)}
    if not isinstance(raw, dict) or set(raw) != expected:
        raise AtlasError(f'{path}: expected {IMAGENET_CLASSES} entries keyed "0" to "999"')
    classes: list[tuple[str, str]] = []
    for index in range(IMAGENET_CLASSES):
        entry = raw[str(index)]
        if not (
            isinstance(entry, list) and len(entry) == 2 and all(isinstance(s, str) for s in entry)
        ):
            raise AtlasError(f'{path}: entry "{index}" must be [wnid, label], not {entry!r}')
        classes.append((entry[0], entry[1]))
    return classes


def load_breeds(path: Path, class_index: list[tuple[str, str]]) -> BreedMap:
    """Load and validate the breed mapping.

    Args:
        path: ``breeds.json`` with ``"species_classes"`` and ``"breeds"``.
        class_index: from :func:`load_class_index`.

    Returns:
        The validated mapping.

    Raises:
        AtlasError: the file cannot be read, or any record is invalid; every problem is
            reported, each naming its key.
    """
    raw = _read_json(path)
    index_of = {wnid: index for index, (wnid, _) in enumerate(class_index)}
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise AtlasError(f"{path}: expected a JSON object")
    species_classes = _species_classes(raw.get("species_classes"), index_of, problems)
    records = raw.get("breeds")
    if not isinstance(records, dict) or not records:
        problems.append("breeds: expected an object of breed records")
        records = {}
    breeds: dict[str, Breed] = {}
    for key, record in records.items():
        breed = _breed(key, record, index_of, species_classes, problems)
        if breed is not None:
            breeds[key] = breed
    if problems:
        lines = "\n".join(f"  - {problem}" for problem in problems)
        raise AtlasError(f"{path}: {len(problems)} problem(s) in the breed mapping:\n{lines}")
    return BreedMap(breeds=breeds, species_classes=species_classes, classes=tuple(class_index))


def _species_classes(
    raw: object, index_of: dict[str, int], problems: list[str]
) -> dict[str, frozenset[int]]:
    if not isinstance(raw, dict):
        problems.append("species_classes: expected an object with 'cat' and 'dog' lists")
        return {species: frozenset() for species in SPECIES}
    result: dict[str, frozenset[int]] = {}
    for species in SPECIES:
        wnids = raw.get(species)
        key = f"species_classes.{species}"
        if not isinstance(wnids, list) or not wnids:
            problems.append(f"{key}: expected a non-empty list of WordNet ids")
            wnids = []
        result[species] = frozenset(_indices(key, wnids, index_of, problems))
    overlap = result["cat"] & result["dog"]
    if overlap:
        problems.append(f"species_classes: classes {sorted(overlap)} are both cat and dog")
    return result


def _breed(
    key: str,
    record: object,
    index_of: dict[str, int],
    species_classes: dict[str, frozenset[int]],
    problems: list[str],
) -> Breed | None:
    where = f"breeds.{key}"
    if not isinstance(record, dict):
        problems.append(f"{where}: expected an object")
        return None
    found = len(problems)
    for field, kind in _BREED_FIELDS.items():
        if field not in record:
            problems.append(f"{where}: missing field {field!r}")
        elif not isinstance(record[field], kind):
            problems.append(f"{where}.{field}: expected {kind.__name__}")
    for field in sorted(set(record) - set(_BREED_FIELDS)):
        problems.append(f"{where}: unknown field {field!r}")
    if len(problems) > found:
        return None
    species = record["species"]
    if species not in SPECIES:
        problems.append(f"{where}.species: expected 'cat' or 'dog', not {species!r}")
        return None
    indices = _indices(f"{where}.imagenet", record["imagenet"], index_of, problems)
    if len(problems) > found:
        return None
    for wnid, index in zip(record["imagenet"], indices, strict=True):
        # A cat breed mapped to a dog class would count right answers as wrong species.
        if index not in species_classes.get(species, frozenset()):
            problems.append(f"{where}.imagenet: {wnid} is not one of the {species} classes")
    if len(problems) > found:
        return None
    return Breed(
        key=key,
        title=record["title"],
        species=species,
        wnids=tuple(record["imagenet"]),
        class_indices=tuple(indices),
        note=record["note"],
    )


def _indices(
    key: str, wnids: list[object], index_of: dict[str, int], problems: list[str]
) -> list[int]:
    indices = []
    for wnid in wnids:
        if not isinstance(wnid, str) or wnid not in index_of:
            problems.append(f"{key}: {wnid!r} is not a WordNet id of the ImageNet class index")
        else:
            indices.append(index_of[wnid])
    return indices


def _read_json(path: Path) -> object:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise AtlasError(f"{path}: cannot read ({error.strerror or error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AtlasError(f"{path}: not valid JSON ({error})") from None
