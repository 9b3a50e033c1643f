"""A model's own label space: what each of its outputs names, in pets terms.

``models[].classes`` says what the outputs are: Keras' 1000 ImageNet classes (mapped to
breeds and species by ``data/breeds.json``), the dataset's 37 breeds in ``list.txt``
CLASS-ID order, the two species, or a labels file. Every class gets the breeds and the
species it stands for, so accuracy, confusions and the second Grad-CAM map are computed
in the model's own label space. Pure Python: planning uses it without TensorFlow.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from atlas.data.breeds import SPECIES, BreedMap
from atlas.data.oxford import breed_title, read_annotation_list
from atlas.errors import AtlasError

log = logging.getLogger(__name__)

IMAGENET_OUTPUTS = 1000


@dataclass(frozen=True)
class LabelSpace:
    """The classes of one model.

    Attributes:
        kind: ``imagenet``, ``breeds``, ``species`` or ``file``.
        labels: one display label per output.
        class_breeds: per output, the dataset breeds it names (empty: none).
        class_species: per output, ``cat``, ``dog`` or None.
        source: where the labels came from, for messages and pages.
    """

    kind: str
    labels: tuple[str, ...]
    class_breeds: tuple[frozenset[str], ...]
    class_species: tuple[str | None, ...]
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class {index}"

    def breed_classes(self, breed: str) -> tuple[int, ...]:
        """The outputs that name a breed, in output order."""
        return tuple(i for i, breeds in enumerate(self.class_breeds) if breed in breeds)

    def species_of(self, index: int) -> str | None:
        return self.class_species[index] if 0 <= index < len(self.class_species) else None

    @property
    def names_breeds(self) -> bool:
        """Whether any output stands for a breed (breed accuracy is then measured)."""
        return any(self.class_breeds)

    @property
    def is_breed_classifier(self) -> bool:
        """One output per breed: precision, recall and a confusion matrix make sense."""
        return self.kind in ("breeds", "dataset", "file") and all(
            len(b) == 1 for b in self.class_breeds
        )

    def true_class(self, breed: str, species: str) -> int:
        """The output for an image's true label (the second Grad-CAM map), -1 if none."""
        found = self.breed_classes(breed)
        if found:
            return found[0]
        if not self.names_breeds:
            matches = [i for i, s in enumerate(self.class_species) if s == species]
            if len(matches) == 1:
                return matches[0]
        return -1


def normalise(label: str) -> str:
    """A label compared with breed and species names: any case, ``_`` or space."""
    return re.sub(r"[\s_]+", "_", label.strip()).lower()


def imagenet_space(breeds: BreedMap) -> LabelSpace:
    """Keras' ImageNet classes, with breeds and species from the breed mapping."""
    by_class: list[set[str]] = [set() for _ in breeds.classes]
    for key, breed in breeds.breeds.items():
        for index in breed.class_indices:
            by_class[index].add(key)
    return LabelSpace(
        kind="imagenet",
        labels=tuple(breeds.label(i) for i in range(len(breeds.classes))),
        class_breeds=tuple(frozenset(b) for b in by_class),
        class_species=tuple(breeds.species_of_class(i) for i in range(len(breeds.classes))),
        source="ImageNet class index",
    )


def breed_order(annotations: Path | None, breeds: BreedMap) -> list[str]:
    """The dataset's breeds in list.txt CLASS-ID order (CLASS-ID 1 is output 0).

    Without an annotation list, the breed mapping's order (which is list.txt's) is used.

    Raises:
        AtlasError: the list gives two breeds one CLASS-ID, or leaves an id out.
    """
    if annotations is None:
        return list(breeds.breeds)
    by_id: dict[int, str] = {}
    for annotation in read_annotation_list(annotations).values():
        known = by_id.setdefault(annotation.class_id, annotation.breed)
        if known != annotation.breed:
            raise AtlasError(
                f"{annotations}: CLASS-ID {annotation.class_id} is both "
                f"{known!r} and {annotation.breed!r}"
            )
    missing = sorted(set(range(1, max(by_id, default=0) + 1)) - set(by_id))
    if missing:
        raise AtlasError(
            f"{annotations}: no image has CLASS-ID {missing[0]}: cannot number "
            "the breeds for classes: breeds"
        )
    return [by_id[i] for i in sorted(by_id)]


def _species_of_breed(breeds: BreedMap, key: str) -> str | None:
    breed = breeds.breeds.get(key)
    if breed is not None:
        return breed.species or None
    return "cat" if key[:1].isupper() else "dog"  # the dataset's file-name convention


def breeds_space(
    order: Sequence[str],
    breeds: BreedMap,
    source: str = "the dataset's breeds (list.txt CLASS-ID order)",
    kind: str = "breeds",
) -> LabelSpace:
    """One output per dataset class (the pets' breeds, or any dataset's classes)."""
    return LabelSpace(
        kind=kind,
        labels=tuple(
            breeds.breeds[k].title if k in breeds.breeds else breed_title(k) for k in order
        ),
        class_breeds=tuple(frozenset({k}) for k in order),
        class_species=tuple(_species_of_breed(breeds, k) for k in order),
        source=source,
    )


def species_space() -> LabelSpace:
    return LabelSpace(
        kind="species",
        labels=SPECIES,
        class_breeds=(frozenset(),) * 2,
        class_species=SPECIES,
        source="species (cat, dog)",
    )


def file_space(path: Path, order: Sequence[str], breeds: BreedMap) -> LabelSpace:
    """A labels file: one label per line, in output order; blank lines are not allowed.

    Labels equal to a breed or species name (any case, ``_`` or space) are matched to it.

    Raises:
        AtlasError: the file cannot be read, is empty or has a blank line.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise AtlasError(
            f"{path}: cannot read the labels file ({getattr(error, 'strerror', None) or error})"
        ) from None
    while lines and not lines[-1].strip():
        lines.pop()
    blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if not lines or blank:
        where = f"line {blank[0]} is blank" if blank else "it is empty"
        raise AtlasError(
            f"{path}: {where}; a labels file has one label per line, in the "
            "order of the model's outputs"
        )
    by_name = {normalise(k): k for k in order}
    by_name.update({normalise(b.title): k for k, b in breeds.breeds.items()})
    class_breeds, class_species = [], []
    for line in lines:
        key = by_name.get(normalise(line))
        class_breeds.append(frozenset({key}) if key else frozenset())
        species = normalise(line) if normalise(line) in SPECIES else None
        class_species.append(_species_of_breed(breeds, key) if key else species)
    return LabelSpace(
        kind="file",
        labels=tuple(line.strip() for line in lines),
        class_breeds=tuple(class_breeds),
        class_species=tuple(class_species),
        source=str(path),
    )


def label_space(
    classes: str | Path | None,
    outputs: int | None,
    breeds: BreedMap,
    annotations: Path | None,
    dataset_order: str | None = None,
) -> LabelSpace | None:
    """The label space ``models[].classes`` asks for; None for a model without classes.

    Args:
        classes: the configured value (None: ImageNet when there are 1000 outputs).
        outputs: the model's number of outputs, None for a feature extractor.
        breeds: the dataset's classes against ImageNet's (the pets' breed map for the
            Oxford layout).
        dataset_order: where another layout's class order comes from (for pages), None
            for the Oxford layout.

    Raises:
        AtlasError: a labels file or the annotation list cannot be used.
    """
    if outputs is None or classes == "none":
        return None
    if classes is None:
        return imagenet_space(breeds) if outputs == IMAGENET_OUTPUTS else None
    if classes == "imagenet":
        return imagenet_space(breeds)
    if classes == "species":
        return species_space()
    order = breed_order(annotations, breeds)
    if classes in ("breeds", "dataset"):
        if dataset_order is None:
            return breeds_space(order, breeds)
        return breeds_space(
            order, breeds, f"the dataset's classes ({dataset_order})", kind="dataset"
        )
    return file_space(Path(classes), order, breeds)


def count_problem(
    model_id: str,
    classes: str | Path | None,
    outputs: int | None,
    space: LabelSpace | None,
    dataset_classes: int = 0,
) -> str | None:
    """Why the labels do not fit the model's outputs, or None when they do."""
    if outputs is None:
        if classes not in (None, "none"):
            return (
                f"model {model_id!r} has no classification head (a feature extractor), "
                f"but classes is {classes}: remove classes or give the model a head"
            )
        return None
    if space is None:
        if classes == "none":
            return None
        if outputs == dataset_classes:
            return (
                f"model {model_id!r} has {outputs} outputs, as many as the dataset has "
                "classes: set models[].classes: dataset if they are the dataset's classes in "
                "its order (a labels file or none otherwise)"
            )
        return (
            f"model {model_id!r} has {outputs} outputs, not ImageNet's 1000: set "
            "models[].classes to breeds, species or a labels file with one label per "
            "output (or none to show no predictions)"
        )
    if len(space) != outputs:
        return (
            f"model {model_id!r} has {outputs} outputs but classes ({space.source}) "
            f"gives {len(space)} labels: they must match one to one"
        )
    return None
