"""The site's search index: layers, units, photos and classes, as one small script.

The index is a JavaScript file that assigns ``window.ATLAS_SEARCH`` (a script tag loads
from ``file://`` where ``fetch()`` of JSON is refused). atlas.js loads it only when the
search box is used. To stay small, units are listed per layer (a layer's path gives its
units' paths) and the breeds a unit prefers (its class selectivity,
:mod:`atlas.analysis.unit_views`)
are numbers into one table of breed names.

Pure Python over the page views of :mod:`atlas.site.pages`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

INDEX_PATH = "search-index.js"
UNIT_BREEDS = 3  # the breeds a unit prefers kept per unit


def _photo_breeds(models: list) -> dict[str, str]:
    """Photo name -> breed title, over every model's photos."""
    return {image.name: image.breed_title for model in models for image in model.images}


def _unit_breeds(unit, photo_breeds: dict[str, str]) -> list[str]:
    """The breeds a unit prefers (class selectivity: the highest mean activation over a
    breed's photos), top first; else the breeds of its most exciting photos."""
    extras = getattr(unit, "extras", None)
    preferred = [item["breed"] for item in extras.breeds][:UNIT_BREEDS] if extras else []
    if preferred:
        return preferred
    found: list[str] = []
    for exemplar in unit.exemplars:
        breed = photo_breeds.get(exemplar["image"])
        if breed and breed not in found:
            found.append(breed)
        if len(found) == UNIT_BREEDS:
            break
    return found


def build_index(models: list) -> dict:
    """The index of a site's models (:class:`atlas.site.pages.ModelView`), as plain data.

    Keys: ``models`` [[id, title, path]]; ``labels`` [title] (the dataset's classes: the
    breeds for the pets); ``layers`` [[model, name, path, [[unit, label...]...]]] (a unit's
    page is ``units/<n>.html`` beside its layer's page); ``photos`` [[name, label, [[model,
    path or None]...]]] (None: the model's ``predictions.html``; label "" when unlabelled);
    ``classes`` [[model, [label...]]] (found on the model's ``accuracy.html``);
    ``atlases`` [[model, layer, path]] (activation atlas pages). Numbers in
    lists are indexes into ``models`` and ``labels``.
    """
    photo_breeds = _photo_breeds(models)
    breeds: dict[str, int] = {}

    def breed_number(title: str) -> int:
        return breeds.setdefault(title, len(breeds))

    layers, photos, classes, atlases = [], {}, [], []
    for number, model in enumerate(models):
        for layer in model.layers:
            units = [
                [unit.index, *(breed_number(b) for b in _unit_breeds(unit, photo_breeds))]
                for unit in layer.units
            ]
            layers.append([number, layer.name, layer.path, units])
        atlases += [[number, atlas.layer, atlas.path] for atlas in model.atlases]
        for image in model.images:
            entry = photos.setdefault(
                image.name, [image.name, breed_number(image.breed_title or ""), []]
            )
            # None: no page of its own; the model's predictions table lists it
            entry[2].append([number, image.path if image.detailed else None])
        if model.has_classes and model.metrics is not None:  # its accuracy page lists them
            classes.append([number, list(model.space.labels)])
    return {
        "models": [[model.id, model.title, model.path] for model in models],
        "labels": list(breeds),
        "layers": layers,
        "photos": list(photos.values()),
        "classes": classes,
        "atlases": atlases,
    }


def index_script(models: list) -> str:
    """The index as a script that assigns ``window.ATLAS_SEARCH``."""
    data = json.dumps(build_index(models), separators=(",", ":"), ensure_ascii=False)
    # No raw "<" (JSON's \u003c is the same string): the file is safe even if inlined.
    return "window.ATLAS_SEARCH=" + data.replace("<", "\\u003c") + ";\n"


def write_index(models: list, target: Path) -> int:
    """Write the index into the site folder ``target``; returns its size in bytes."""
    data = index_script(models).encode("utf-8")
    (target / INDEX_PATH).write_bytes(data)
    log.info("search index: %d bytes", len(data))
    return len(data)
