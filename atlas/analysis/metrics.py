"""How well a model recognises the pets: breed and species accuracy, in its own labels.

A prediction is right for a breed when one of the model's classes that name the breed
(:class:`~atlas.model.labels.LabelSpace`: for ImageNet, ``data/breeds.json``; for a breed
classifier, the breed's own output) is among its top k classes; breeds the model has no
class for are left out of breed accuracy. Species accuracy covers every image: the top-1
class must stand for the image's species (for ImageNet, a domestic class of it: a wild cat
or a fox is wrong for both).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from atlas.data.breeds import BreedMap
from atlas.data.oxford import breed_title
from atlas.model.labels import LabelSpace

log = logging.getLogger(__name__)

TOP_K = 5
MOST_PREDICTED = 3


@dataclass(frozen=True)
class Prediction:
    """A model's answer for one image.

    Attributes:
        image: the image name (file stem).
        breed: the true breed key.
        species: the true species, ``"cat"`` or ``"dog"``.
        top: class indices, best first (:data:`TOP_K`, or every class of a smaller model).
        probabilities: the probability of each class in ``top``.
    """

    image: str
    breed: str
    species: str
    top: tuple[int, ...]
    probabilities: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.top:
            raise ValueError(f"{self.image}: need at least the top class")
        if len(self.probabilities) != len(self.top):
            raise ValueError(f"{self.image}: one probability per class in top is needed")


@dataclass(frozen=True)
class ClassCount:
    """How often a class was the top-1 answer."""

    index: int
    label: str
    count: int


@dataclass(frozen=True)
class BreedMetrics:
    """Accuracy for the images of one breed.

    Attributes:
        breed: the breed key.
        title: display name.
        species: the breed's species.
        n: number of images.
        mapped: whether the model has a class for the breed.
        top1: breed top-1 accuracy (the breed's recall), None when unmapped.
        top5: breed top-5 accuracy, None when unmapped.
        species_accuracy: share of images whose top-1 class has the right species.
        most_predicted: the most frequent top-1 classes, best first.
        misclassified: image names whose top-1 is wrong: the breed when mapped, the species
            otherwise.
        precision: of the images whose top-1 class names this breed, the share that are of
            it; None when no image was given it.
    """

    breed: str
    title: str
    species: str
    n: int
    mapped: bool
    top1: float | None
    top5: float | None
    species_accuracy: float
    most_predicted: tuple[ClassCount, ...]
    misclassified: tuple[str, ...]
    precision: float | None = None


@dataclass(frozen=True)
class Confusion:
    """A mapped breed, a wrong top-1 class given for it, and how often."""

    breed: str
    predicted: int
    label: str
    count: int


@dataclass(frozen=True)
class PetsMetrics:
    """The whole evaluation.

    Attributes:
        n_images: all images.
        n_mapped: images whose breed has a class (the breed accuracy denominator).
        top1: breed top-1 accuracy over mapped images, None when there are none.
        top5: breed top-5 accuracy over mapped images, None when there are none.
        species_accuracy: over all images, None when there are none.
        breeds: per-breed results, in breed-map order, then unknown breeds by key.
        confusions: wrong top-1 classes of mapped breeds, most frequent first.
        matrix: for a breed classifier, counts[true breed][predicted breed] over
            ``matrix_breeds``; empty otherwise.
    """

    n_images: int
    n_mapped: int
    top1: float | None
    top5: float | None
    species_accuracy: float | None
    breeds: tuple[BreedMetrics, ...]
    confusions: tuple[Confusion, ...]
    matrix: tuple[tuple[int, ...], ...] = ()
    matrix_breeds: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """Return plain JSON-serialisable data (tuples become lists)."""
        return _plain(dataclasses.asdict(self))


def is_breed_correct(prediction: Prediction, space: LabelSpace, k: int) -> bool | None:
    """Whether one of the model's classes for the image's breed is in the top k.

    Args:
        prediction: the model's answer.
        space: the model's label space.
        k: how many of the best classes count, 1 to ``TOP_K`` (fewer when the model has
            fewer classes: then all of them count).

    Returns:
        True or False, or None when the model has no class for the breed.

    Raises:
        ValueError: ``k`` is out of range.
    """
    if not 1 <= k <= max(TOP_K, len(prediction.top)):
        raise ValueError(f"k must be between 1 and {max(TOP_K, len(prediction.top))}, not {k}")
    wanted = space.breed_classes(prediction.breed)
    if not wanted:
        return None
    return any(index in wanted for index in prediction.top[:k])


def is_species_correct(prediction: Prediction, space: LabelSpace) -> bool:
    """Whether the top-1 class stands for the image's species."""
    return space.species_of(prediction.top[0]) == prediction.species


def pets_metrics(
    predictions: Sequence[Prediction], space: LabelSpace, breeds: BreedMap
) -> PetsMetrics:
    """Compute breed and species accuracy, per breed and overall.

    Args:
        predictions: one per image.
        space: the model's label space.
        breeds: the breed mapping (breed titles and species, and the breed order).

    Returns:
        The metrics; breeds the model has no class for count as unmapped.
    """
    by_breed: dict[str, list[Prediction]] = defaultdict(list)
    for prediction in predictions:
        by_breed[prediction.breed].append(prediction)
    unknown = sorted(set(by_breed) - set(breeds.breeds))
    if unknown:
        log.warning("breeds missing from the breed mapping, counted as unmapped: %s", unknown)
    order = [key for key in breeds.breeds if key in by_breed] + unknown
    top1_counts = Counter(p.top[0] for p in predictions)
    per_breed = tuple(
        _breed_metrics(key, by_breed[key], space, breeds, top1_counts) for key in order
    )

    mapped = [p for p in predictions if is_breed_correct(p, space, 1) is not None]
    confusions = Counter((p.breed, p.top[0]) for p in mapped if not is_breed_correct(p, space, 1))
    matrix, matrix_breeds = _matrix(predictions, space)
    return PetsMetrics(
        n_images=len(predictions),
        n_mapped=len(mapped),
        top1=_share(mapped, lambda p: is_breed_correct(p, space, 1)),
        top5=_share(mapped, lambda p: is_breed_correct(p, space, TOP_K)),
        species_accuracy=_share(
            [p for p in predictions if p.species], lambda p: is_species_correct(p, space)
        ),
        breeds=per_breed,
        confusions=tuple(
            Confusion(breed, index, space.label(index), count)
            for (breed, index), count in sorted(
                confusions.items(), key=lambda item: (-item[1], item[0][0], item[0][1])
            )
        ),
        matrix=matrix,
        matrix_breeds=matrix_breeds,
    )


def _matrix(
    predictions: Sequence[Prediction], space: LabelSpace
) -> tuple[tuple[tuple[int, ...], ...], tuple[str, ...]]:
    """Rows: true breed; columns: predicted breed, in output order (breed classifiers)."""
    if not space.is_breed_classifier:
        return (), ()
    order = tuple(next(iter(b)) for b in space.class_breeds)
    row = {breed: i for i, breed in enumerate(order)}
    counts = [[0] * len(order) for _ in order]
    for p in predictions:
        if p.breed in row:
            counts[row[p.breed]][p.top[0]] += 1
    return tuple(tuple(r) for r in counts), order


def _breed_metrics(
    key: str,
    predictions: list[Prediction],
    space: LabelSpace,
    breeds: BreedMap,
    top1_counts: Counter,
) -> BreedMetrics:
    breed = breeds.breeds.get(key)
    classes = space.breed_classes(key)
    mapped = bool(classes)
    counts = Counter(p.top[0] for p in predictions)
    most = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:MOST_PREDICTED]
    if mapped:
        wrong = [p.image for p in predictions if not is_breed_correct(p, space, 1)]
    else:
        wrong = [p.image for p in predictions if not is_species_correct(p, space)]
    given = sum(top1_counts[i] for i in classes)
    right = sum(1 for p in predictions if p.top[0] in classes)
    return BreedMetrics(
        breed=key,
        title=breed.title if breed else breed_title(key),
        species=breed.species if breed else predictions[0].species,
        n=len(predictions),
        mapped=mapped,
        top1=_share(predictions, lambda p: is_breed_correct(p, space, 1)) if mapped else None,
        top5=_share(predictions, lambda p: is_breed_correct(p, space, TOP_K)) if mapped else None,
        species_accuracy=_share(predictions, lambda p: is_species_correct(p, space)) or 0.0,
        most_predicted=tuple(ClassCount(index, space.label(index), count) for index, count in most),
        misclassified=tuple(wrong),
        precision=right / given if mapped and given else None,
    )


def _share(items: Sequence[Prediction], test: Callable[[Prediction], bool | None]) -> float | None:
    if not items:
        return None
    return sum(1 for item in items if test(item)) / len(items)


def _plain(value: object) -> object:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
