"""Every page of the site with its declared context, from config, plans and cache entries.

Pure Python over cached metadata: nothing here loads a model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import markdown

from atlas import __version__
from atlas.dataset import breed_title
from atlas.metrics import Prediction, is_breed_correct, pets_metrics
from atlas.site import Assets, Page, Slugs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnitView:
    index: int
    path: str
    picture: str | None
    objective: float | None
    dead: bool
    ratio: float | None
    steps: int
    seconds: float
    exemplars: tuple[dict, ...] = ()


@dataclass(frozen=True)
class ImageLayerView:
    layer: str
    layer_path: str
    activation: str | None
    cam: str | None
    cam_true: str | None
    shape: tuple[int, int]


@dataclass(frozen=True)
class ClassView:
    index: int
    label: str
    probability: float
    correct: bool | None


@dataclass
class ImageView:
    name: str
    path: str
    photo: str | None
    thumb: str | None
    breed: str
    breed_title: str
    species: str
    split: str | None
    top: list[ClassView]
    top1_correct: bool | None
    top5_correct: bool | None
    detailed: bool
    layers: list[ImageLayerView] = field(default_factory=list)
    cam_class: str = ""
    cam_true_class: str | None = None


@dataclass
class LayerView:
    name: str
    slug: str
    path: str
    facts: dict
    units: list[UnitView]
    best: str | None
    all: str | None
    seconds: float
    dead: int
    median_ratio: float | None
    index: int


@dataclass
class ModelView:
    id: str
    title: str
    path: str
    facts: dict
    layers: list[LayerView]
    images: list[ImageView]
    metrics: object
    notes: str | None
    random_weights: bool
    units: int
    seconds: float
    source: str
    picture: str | None


def _markdown(path: Path | None) -> str | None:
    if path is None:
        return None
    # Notes are trusted author content (see README): raw HTML in them is kept.
    return markdown.markdown(path.read_text(encoding="utf-8"), extensions=["tables"])


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def _model_view(model_plan, context, assets: Assets, slugs: Slugs, photos: dict) -> ModelView:
    cache, breeds = context.cache, context.breeds
    config = model_plan.config
    base = f"models/{slugs('model:' + config.id)}"
    images = {image.name: image for image in context.scan.images}
    detailed_names = {image.name for image in context.detailed}
    image_entries = {job.image: cache.get(job.key) for job in model_plan.images}
    peak_mean: dict[int, list[float]] = {}
    for entry in image_entries.values():
        if entry is None:
            continue
        for index, means in enumerate(entry.meta["channel_mean"]):
            current = peak_mean.setdefault(index, list(means))
            peak_mean[index] = [max(a, b) for a, b in zip(current, means)]
    image_slugs = Slugs()
    image_paths = {name: f"{base}/images/{image_slugs(name)}.html" for name in images}
    layer_slugs = Slugs()
    layers = []
    for index, layer in enumerate(model_plan.layers):
        name = layer["name"]
        slug = layer_slugs(name)
        path = f"{base}/layers/{slug}/index.html"
        exemplar_job = model_plan.exemplars.get(name)
        exemplars = cache.get(exemplar_job.key) if exemplar_job else None
        units = []
        for job in model_plan.units[name]:
            entry = cache.get(job.key)
            meta = entry.meta if entry else {}
            peak = peak_mean.get(index, [])
            own = meta.get("own_activation")
            ratio = None
            if own is not None and job.unit < len(peak) and peak[job.unit] > 0 \
                    and not meta.get("dead"):
                ratio = own / peak[job.unit]
            units.append(UnitView(
                index=job.unit, path=f"{base}/layers/{slug}/units/{job.unit}.html",
                picture=assets.publish(entry, "unit.webp"), objective=meta.get("objective"),
                dead=bool(meta.get("dead")), ratio=ratio, steps=int(meta.get("steps", 0)),
                seconds=float(meta.get("seconds", 0.0)),
                exemplars=_exemplars(exemplars, job.unit, assets, image_paths, photos)))
        grid = cache.get(model_plan.grids[name].key)
        ratios = [u.ratio for u in units if u.ratio is not None]
        layers.append(LayerView(
            name=name, slug=slug, path=path, facts=layer, units=units,
            best=assets.publish(grid, "best.webp"), all=assets.publish(grid, "all.webp"),
            seconds=sum(u.seconds for u in units), dead=sum(u.dead for u in units),
            median_ratio=_median(ratios), index=index))
    predictions, views = [], []
    for job in model_plan.predict:
        entry = cache.get(job.key)
        if entry is None:
            continue
        image = images[job.image]
        prediction = Prediction(image=image.name, breed=image.breed, species=image.species,
                                top=tuple(entry.meta["top"]),
                                probabilities=tuple(entry.meta["probabilities"]))
        predictions.append(prediction)
        breed = breeds.breeds.get(image.breed)
        top = [ClassView(index=i, label=breeds.label(i), probability=p,
                         correct=(i in breed.class_indices) if breed and breed.mapped else None)
               for i, p in zip(prediction.top[: config.render.top_k],
                               prediction.probabilities[: config.render.top_k])]
        view = ImageView(
            name=image.name, path=image_paths[image.name],
            photo=photos.get(image.name, (None, None))[0],
            thumb=photos.get(image.name, (None, None))[1],
            breed=image.breed, breed_title=breed.title if breed else breed_title(image.breed),
            species=image.species, split=image.split, top=top,
            top1_correct=is_breed_correct(prediction, breeds, 1),
            top5_correct=is_breed_correct(prediction, breeds, 5),
            detailed=image.name in detailed_names)
        entry = image_entries.get(image.name)
        if entry is not None:
            classes = entry.meta["cam_classes"]
            view.cam_class = breeds.label(classes[0])
            view.cam_true_class = breeds.label(classes[1]) if len(classes) > 1 else None
            for layer_view in layers:
                i = layer_view.index
                view.layers.append(ImageLayerView(
                    layer=layer_view.name, layer_path=layer_view.path,
                    activation=assets.publish(entry, f"act_{i}.webp"),
                    cam=assets.publish(entry, f"cam0_{i}.jpg"),
                    cam_true=assets.publish(entry, f"cam1_{i}.jpg"),
                    shape=tuple(entry.meta["shapes"][i])))
        views.append(view)
    first_best = next((layer.best for layer in reversed(layers) if layer.best), None)
    return ModelView(
        id=config.id, title=config.title, path=f"{base}/index.html", facts=model_plan.facts,
        layers=layers, images=views, metrics=pets_metrics(predictions, breeds),
        notes=_markdown(config.notes), random_weights=model_plan.facts["random_weights"],
        units=sum(len(layer.units) for layer in layers),
        seconds=sum(layer.seconds for layer in layers),
        source=config.application or (config.file.name if config.file else ""),
        picture=first_best)


def _exemplars(entry, unit: int, assets: Assets, image_paths: dict, photos: dict
               ) -> tuple[dict, ...]:
    if entry is None:
        return ()
    found = []
    for rank, item in enumerate(entry.meta["units"].get(str(unit), [])):
        name = item["image"]
        found.append({"image": name, "path": image_paths.get(name), "max": item["max"],
                      "thumb": photos.get(name, (None, None))[1],
                      "map": assets.publish(entry, f"u{unit}_{rank}.png")})
    return tuple(found)


def collect_pages(context, assets: Assets) -> tuple[list[Page], dict]:
    """Every page of the site; returns (pages, the site-wide template values)."""
    config = context.config
    slugs = Slugs()
    photos = {}
    from atlas.plan import photo_job

    for image in context.scan.images:
        entry = context.cache.get(photo_job(image).key)
        photos[image.name] = (assets.publish(entry, "photo.jpg"),
                              assets.publish(entry, "thumb.jpg"))
    models = [_model_view(p, context, assets, slugs, photos) for p in context.models]
    home = ("Home", "index.html")
    pages: list[Page] = [
        Page("index.html", "index.html", config.site.title, {
            "models": models, "intro": _markdown(config.site.notes), "scan": context.scan,
            "dataset": config.dataset, "ledger": _ledger(context),
            "breeds": context.breeds}),
        Page("dataset.html", "dataset.html", "Dataset", {
            "scan": context.scan, "breeds": context.breeds, "dataset": config.dataset},
            crumbs=(home, ("Dataset", None))),
        Page("404.html", "404.html", "Not found", {}),
    ]
    for model in models:
        pages += _model_pages(model, home)
    site = {"title": config.site.title, "version": __version__, "models": models,
            "base_path": config.site.base_path,
            "timestamp": _timestamp() if config.site.timestamp else None}
    return pages, site


def _model_pages(model: ModelView, home) -> list[Page]:
    crumb = (model.title, model.path)
    pages = [
        Page(model.path, "model.html", model.title, model, crumbs=(home, (model.title, None))),
        Page(model.path.replace("index.html", "predictions.html"), "predictions.html",
             f"{model.title}: predictions", model,
             crumbs=(home, crumb, ("Predictions", None))),
        Page(model.path.replace("index.html", "accuracy.html"), "accuracy.html",
             f"{model.title}: pets accuracy", model,
             crumbs=(home, crumb, ("Pets accuracy", None))),
    ]
    for i, layer in enumerate(model.layers):
        neighbours = {"prev": model.layers[i - 1] if i > 0 else None,
                      "next": model.layers[i + 1] if i + 1 < len(model.layers) else None}
        pages.append(Page(layer.path, "layer.html", f"{model.title}: {layer.name}",
                          {"model": model, "layer": layer, **neighbours},
                          crumbs=(home, crumb, (layer.name, None))))
        layer_crumb = (layer.name, layer.path)
        for j, unit in enumerate(layer.units):
            pages.append(Page(unit.path, "unit.html",
                              f"{model.title}: {layer.name} unit {unit.index}", {
                                  "model": model, "layer": layer, "unit": unit,
                                  "prev": layer.units[j - 1] if j > 0 else None,
                                  "next": layer.units[j + 1] if j + 1 < len(layer.units)
                                  else None},
                              crumbs=(home, crumb, layer_crumb, (f"unit {unit.index}", None))))
    shown = [image for image in model.images if image.detailed]
    for i, image in enumerate(shown):
        pages.append(Page(image.path, "image.html", f"{model.title}: {image.name}", {
            "model": model, "image": image,
            "prev": shown[i - 1] if i > 0 else None,
            "next": shown[i + 1] if i + 1 < len(shown) else None},
            crumbs=(home, crumb, (image.name, None))))
    return pages


def _ledger(context) -> dict:
    rendered = sum(context.rendered.values())
    reused = sum(context.reused.values())
    return {"rendered": dict(sorted(context.rendered.items())),
            "reused": dict(sorted(context.reused.items())),
            "total": rendered + reused,
            "from_cache": reused / (rendered + reused) if rendered + reused else None}


def _timestamp() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
