"""One model's view: its layers, units, photos, predictions, accuracy and CAM scores, read
from the cache entries its plan names."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

import numpy as np

from atlas.analysis import liveness
from atlas.analysis.metrics import Prediction, is_breed_correct, pets_metrics
from atlas.config.methods import recipe_words
from atlas.data.oxford import breed_title
from atlas.plan.select import evaluation_images
from atlas.site.atlas_view import atlas_views
from atlas.site.cam_scores import cam_scores
from atlas.site.charts import confusion_svg
from atlas.site.unit_pages import UnitExtras, layer_extras, split_exemplars
from atlas.site.views import (
    ClassView,
    ImageLayerView,
    ImageView,
    LayerView,
    ModelView,
    UnitView,
    class_title,
    dataset_words,
    markdown_html,
    median,
)
from atlas.site.writer import Assets, Slugs

log = logging.getLogger(__name__)


def _peak_means(image_entries: dict) -> dict[int, tuple[list[float], list[str]]]:
    """Per layer, each unit's highest spatial-mean activation over the detailed photos,
    and the photo it was measured on (the first, on a tie)."""
    found = [(name, entry) for name, entry in image_entries.items() if entry is not None]
    if not found:
        return {}
    names = [name for name, _ in found]
    peak_mean = {}
    for index in range(len(found[0][1].meta["channel_mean"])):
        means = np.asarray([entry.meta["channel_mean"][index] for _, entry in found])
        best = means.argmax(axis=0)  # the first photo on a tie
        peak_mean[index] = (means.max(axis=0).tolist(), [names[i] for i in best])
    return peak_mean


def _unit_view(
    job,
    entry,
    exemplars,
    peak: tuple[list[float], list[str]],
    path: str,
    assets: Assets,
    image_paths: dict,
    photos: dict,
    extras: UnitExtras,
    means: np.ndarray,
) -> UnitView:
    meta = entry.meta if entry else {}
    unit_means = means[:, job.unit] if job.unit < means.shape[1] else ()
    state = liveness.unit_state(meta, unit_means) if entry else liveness.MOVED
    dead = state in (liveness.CONSTANT, liveness.STUCK)
    most, least = split_exemplars(_exemplars(exemplars, job.unit, assets, image_paths, photos))
    own = meta.get("own_activation")
    ratio, beaten_by = None, None
    values, names = peak
    if own is not None and job.unit < len(values) and values[job.unit] > 0 and not dead:
        ratio = own / values[job.unit]
        if ratio < 1:  # the page says so: the picture is not what excites the unit most
            name = names[job.unit]
            beaten_by = {"name": name, "path": image_paths.get(name)}
    return UnitView(
        index=job.unit,
        path=path,
        picture=assets.publish(entry, "unit.webp"),
        objective=meta.get("objective"),
        dead=dead,
        state=state,
        state_words=liveness.state_words(state, len(means)),
        ratio=ratio,
        beaten_by=beaten_by,
        steps=int(meta.get("steps", 0)),
        seconds=float(meta.get("seconds", 0.0)),
        backend=str(meta.get("backend", "tensorflow")),  # older entries: TensorFlow rendered all
        exemplars=most,
        extras=dataclasses.replace(extras, least=least),
    )


def _layer_views(
    model_plan,
    cache,
    base: str,
    assets: Assets,
    image_paths: dict,
    photos: dict,
    image_entries: dict,
    breeds: dict[str, str],
) -> list[LayerView]:
    layer_slugs, layers = Slugs(), []
    peak_mean, side = _peak_means(image_entries), int(model_plan.facts["input_size"][0])
    for index, layer in enumerate(model_plan.layers):
        name = layer["name"]
        slug = layer_slugs(name)
        exemplar_job = model_plan.exemplars.get(name)
        exemplars = cache.get(exemplar_job.key) if exemplar_job else None

        def unit_path(unit: int, slug: str = slug) -> str:
            return f"{base}/layers/{slug}/units/{unit}.html"

        extras = layer_extras(
            model_plan, name, cache, assets, unit_path, image_entries, breeds, index
        )
        means = liveness.photo_means(image_entries.values(), index)
        units = [
            _unit_view(
                job,
                cache.get(job.key),
                exemplars,
                peak_mean.get(index, ([], [])),
                unit_path(job.unit),
                assets,
                image_paths,
                photos,
                extras[job.unit],
                means,
            )
            for job in model_plan.units[name]
        ]
        grid = cache.get(model_plan.grids[name].key)
        layers.append(
            LayerView(
                name=name,
                slug=slug,
                path=f"{base}/layers/{slug}/index.html",
                facts=layer,
                units=units,
                best=assets.publish(grid, "best.webp"),
                best_size=assets.size(grid, "best.webp"),
                all=assets.publish(grid, "all.webp"),
                seconds=sum(u.seconds for u in units),
                dead=sum(u.dead for u in units),
                **liveness.state_counts(u.state for u in units),
                median_ratio=median([u.ratio for u in units if u.ratio is not None]),
                index=index,
                recipe=recipe_words(model_plan.params, layer.get("receptive_field"), side),
            )
        )
    return layers


def _class_views(prediction: Prediction, space, top_k: int) -> list[ClassView]:
    wanted = space.breed_classes(prediction.breed)
    return [
        ClassView(
            index=i, label=space.label(i), probability=p, correct=(i in wanted) if wanted else None
        )
        for i, p in zip(prediction.top[:top_k], prediction.probabilities[:top_k], strict=True)
    ]


def _image_view(
    image,
    prediction: Prediction | None,
    model_plan,
    context,
    path: str,
    photos: dict,
    detailed: bool,
) -> ImageView:
    space, breeds = model_plan.space, context.breeds
    breed = breeds.breeds.get(image.breed)
    top = _class_views(prediction, space, model_plan.config.render.top_k) if prediction else []
    return ImageView(
        name=image.name,
        path=path,
        photo=photos[image.name]["photo"],
        thumb=photos[image.name]["thumb"],
        size=photos[image.name]["size"],
        breed=image.breed,
        breed_title=breed.title if breed else breed_title(image.breed),
        species=image.species,
        split=image.split,
        top=top,
        top1_correct=is_breed_correct(prediction, space, 1) if prediction else None,
        top5_correct=is_breed_correct(prediction, space, 5) if prediction else None,
        detailed=detailed,
    )


def _add_image_layers(
    view: ImageView, entry, layers: list[LayerView], space, assets: Assets
) -> None:
    classes = entry.meta["cam_classes"]
    if classes and space is not None:
        view.cam_class = space.label(classes[0])
        view.cam_true_class = space.label(classes[1]) if len(classes) > 1 else None
        view.cam_methods = ("gradcam", *entry.meta.get("method_peaks", {}))
        view.scorecam_channels = int(entry.meta.get("scorecam_channels", 0))
    for layer_view in layers:
        i = layer_view.index
        view.layers.append(
            ImageLayerView(
                layer=layer_view.name,
                layer_path=layer_view.path,
                activation=assets.publish(entry, f"act_{i}.webp"),
                heat=assets.publish(entry, f"raw0_{i}.png"),
                heat_true=assets.publish(entry, f"raw1_{i}.png"),
                shape=tuple(entry.meta["shapes"][i]),
                cams=_method_maps(entry, i, view.cam_methods[1:], assets),
            )
        )


def _predictions(model_plan, context) -> dict[str, Prediction]:
    images = {image.name: image for image in context.scan.images}
    found = {}
    for job in model_plan.predict:
        entry = context.cache.get(job.key)
        if entry is None:
            continue
        image = images[job.image]
        found[image.name] = Prediction(
            image=image.name,
            breed=image.breed,
            species=image.species,
            top=tuple(entry.meta["top"]),
            probabilities=tuple(entry.meta["probabilities"]),
        )
    return found


def model_view(model_plan, context, assets: Assets, slugs: Slugs, photos: dict) -> ModelView:
    cache, config = context.cache, model_plan.config
    base = f"models/{slugs(config.id)}"
    image_slugs = Slugs()
    image_paths = {
        image.name: f"{base}/images/{image_slugs(image.name)}.html" for image in context.scan.images
    }
    image_entries = {job.image: cache.get(job.key) for job in model_plan.images}
    breeds = {image.name: class_title(context.breeds, image.breed) for image in context.scan.images}
    layers = _layer_views(
        model_plan, cache, base, assets, image_paths, photos, image_entries, breeds
    )
    predictions = _predictions(model_plan, context)
    views = _image_views(
        model_plan, context, assets, photos, image_paths, layers, predictions, image_entries
    )
    evaluated = {image.name for image in evaluation_images(context.scan.images, config.trained_on)}
    scored = [p for name, p in predictions.items() if name in evaluated]
    metrics = _metrics(model_plan, context, scored)
    shown = _shown_layer(layers)
    return ModelView(
        cam_scores=cam_scores(model_plan, context, layers, image_paths),
        id=config.id,
        title=config.title,
        path=f"{base}/index.html",
        facts=model_plan.facts,
        layers=layers,
        images=views,
        metrics=metrics,
        notes=markdown_html(config.notes),
        random_weights=model_plan.facts["random_weights"],
        units=sum(len(layer.units) for layer in layers),
        seconds=sum(layer.seconds for layer in layers),
        renderers=Counter(u.backend for layer in layers for u in layer.units).most_common(),
        source=config.application or (config.file.name if config.file else ""),
        picture=shown.best if shown else None,
        picture_size=shown.best_size if shown else (1, 1),
        picture_layer=shown.name if shown else "",
        gradcam_alpha=config.render.gradcam_alpha,
        confusions=_confusions([v for v in views if v.name in evaluated]),
        space=model_plan.space,
        evaluation=model_plan.evaluation,
        evaluated=len(scored),
        matrix_svg=(
            confusion_svg(
                metrics,
                _titles(context.breeds, model_plan.space),
                dataset_words(context.scan.layout)["class"],
            )
            if metrics and metrics.matrix
            else None
        ),
        config_read_at=config.read_at,
        trained_on=config.trained_on,
        predictions=predictions,
        evaluated_names=frozenset(evaluated),
        atlases=atlas_views(model_plan, context, assets, layers, views, photos),
    )


def _metrics(model_plan, context, scored: list[Prediction]):
    """Accuracy on the evaluated photos; None for a model without classes or photos
    without labels."""
    if model_plan.space is None or not context.scan.labelled:
        return None
    return pets_metrics(scored, model_plan.space, context.breeds)


def _shown_layer(layers: list[LayerView]) -> LayerView | None:
    """The layer whose picture stands for the model: three quarters deep, past edges and
    textures, before the 1x1 class logits."""
    pictured = [layer for layer in layers if layer.best]
    return pictured[(3 * len(pictured)) // 4] if pictured else None


def _image_views(
    model_plan,
    context,
    assets: Assets,
    photos: dict,
    image_paths: dict,
    layers,
    predictions,
    image_entries: dict,
) -> list[ImageView]:
    """A view of each photo the model predicted or mapped, with its layers' maps."""
    views, detailed = [], {image.name for image in context.detailed}
    for image in context.scan.images:
        prediction = predictions.get(image.name)
        entry = image_entries.get(image.name)
        if prediction is None and entry is None:
            continue
        view = _image_view(
            image,
            prediction,
            model_plan,
            context,
            image_paths[image.name],
            photos,
            image.name in detailed,
        )
        if entry is not None:
            _add_image_layers(view, entry, layers, model_plan.space, assets)
        views.append(view)
    return views


def _titles(breeds, space) -> dict[str, str]:
    """Breed key -> display name, for every breed the model has a class for."""
    keys = {key for names in space.class_breeds for key in names}
    return {
        key: breeds.breeds[key].title if key in breeds.breeds else breed_title(key) for key in keys
    }


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
