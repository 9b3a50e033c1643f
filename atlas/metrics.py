"""How well an ImageNet model recognises the pets: breed and species accuracy.

A prediction is right for a breed when one of the breed's ImageNet classes (see
``data/breeds.json``) is among its top k classes; breeds ImageNet has no class for are left
out of breed accuracy. Species accuracy covers every image: the top-1 class must be one of
the domestic classes of the image's species (a wild cat or a fox is wrong for both).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from atlas.breeds import BreedMap
from atlas.dataset import breed_title

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
        top: ImageNet class indices, best first, at least :data:`TOP_K`.
        probabilities: the probability of each class in ``top``.
    """

    image: str
    breed: str
    species: str
    top: tuple[int, ...]
    probabilities: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.top) < TOP_K:
            raise ValueError(f"{self.image}: need the top {TOP_K} classes, got {len(self.top)}")
        if len(self.probabilities) != len(self.top):
            raise ValueError(f"{self.image}: one probability per class in top is needed")


@dataclass(frozen=True)
class ClassCount:
    """How often an ImageNet class was the top-1 answer."""

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
        mapped: whether ImageNet has a class for the breed.
        top1: breed top-1 accuracy, None when unmapped.
        top5: breed top-5 accuracy, None when unmapped.
        species_accuracy: share of images whose top-1 class has the right species.
        most_predicted: the most frequent top-1 classes, best first.
        misclassified: image names whose top-1 is wrong: the breed when mapped, the species
            otherwise.
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
        n_mapped: images whose breed has ImageNet classes (the breed accuracy denominator).
        top1: breed top-1 accuracy over mapped images, None when there are none.
        top5: breed top-5 accuracy over mapped images, None when there are none.
        species_accuracy: over all images, None when there are none.
        breeds: per-breed results, in breed-map order, then unknown breeds by key.
        confusions: wrong top-1 classes of mapped breeds, most frequent first.
    """

    n_images: int
    n_mapped: int
    top1: float | None
    top5: float | None
    species_accuracy: float | None
    breeds: tuple[BreedMetrics, ...]
    confusions: tuple[Confusion, ...]

    def to_dict(self) -> dict:
        """Return plain JSON-serialisable data (tuples become lists)."""
        return _plain(dataclasses.asdict(self))


def is_breed_correct(prediction: Prediction, breeds: BreedMap, k: int) -> bool | None:
    """Whether one of the breed's ImageNet classes is in the top k.

    Args:
        prediction: the model's answer.
        breeds: the breed mapping.
        k: how many of the best classes count, 1 to ``len(prediction.top)``.

    Returns:
        True or False, or None when ImageNet has no class for the breed.

    Raises:
        ValueError: ``k`` is out of range.
    """
    if not 1 <= k <= len(prediction.top):
        raise ValueError(f"k must be between 1 and {len(prediction.top)}, not {k}")
    breed = breeds.breeds.get(prediction.breed)
    if breed is None or not breed.mapped:
        return None
    return any(index in breed.class_indices for index in prediction.top[:k])


def is_species_correct(prediction: Prediction, breeds: BreedMap) -> bool:
    """Whether the top-1 class is a domestic class of the image's species."""
    return breeds.species_of_class(prediction.top[0]) == prediction.species


def pets_metrics(predictions: Sequence[Prediction], breeds: BreedMap) -> PetsMetrics:
    """Compute breed and species accuracy, per breed and overall.

    Args:
        predictions: one per image.
        breeds: the breed mapping.

    Returns:
        The metrics; breeds missing from the mapping count as unmapped.
    """
    by_breed: dict[str, list[Prediction]] = defaultdict(list)
    for prediction in predictions:
        by_breed[prediction.breed].append(prediction)
    unknown = sorted(set(by_breed) - set(breeds.breeds))
    if unknown:
        log.warning("breeds missing from the breed mapping, counted as unmapped: %s", unknown)
    order = [key for key in breeds.breeds if key in by_breed] + unknown
    per_breed = tuple(_breed_metrics(key, by_breed[key], breeds) for key in order)

    mapped = [p for p in predictions if is_breed_correct(p, breeds, 1) is not None]
    confusions = Counter((p.breed, p.top[0]) for p in mapped if not is_breed_correct(p, breeds, 1))
    return PetsMetrics(
        n_images=len(predictions),
        n_mapped=len(mapped),
        top1=_share(mapped, lambda p: is_breed_correct(p, breeds, 1)),
        top5=_share(mapped, lambda p: is_breed_correct(p, breeds, TOP_K)),
        species_accuracy=_share(predictions, lambda p: is_species_correct(p, breeds)),
        breeds=per_breed,
        confusions=tuple(
            Confusion(breed, index, breeds.label(index), count)
            for (breed, index), count in sorted(
                confusions.items(), key=lambda item: (-item[1], item[0][0], item[0][1])
            )
        ),
    )


def _breed_metrics(key: str, predictions: list[Prediction], breeds: BreedMap) -> BreedMetrics:
    breed = breeds.breeds.get(key)
    mapped = breed is not None and breed.mapped
    top1_counts = Counter(p.top[0] for p in predictions)
    most = sorted(top1_counts.items(), key=lambda item: (-item[1], item[0]))[:MOST_PREDICTED]
    if mapped:
        wrong = [p.image for p in predictions if not is_breed_correct(p, breeds, 1)]
    else:
        wrong = [p.image for p in predictions if not is_species_correct(p, breeds)]
    return BreedMetrics(
        breed=key,
        title=breed.title if breed else breed_title(key),
        species=breed.species if breed else predictions[0].species,
        n=len(predictions),
        mapped=mapped,
        top1=_share(predictions, lambda p: is_breed_correct(p, breeds, 1)) if mapped else None,
        top5=_share(predictions, lambda p: is_breed_correct(p, breeds, TOP_K)) if mapped else None,
        species_accuracy=_share(predictions, lambda p: is_species_correct(p, breeds)) or 0.0,
        most_predicted=tuple(
            ClassCount(index, breeds.label(index), count) for index, count in most
        ),
        misclassified=tuple(wrong),
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
