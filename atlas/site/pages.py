"""Every page of the site with its declared context, from config, plans and cache entries.

Pure Python over cached metadata: nothing here loads a model.
"""

from __future__ import annotations

import logging

from atlas import __version__
from atlas.plan.jobs import CAM_TITLES, PHOTO_SIDE, photo_job
from atlas.site.cam_scores import cam_colours
from atlas.site.compare import comparison, link_twins
from atlas.site.confusions import confusion_pages
from atlas.site.ledger import ledger, timestamp
from atlas.site.model_view import model_view
from atlas.site.views import ModelView, dataset_words, fit, markdown_html
from atlas.site.writer import Assets, Page, Slugs

log = logging.getLogger(__name__)


def collect_pages(context, assets: Assets) -> tuple[list[Page], dict]:
    """Every page of the site; returns (pages, the site-wide template values)."""
    config = context.config
    slugs = Slugs()
    words = dataset_words(context.scan.layout)
    photos = _photos(context, assets)
    models = [model_view(p, context, assets, slugs, photos) for p in context.models]
    link_twins(models)
    home = ("Home", "index.html")
    pages: list[Page] = [
        Page(
            "index.html",
            "index.html",
            config.site.title,
            {
                "models": models,
                "intro": markdown_html(config.site.notes),
                "scan": context.scan,
                "dataset": config.dataset,
                "breeds": context.breeds,
                "comparison": comparison(models, context),
            },
        ),
        Page(
            "build.html",
            "build.html",
            "Compute ledger",
            {
                "models": models,
                "ledger": ledger(context),
                "stages": [(name, seconds) for name, seconds in context.timer.seconds.items()],
            },
            crumbs=(home, ("Compute ledger", None)),
        ),
        Page(
            "dataset.html",
            "dataset.html",
            "Dataset",
            {"scan": context.scan, "breeds": context.breeds, "dataset": config.dataset},
            crumbs=(home, ("Dataset", None)),
        ),
        Page("404.html", "404.html", "Not found", {}),
    ]
    for model in models:
        pages += _model_pages(model, home, words)
    site = {
        "title": config.site.title,
        "version": __version__,
        "models": models,
        "base_path": config.site.base_path,
        "timestamp": timestamp() if config.site.timestamp else None,
        "jet": _jet_tables(),
        "cam_titles": CAM_TITLES,
        "cam_colours": cam_colours(),
        "words": words,
    }
    return pages, site


def _photos(context, assets: Assets) -> dict[str, dict]:
    """Each photo's published picture and thumbnail, and its size on the page."""
    photos = {}
    for image in context.scan.images:
        entry = context.cache.get(photo_job(image).key)
        width, height = (entry.meta["width"], entry.meta["height"]) if entry else (1, 1)
        photos[image.name] = {
            "photo": assets.publish(entry, "photo.jpg"),
            "thumb": assets.publish(entry, "thumb.jpg"),
            "size": fit(width, height, PHOTO_SIDE),
        }
    return photos


def _model_pages(model: ModelView, home, words: dict) -> list[Page]:
    crumb = (model.title, model.path)
    pages = [Page(model.path, "model.html", model.title, model, crumbs=(home, (model.title, None)))]
    # before the accuracy page is rendered: it links the confusion pages
    accuracy = model.has_classes and model.metrics is not None  # no labels: no accuracy
    pages += confusion_pages(model, home, words["Accuracy"]) if accuracy else []
    pages += _prediction_pages(model, home, words, accuracy) if model.has_classes else []
    for i, layer in enumerate(model.layers):
        pages.append(
            Page(
                layer.path,
                "layer.html",
                f"{model.title}: {layer.name}",
                {"model": model, "layer": layer, **_neighbours(model.layers, i)},
                crumbs=(home, crumb, (layer.name, None)),
            )
        )
        layer_crumb = (layer.name, layer.path)
        pages += [
            Page(
                unit.path,
                "unit.html",
                f"{model.title}: {layer.name} unit {unit.index}",
                {"model": model, "layer": layer, "unit": unit, **_neighbours(layer.units, j)},
                crumbs=(home, crumb, layer_crumb, (f"unit {unit.index}", None)),
            )
            for j, unit in enumerate(layer.units)
        ]
    pages += _atlas_pages(model, home)
    shown = model.detailed_images
    predictions_crumb = (
        ("Predictions", model.sibling("predictions.html"))
        if model.has_classes
        else ("Images", None)
    )
    pages += [
        Page(
            image.path,
            "image.html",
            f"{model.title}: {image.name}",
            {"model": model, "image": image, **_neighbours(shown, i)},
            crumbs=(home, crumb, predictions_crumb, (image.name, None)),
        )
        for i, image in enumerate(shown)
    ]
    return pages


def _atlas_pages(model: ModelView, home) -> list[Page]:
    """One page per activation atlas: Home / model / layer / Activation atlas."""
    crumb = (model.title, model.path)
    return [
        Page(
            atlas.path,
            "atlas.html",
            f"{model.title}: {atlas.layer} activation atlas",
            {"model": model, "atlas": atlas, **_neighbours(model.atlases, i)},
            crumbs=(home, crumb, (atlas.layer, atlas.layer_path), ("Activation atlas", None)),
        )
        for i, atlas in enumerate(model.atlases)
    ]


def _prediction_pages(model: ModelView, home, words: dict, accuracy: bool) -> list[Page]:
    crumb = (model.title, model.path)
    pages = [
        Page(
            model.sibling("predictions.html"),
            "predictions.html",
            f"{model.title}: predictions",
            model,
            crumbs=(home, crumb, ("Predictions", None)),
        )
    ]
    if not accuracy:
        return pages
    return pages + [
        Page(
            model.sibling("accuracy.html"),
            "accuracy.html",
            f"{model.title}: {words['accuracy']}",
            model,
            crumbs=(home, crumb, (words["Accuracy"], None)),
        ),
    ]


def _neighbours(items: list, index: int) -> dict:
    """The previous and next item of a list, for a page's arrows (None at the ends)."""
    return {
        "prev": items[index - 1] if index > 0 else None,
        "next": items[index + 1] if index + 1 < len(items) else None,
    }


def _jet_tables(samples: int = 33) -> dict[str, str]:
    """matplotlib's jet as SVG ``feComponentTransfer`` tables, one per channel.

    The site colours the grey Grad-CAM maps in the browser (a few hundred bytes per map
    instead of a JPEG overlay each); the colours still come from matplotlib's table.
    """
    from atlas.render.draw import _lut

    table = _lut("jet")[[round(i * 255 / (samples - 1)) for i in range(samples)]] / 255.0
    return {
        channel: " ".join(f"{v:.3f}" for v in table[:, index])
        for index, channel in enumerate("rgb")
    }
