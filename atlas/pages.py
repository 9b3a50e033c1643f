"""Every page of the site with its declared context, from config, plans and cache entries.

Pure Python over cached metadata: nothing here loads a model.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import markdown

from atlas import __version__, plan
from atlas.charts import confusion_svg
from atlas.confusions import confusion_pages
from atlas.dataset import breed_title
from atlas.metrics import Prediction, is_breed_correct, pets_metrics
from atlas.plan import CAM_METHODS, CAM_TITLES, PHOTO_SIDE, photo_job
from atlas.site import Assets, Page, Slugs
from atlas.unit_pages import UnitExtras, layer_extras, split_exemplars

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
    exemplars: tuple[dict, ...] = ()  # the most exciting photos, most first
    extras: UnitExtras = UnitExtras()  # negative, diversity, least exciting, breeds


@dataclass(frozen=True)
class ImageLayerView:
    """One layer seen by one image.

    The Grad-CAM maps are the raw maps at the layer's resolution (grey PNGs of a few hundred
    bytes); the page colours them with jet and lays them over the photo, as the cached JPEG
    overlays would show them, at a twentieth of their weight.
    """

    layer: str
    layer_path: str
    activation: str | None
    heat: str | None  # Grad-CAM of the top-1 class
    heat_true: str | None  # Grad-CAM of the true breed's class, where it differs
    shape: tuple[int, int]
    # the other CAM methods: method -> (map of the top-1 class, of the true class or None)
    cams: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    def cams_for(self, slot: int) -> dict[str, str | None]:
        """The extra methods' maps of one class slot (0: top-1, 1: true class)."""
        return {method: maps[slot] for method, maps in self.cams.items()}


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
    size: tuple[int, int]  # the photo's width and height in pixels; the thumb is 112 px
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
    cam_methods: tuple[str, ...] = ()  # the CAM methods this image's maps exist for
    scorecam_channels: int = 0

    @property
    def top1_label(self) -> str:
        return self.top[0].label if self.top else ""


@dataclass
class LayerView:
    name: str
    slug: str
    path: str
    facts: dict
    units: list[UnitView]
    best: str | None
    best_size: tuple[int, int]
    all: str | None
    seconds: float
    dead: int
    median_ratio: float | None
    index: int
    # other configured models' layers with the same units (same address) or the same name
    # but other units (a fine-tune changed them): [{"model", "title", "path", "same"}]
    twins: list[dict] = field(default_factory=list)

    @property
    def read_at(self) -> str:
        """Which tensor the units come from, in words."""
        ops = self.facts.get("read_ops") or []
        if not ops:
            return f"{self.name} (the convolution's own output)"
        return f"{self.facts['read_at']} (after {' + '.join(ops)})"


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
    picture_size: tuple[int, int]
    picture_layer: str
    gradcam_alpha: float = 0.4
    confusions: list[dict] = field(default_factory=list)
    space: object = None  # the model's LabelSpace; None: no classification head
    evaluation: str = "all photos"
    evaluated: int = 0  # how many photos the accuracy rests on
    matrix_svg: str | None = None
    config_read_at: str = "activation"
    trained_on: str = "none"
    twin_summary: list[dict] = field(default_factory=list)
    predictions: dict = field(default_factory=dict)  # image name -> Prediction
    evaluated_names: frozenset = frozenset()
    cam_scores: dict | None = None  # atlas.scores.score_view: the per-layer, per-method table

    @property
    def has_classes(self) -> bool:
        return self.space is not None

    @property
    def detailed_images(self) -> list[ImageView]:
        return [image for image in self.images if image.detailed]

    def sibling(self, name: str) -> str:
        """The site path of another page of this model (predictions.html, accuracy.html)."""
        return self.path.replace("index.html", name)


def _markdown(path: Path | None) -> str | None:
    if path is None:
        return None
    # Notes are trusted author content (see README): raw HTML in them is kept.
    return markdown.markdown(path.read_text(encoding="utf-8"), extensions=["tables"])


def _fit(width: int, height: int, side: int) -> tuple[int, int]:
    """The size of a picture scaled down (never up) to ``side`` pixels on its longer side."""
    scale = min(1.0, side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def _peak_means(image_entries: dict) -> dict[int, list[float]]:
    """Per layer, each unit's highest spatial-mean activation over the detailed photos."""
    peak_mean: dict[int, list[float]] = {}
    for entry in image_entries.values():
        if entry is None:
            continue
        for index, means in enumerate(entry.meta["channel_mean"]):
            current = peak_mean.setdefault(index, list(means))
            peak_mean[index] = [max(a, b) for a, b in zip(current, means, strict=True)]
    return peak_mean


def _unit_view(job, entry, exemplars, peak: list[float], path: str, assets: Assets,
               image_paths: dict, photos: dict, extras: UnitExtras) -> UnitView:
    meta = entry.meta if entry else {}
    most, least = split_exemplars(_exemplars(exemplars, job.unit, assets, image_paths, photos))
    own = meta.get("own_activation")
    ratio = None
    if own is not None and job.unit < len(peak) and peak[job.unit] > 0 and not meta.get("dead"):
        ratio = own / peak[job.unit]
    return UnitView(
        index=job.unit,
        path=path,
        picture=assets.publish(entry, "unit.webp"),
        objective=meta.get("objective"),
        dead=bool(meta.get("dead")),
        ratio=ratio,
        steps=int(meta.get("steps", 0)),
        seconds=float(meta.get("seconds", 0.0)),
        exemplars=most,
        extras=dataclasses.replace(extras, least=least),
    )


def _layer_views(model_plan, cache, base: str, assets: Assets, image_paths: dict,
                 photos: dict, image_entries: dict, breeds: dict[str, str]) -> list[LayerView]:
    layer_slugs = Slugs()
    layers = []
    peak_mean = _peak_means(image_entries)
    for index, layer in enumerate(model_plan.layers):
        name = layer["name"]
        slug = layer_slugs(name)
        exemplar_job = model_plan.exemplars.get(name)
        exemplars = cache.get(exemplar_job.key) if exemplar_job else None

        def unit_path(unit: int, slug: str = slug) -> str:
            return f"{base}/layers/{slug}/units/{unit}.html"

        extras = layer_extras(model_plan, name, cache, assets, unit_path, image_entries,
                              breeds, index)
        units = [
            _unit_view(job, cache.get(job.key), exemplars, peak_mean.get(index, []),
                       unit_path(job.unit), assets, image_paths, photos, extras[job.unit])
            for job in model_plan.units[name]
        ]
        grid = cache.get(model_plan.grids[name].key)
        layers.append(LayerView(
            name=name, slug=slug, path=f"{base}/layers/{slug}/index.html", facts=layer,
            units=units, best=assets.publish(grid, "best.webp"),
            best_size=assets.size(grid, "best.webp"), all=assets.publish(grid, "all.webp"),
            seconds=sum(u.seconds for u in units), dead=sum(u.dead for u in units),
            median_ratio=_median([u.ratio for u in units if u.ratio is not None]), index=index,
        ))
    return layers


def _class_views(prediction: Prediction, space, top_k: int) -> list[ClassView]:
    wanted = space.breed_classes(prediction.breed)
    return [
        ClassView(index=i, label=space.label(i), probability=p,
                  correct=(i in wanted) if wanted else None)
        for i, p in zip(prediction.top[:top_k], prediction.probabilities[:top_k], strict=True)
    ]


def _breed_title(breeds, key: str) -> str:
    breed = breeds.breeds.get(key)
    return breed.title if breed else breed_title(key)


def _image_view(image, prediction: Prediction | None, model_plan, context, path: str,
                photos: dict, detailed: bool) -> ImageView:
    space, breeds = model_plan.space, context.breeds
    breed = breeds.breeds.get(image.breed)
    top = _class_views(prediction, space, model_plan.config.render.top_k) if prediction else []
    return ImageView(
        name=image.name, path=path, photo=photos[image.name]["photo"],
        thumb=photos[image.name]["thumb"], size=photos[image.name]["size"], breed=image.breed,
        breed_title=breed.title if breed else breed_title(image.breed), species=image.species,
        split=image.split, top=top,
        top1_correct=is_breed_correct(prediction, space, 1) if prediction else None,
        top5_correct=is_breed_correct(prediction, space, 5) if prediction else None,
        detailed=detailed,
    )


def _add_image_layers(view: ImageView, entry, layers: list[LayerView], space,
                      assets: Assets) -> None:
    classes = entry.meta["cam_classes"]
    if classes and space is not None:
        view.cam_class = space.label(classes[0])
        view.cam_true_class = space.label(classes[1]) if len(classes) > 1 else None
        view.cam_methods = ("gradcam", *entry.meta.get("method_peaks", {}))
        view.scorecam_channels = int(entry.meta.get("scorecam_channels", 0))
    for layer_view in layers:
        i = layer_view.index
        view.layers.append(ImageLayerView(
            layer=layer_view.name, layer_path=layer_view.path,
            activation=assets.publish(entry, f"act_{i}.webp"),
            heat=assets.publish(entry, f"raw0_{i}.png"),
            heat_true=assets.publish(entry, f"raw1_{i}.png"),
            shape=tuple(entry.meta["shapes"][i]),
            cams=_method_maps(entry, i, view.cam_methods[1:], assets),
        ))


def _predictions(model_plan, context) -> dict[str, Prediction]:
    images = {image.name: image for image in context.scan.images}
    found = {}
    for job in model_plan.predict:
        entry = context.cache.get(job.key)
        if entry is None:
            continue
        image = images[job.image]
        found[image.name] = Prediction(
            image=image.name, breed=image.breed, species=image.species,
            top=tuple(entry.meta["top"]), probabilities=tuple(entry.meta["probabilities"]))
    return found


def _model_view(model_plan, context, assets: Assets, slugs: Slugs, photos: dict) -> ModelView:
    cache, config = context.cache, model_plan.config
    base = f"models/{slugs(config.id)}"
    image_slugs = Slugs()
    image_paths = {image.name: f"{base}/images/{image_slugs(image.name)}.html"
                   for image in context.scan.images}
    image_entries = {job.image: cache.get(job.key) for job in model_plan.images}
    breeds = {image.name: _breed_title(context.breeds, image.breed)
              for image in context.scan.images}
    layers = _layer_views(model_plan, cache, base, assets, image_paths, photos, image_entries,
                          breeds)
    predictions = _predictions(model_plan, context)
    views, detailed = [], {image.name for image in context.detailed}
    for image in context.scan.images:
        prediction = predictions.get(image.name)
        entry = image_entries.get(image.name)
        if prediction is None and entry is None:
            continue
        view = _image_view(image, prediction, model_plan, context, image_paths[image.name],
                           photos, image.name in detailed)
        if entry is not None:
            _add_image_layers(view, entry, layers, model_plan.space, assets)
        views.append(view)
    evaluated = {image.name for image in plan.evaluation_images(context.scan.images,
                                                                 config.trained_on)}
    scored = [p for name, p in predictions.items() if name in evaluated]
    metrics = (pets_metrics(scored, model_plan.space, context.breeds)
               if model_plan.space is not None else None)
    # Three quarters deep: past edges and textures, before the 1x1 class logits.
    pictured = [layer for layer in layers if layer.best]
    shown = pictured[(3 * len(pictured)) // 4] if pictured else None
    cam_scores = _cam_scores(model_plan, context, layers)
    return ModelView(
        cam_scores=cam_scores,
        id=config.id, title=config.title, path=f"{base}/index.html", facts=model_plan.facts,
        layers=layers, images=views, metrics=metrics, notes=_markdown(config.notes),
        random_weights=model_plan.facts["random_weights"],
        units=sum(len(layer.units) for layer in layers),
        seconds=sum(layer.seconds for layer in layers),
        source=config.application or (config.file.name if config.file else ""),
        picture=shown.best if shown else None,
        picture_size=shown.best_size if shown else (1, 1),
        picture_layer=shown.name if shown else "",
        gradcam_alpha=config.render.gradcam_alpha,
        confusions=_confusions([v for v in views if v.name in evaluated]),
        space=model_plan.space, evaluation=model_plan.evaluation, evaluated=len(scored),
        matrix_svg=(confusion_svg(metrics, _titles(context.breeds, model_plan.space))
                    if metrics and metrics.matrix else None),
        config_read_at=config.read_at, trained_on=config.trained_on, predictions=predictions,
        evaluated_names=frozenset(evaluated),
    )


def _titles(breeds, space) -> dict[str, str]:
    """Breed key -> display name, for every breed the model has a class for."""
    keys = {key for names in space.class_breeds for key in names}
    return {key: breeds.breeds[key].title if key in breeds.breeds else breed_title(key)
            for key in keys}


def link_twins(models: list[ModelView]) -> None:
    """Tell each layer which layers of other models have the same units, or the same name
    and other units (what a fine-tune changed)."""
    for model in models:
        for layer in model.layers:
            for other in models:
                if other is model:
                    continue
                for candidate in other.layers:
                    same = candidate.facts.get("address") == layer.facts.get("address")
                    local = candidate.name.rsplit("/", 1)[-1] == layer.name.rsplit("/", 1)[-1]
                    if same or local:
                        layer.twins.append({"model": other.id, "title": other.title,
                                            "path": candidate.path, "layer": candidate.name,
                                            "same": same})
                        break
        for other in models:
            if other is model:
                continue
            twins = [(layer, t) for layer in model.layers for t in layer.twins
                     if t["model"] == other.id]
            if twins:
                changed = [layer for layer, t in twins if not t["same"]]
                model.twin_summary.append({
                    "title": other.title, "total": len(model.layers),
                    "same": len(twins) - len(changed), "changed": len(changed),
                    "changed_layers": changed})


def comparison(models: list[ModelView], context) -> dict:
    """Every classifier's accuracy on the same photos: those every one of them is
    evaluated on (a fine-tuned model's training photos are left out for all)."""
    classifiers = [m for m in models if m.has_classes and m.predictions]
    if not classifiers:
        return {"photos": 0, "rows": []}
    common = set.intersection(*(set(m.evaluated_names) & set(m.predictions)
                                for m in classifiers))
    rows = []
    for model in classifiers:
        scored = [p for name, p in model.predictions.items() if name in common]
        rows.append({"model": model,
                     "metrics": pets_metrics(scored, model.space, context.breeds)})
    return {"photos": len(common), "rows": rows}


def _cam_colours() -> dict[str, str]:
    from atlas.scores import COLOURS

    return COLOURS


def _cam_scores(model_plan, context, layers: list[LayerView]) -> dict | None:
    """The model page's table of CAM scores per layer and method (None before any)."""
    from atlas.scores import score_view

    entries = [context.cache.get(job.key) for job in model_plan.scores]
    records = [entry.meta for entry in entries if entry is not None]
    if not records:
        return None
    methods = [m for m in CAM_METHODS
               if any(m in r.get("energy", r.get("deletion", {})) for r in records)]
    return score_view(records, [layer.name for layer in layers], methods,
                      len(model_plan.images))


def _method_maps(entry, index: int, methods, assets: Assets) -> dict:
    """Each extra CAM method's published maps of one layer: (top-1 class, true class)."""
    return {
        method: (
            assets.publish(entry, f"{method}0_{index}.png"),
            assets.publish(entry, f"{method}1_{index}.png"),
        )
        for method in methods
    }


def _confusions(views: list[ImageView]) -> list[dict]:
    """Wrong top-1 classes per breed, most frequent first, with the images they came from."""
    groups: dict[tuple[str, str], list[ImageView]] = {}
    for view in views:
        if view.top1_correct is False:
            groups.setdefault((view.breed_title, view.top1_label), []).append(view)
    ranked = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return [
        {"breed": breed, "label": label, "count": len(found), "images": found}
        for (breed, label), found in ranked
    ]


def _exemplars(
    entry, unit: int, assets: Assets, image_paths: dict, photos: dict
) -> tuple[dict, ...]:
    if entry is None:
        return ()
    found = []
    for rank, item in enumerate(entry.meta["units"].get(str(unit), [])):
        name = item["image"]
        found.append(
            {
                "image": name,
                "path": image_paths.get(name),
                "max": item["max"],
                "mean": item.get("mean"),
                "thumb": photos.get(name, {}).get("thumb"),
                "size": photos.get(name, {}).get("size", (1, 1)),
                "map": assets.publish(entry, f"u{unit}_{rank}.png"),
            }
        )
    return tuple(found)


def collect_pages(context, assets: Assets) -> tuple[list[Page], dict]:
    """Every page of the site; returns (pages, the site-wide template values)."""
    config = context.config
    slugs = Slugs()
    photos = {}
    for image in context.scan.images:
        entry = context.cache.get(photo_job(image).key)
        width, height = (entry.meta["width"], entry.meta["height"]) if entry else (1, 1)
        photos[image.name] = {
            "photo": assets.publish(entry, "photo.jpg"),
            "thumb": assets.publish(entry, "thumb.jpg"),
            "size": _fit(width, height, PHOTO_SIDE),
        }
    models = [_model_view(p, context, assets, slugs, photos) for p in context.models]
    link_twins(models)
    home = ("Home", "index.html")
    pages: list[Page] = [
        Page(
            "index.html",
            "index.html",
            config.site.title,
            {
                "models": models,
                "intro": _markdown(config.site.notes),
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
                "ledger": _ledger(context),
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
        pages += _model_pages(model, home)
    site = {
        "title": config.site.title,
        "version": __version__,
        "models": models,
        "base_path": config.site.base_path,
        "timestamp": _timestamp() if config.site.timestamp else None,
        "jet": _jet_tables(),
        "cam_titles": CAM_TITLES,
        "cam_colours": _cam_colours(),
    }
    return pages, site


def _model_pages(model: ModelView, home) -> list[Page]:
    crumb = (model.title, model.path)
    pages = [Page(model.path, "model.html", model.title, model,
                  crumbs=(home, (model.title, None)))]
    # before the accuracy page is rendered: it links the confusion pages
    pages += confusion_pages(model, home) if model.has_classes else []
    pages += [] if not model.has_classes else [
        Page(
            model.sibling("predictions.html"),
            "predictions.html",
            f"{model.title}: predictions",
            model,
            crumbs=(home, crumb, ("Predictions", None)),
        ),
        Page(
            model.sibling("accuracy.html"),
            "accuracy.html",
            f"{model.title}: pets accuracy",
            model,
            crumbs=(home, crumb, ("Pets accuracy", None)),
        ),
    ]
    for i, layer in enumerate(model.layers):
        neighbours = {
            "prev": model.layers[i - 1] if i > 0 else None,
            "next": model.layers[i + 1] if i + 1 < len(model.layers) else None,
        }
        pages.append(
            Page(
                layer.path,
                "layer.html",
                f"{model.title}: {layer.name}",
                {"model": model, "layer": layer, **neighbours},
                crumbs=(home, crumb, (layer.name, None)),
            )
        )
        layer_crumb = (layer.name, layer.path)
        for j, unit in enumerate(layer.units):
            pages.append(
                Page(
                    unit.path,
                    "unit.html",
                    f"{model.title}: {layer.name} unit {unit.index}",
                    {
                        "model": model,
                        "layer": layer,
                        "unit": unit,
                        "prev": layer.units[j - 1] if j > 0 else None,
                        "next": layer.units[j + 1] if j + 1 < len(layer.units) else None,
                    },
                    crumbs=(home, crumb, layer_crumb, (f"unit {unit.index}", None)),
                )
            )
    shown = model.detailed_images
    predictions_crumb = (("Predictions", model.sibling("predictions.html"))
                         if model.has_classes else ("Images", None))
    for i, image in enumerate(shown):
        pages.append(
            Page(
                image.path,
                "image.html",
                f"{model.title}: {image.name}",
                {
                    "model": model,
                    "image": image,
                    "prev": shown[i - 1] if i > 0 else None,
                    "next": shown[i + 1] if i + 1 < len(shown) else None,
                },
                crumbs=(home, crumb, predictions_crumb, (image.name, None)),
            )
        )
    return pages


def _ledger(context) -> dict:
    from atlas.build import peak_rss  # the build is what calls this module

    rendered = sum(context.rendered.values())
    reused = sum(context.reused.values())
    return {
        "peak_rss_mb": round(peak_rss() / 2**20),
        "rendered": dict(sorted(context.rendered.items())),
        "reused": dict(sorted(context.reused.items())),
        "total": rendered + reused,
        "from_cache": reused / (rendered + reused) if rendered + reused else None,
    }


def _timestamp() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _jet_tables(samples: int = 33) -> dict[str, str]:
    """matplotlib's jet as SVG ``feComponentTransfer`` tables, one per channel.

    The site colours the grey Grad-CAM maps in the browser (a few hundred bytes per map
    instead of a JPEG overlay each); the colours still come from matplotlib's table.
    """
    from atlas.draw import _lut

    table = _lut("jet")[[round(i * 255 / (samples - 1)) for i in range(samples)]] / 255.0
    return {channel: " ".join(f"{v:.3f}" for v in table[:, index])
            for index, channel in enumerate("rgb")}
