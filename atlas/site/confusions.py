"""Confusion pages: the photos of one (true breed -> predicted class) pair, with the class
activation maps of the true class and of the predicted class side by side.

The image entries already hold both maps (slot 0: the top-1 class, which is the wrong
prediction here; slot 1: the true label's class), so these pages cost only HTML.
"""

from __future__ import annotations

import logging

from atlas.site.writer import Page, Slugs

log = logging.getLogger(__name__)

PAIRS = 10  # the most frequent pairs with mapped photos per model that get a page


def _shown_layers(images: list) -> list[str]:
    """Layer names, in model order, that have a map of both classes for some photo."""
    names: list[str] = []
    for image in images:
        for layer in image.layers:
            if layer.heat and layer.heat_true and layer.layer not in names:
                names.append(layer.layer)
    return names


def confusion_pages(model, home: tuple[str, str], title: str = "Pets accuracy") -> list[Page]:
    """A page for each of the model's most frequent confusions among those with mapped
    (detailed) photos.

    Sets ``"path"`` on each such entry of ``model.confusions`` (the accuracy page links it).
    """
    slugs = Slugs()
    pages = []
    accuracy = model.sibling("accuracy.html")
    crumbs = (home, (model.title, model.path), (title, accuracy))
    for pair in model.confusions:
        mapped = [image for image in pair["images"] if image.detailed and image.layers]
        layers = _shown_layers(mapped)
        if not layers:
            continue  # only detailed photos have maps
        if len(pages) == PAIRS:
            break
        slug = slugs(f"{pair['breed']}\0{pair['label']}", f"{pair['breed']}-as-{pair['label']}")
        pair["path"] = model.sibling(f"confusions/{slug}.html")
        title = f"{pair['breed']} taken for {pair['label']}"
        pages.append(
            Page(
                pair["path"],
                "confusion.html",
                f"{model.title}: {title}",
                {
                    "model": model,
                    "pair": pair,
                    "mapped": mapped,
                    "layers": layers,
                    # the deepest layer with maps: the one Grad-CAM is usually read at
                    "chosen": layers[-1],
                    "accuracy": accuracy,
                },
                crumbs=(*crumbs, (title, None)),
            )
        )
    return pages
