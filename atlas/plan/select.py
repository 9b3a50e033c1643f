"""Which photos each stage reads: the evaluation split, the detailed photos (image pages),
the photos with deletion/insertion curves."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path

from atlas.config.names import is_glob
from atlas.data.scan import DatasetImage


def evaluation_images(images: Sequence[DatasetImage], trained_on: str) -> list[DatasetImage]:
    """The images a model's accuracy is computed on: all but its training split."""
    if trained_on == "none":
        return list(images)
    return [image for image in images if image.split != trained_on]


def choose_detailed(
    images: Sequence[DatasetImage], mode: str, per_breed: int, names: Sequence[str]
) -> list[DatasetImage]:
    """The images that get activation and Grad-CAM pages, in dataset order."""
    if mode == "all":
        return list(images)
    if mode == "none":
        return []
    if mode in ("test", "trainval", "train", "val", "validation"):
        return [image for image in images if image.split == mode]
    if mode == "list":
        exact, globs = set(names), [n for n in names if is_glob(n)]
        return [
            image
            for image in images
            if image.name in exact or any(fnmatch.fnmatchcase(image.name, glob) for glob in globs)
        ]
    chosen, counts = [], {}
    for image in images:
        if counts.get(image.breed, 0) < per_breed:
            counts[image.breed] = counts.get(image.breed, 0) + 1
            chosen.append(image)
    return chosen


def faithfulness_images(
    images: Sequence[DatasetImage], trimaps: dict[str, Path], count: int
) -> list[str]:
    """The names of the ``count`` photos whose maps get deletion/insertion curves: one
    breed after another (photos with a trimap first, so that both scores rest on the same
    photos where they can), in dataset order within a breed."""
    by_breed: dict[str, list[DatasetImage]] = {}
    for image in images:
        by_breed.setdefault(image.breed, []).append(image)
    queues = [
        sorted(found, key=lambda image: image.name not in trimaps) for found in by_breed.values()
    ]
    chosen: list[str] = []
    depth = 0
    while len(chosen) < count and any(depth < len(queue) for queue in queues):
        for queue in queues:
            if depth < len(queue) and len(chosen) < count:
                chosen.append(queue[depth].name)
        depth += 1
    return chosen


def faithfulness_layers(layers: int, limit: int | None) -> list[int]:
    """The indices of the layers whose maps get deletion/insertion curves: every layer
    when ``limit`` is None or not below their number, else ``limit`` spread evenly over
    the model's depth, always the first and the deepest.

    Localisation is scored on every layer (no forward pass); faithfulness costs
    ``2 x (STEPS - 1)`` forward passes per layer, method and photo, more than every other
    stage of a deep model together when every layer is scored (issue 26).
    """
    if limit is None or layers <= limit:
        return list(range(layers))
    if limit == 1:
        return [layers - 1]
    step = (layers - 1) / (limit - 1)
    return sorted({round(i * step) for i in range(limit)})
