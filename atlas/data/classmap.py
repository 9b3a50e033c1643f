"""The dataset's classes against the ImageNet classes, for any dataset.

The pets' ``breeds.json`` (:mod:`atlas.data.breeds`) is one such map, written by hand.
For another dataset the map is built here: each dataset class is matched to the ImageNet
classes named in ``dataset.class_map`` (a JSON object: class -> list of ImageNet labels or
WordNet ids), else to the ImageNet class whose label is its name (any case, ``_`` or
space). A class with no match has no ImageNet class: an ImageNet model's accuracy leaves
its photos out, and its group (``dataset.groups``) still counts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from atlas.data.breeds import Breed, BreedMap
from atlas.errors import ConfigError


def normalise(label: str) -> str:
    """A label as compared with class names: any case, ``_`` or space."""
    return re.sub(r"[\s_]+", "_", label.strip()).lower()


def dataset_class_map(
    classes: Sequence[str],
    groups: dict[str, str] | None,
    class_index: Sequence[tuple[str, str]],
    class_map: Path | None = None,
) -> BreedMap:
    """A :class:`BreedMap` whose "breeds" are the dataset's classes, in their order.

    Raises:
        ConfigError: (exit 2) ``dataset.class_map`` cannot be read, names a class the
            dataset lacks, or an ImageNet label or WordNet id that does not exist.
    """
    given = _read_map(class_map, classes) if class_map is not None else {}
    by_wnid = {wnid: index for index, (wnid, _) in enumerate(class_index)}
    by_label = {normalise(label): index for index, (_, label) in enumerate(class_index)}
    entries = {}
    for name in classes:
        if name in given:
            indices = [_index(item, by_wnid, by_label, class_map, name) for item in given[name]]
        else:
            found = by_label.get(normalise(name))
            indices = [] if found is None else [found]
        entries[name] = Breed(
            key=name,
            title=name,
            species=(groups or {}).get(name, ""),
            wnids=tuple(class_index[i][0] for i in indices),
            class_indices=tuple(indices),
            note="from dataset.class_map" if name in given else "matched by name",
        )
    return BreedMap(breeds=entries, species_classes={}, classes=tuple(class_index))


def _read_map(path: Path, classes: Sequence[str]) -> dict[str, list[str]]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError([("dataset.class_map", f"{path}: cannot read ({error})")]) from None
    if not isinstance(raw, dict) or not all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in raw.values()
    ):
        raise ConfigError(
            [("dataset.class_map", f"{path}: expected an object of class -> list of labels")]
        )
    unknown = [name for name in raw if name not in classes]
    if unknown:
        raise ConfigError(
            [("dataset.class_map", f"{path}: {unknown[0]!r} is not a class of the dataset")]
        )
    return raw


def _index(item: str, by_wnid: dict, by_label: dict, path, name: str) -> int:
    found = by_wnid.get(item, by_label.get(normalise(item)))
    if found is None:
        raise ConfigError(
            [
                (
                    "dataset.class_map",
                    f"{path}: {name}: {item!r} is neither an ImageNet label nor a WordNet id",
                )
            ]
        )
    return found
