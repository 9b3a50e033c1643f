"""Planning: config + model facts + dataset -> every job of a build, each with its key.

Pure functions, no TensorFlow: a build lists its jobs and checks the cache before any
model is loaded, so a build with nothing missing never imports TensorFlow, and the
progress bar counts only the missing work.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas.cache.keys import file_digest, make_key
from atlas.config.settings import ModelConfig
from atlas.data.scan import DatasetImage
from atlas.model.facts import REDIRECT

log = logging.getLogger(__name__)

# Bump the number of a kind whenever its rendering code changes what it outputs.
RENDERER_VERSION = {
    "facts": 4,
    "predict": 3,
    "image": 6,
    "photo": 1,
    "unit": 9,
    "grid": 2,
    "exemplars": 3,
    "scores": 3,
    "negative": 2,
    "diversity": 2,
    "atlas_samples": 1,
    "atlas_layout": 4,
    "atlas_labels": 1,
    "atlas_cell": 2,
    "atlas": 1,
}
# How assets are encoded; part of every key of their kind, so changing a value here
# re-renders exactly the assets it changes. Sized for the default site's 60 MB budget:
# 3,108 activation grids (~5 KB at 160 px, WebP 40: standardized feature maps are close to
# noise and compress poorly) and 3,736 unit pictures (~3.6 KB at WebP 70).
ENCODING: dict[str, dict[str, int]] = {
    "photo": {"photo_quality": 85, "thumb_quality": 80},
    "image": {"grid_side": 160, "grid_quality": 40},
    "unit": {"quality": 70},
    "grid": {
        "all_cell": 32,
        "all_cell_big_layer": 24,
        "all_quality": 70,
        "best_cell": 72,
        "best_quality": 70,
    },
    "exemplars": {},
    "negative": {"quality": 70},
    "diversity": {"quality": 70},
    "atlas_cell": {"quality": 80},
    "atlas": {"quality": 80},
}
PHOTO_SIDE = 320  # the photo shown on image pages and under heat maps
THUMB_SIDE = 112  # photo thumbnails in lists
# The CAM methods in page order (names in file names and keys); "gradcam" is the map atlas
# has always drawn. Titles are what pages call them.
CAM_METHODS = ("gradcam", "gradcampp", "layercam", "scorecam")
CAM_TITLES = {
    "gradcam": "Grad-CAM",
    "gradcampp": "Grad-CAM++",
    "layercam": "LayerCAM",
    "scorecam": "Score-CAM",
}
# The picture kinds of a unit: its channel picture, and the costly unit views
# (atlas.analysis.unit_views) rendered by the same traced renderer, in the same batches.
PICTURE_KINDS = ("unit", "negative", "diversity")


@functools.cache  # read once per process: every unit's key asks (7,500 times a build)
def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def model_identity(config: ModelConfig) -> dict[str, Any]:
    """Everything that determines a model's numbers: architecture, options, weights."""
    if isinstance(config.weights, Path):
        weights = {"file_sha256": file_digest(config.weights)}
    else:
        weights = {
            "id": config.weights,
            "seed": config.render.seed if config.weights == "none" else None,
        }
    return {
        "application": config.application,
        "file_sha256": file_digest(config.file) if config.file else None,
        "options": {
            k: list(v) if isinstance(v, tuple) else v for k, v in sorted(config.options.items())
        },
        "weights": weights,
        "read_at": config.read_at,
        **_versions(),
    }


def _versions() -> dict[str, str]:
    """Keras' version, in every model's identity. Not the backend nor its version: JAX
    and TensorFlow render within the tolerance tests/test_backend_*.py set (activation
    ratios within 2 %, CAMs correlated >= 0.99, the same top-1), so the two share a cache."""
    return {"keras": _version("keras")}


def job_key(kind: str, fields: dict[str, Any]) -> str:
    """A job's cache key: its kind, that kind's renderer version and encoding settings,
    and the fields that determine the asset. Every kind goes through here, so a version
    bump or an encoding change re-renders exactly the assets of that kind."""
    return make_key(
        {"kind": kind, "v": RENDERER_VERSION[kind], "encoding": ENCODING.get(kind, {}), **fields}
    )


def unit_seed(seed: int, layer: str, unit: int) -> int:
    """A unit's own seed: independent of batching and of which other units are rendered.

    ``layer`` is the layer's name inside its own model, so a backbone nested in another
    model gives its units the same seeds (and, with the same weights, the same pictures).
    """
    text = f"{seed}/{layer.rsplit('/', 1)[-1]}/{unit}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class Job:
    """One cacheable piece of work."""

    kind: str
    model: str
    key: str
    layer: str | None = None
    unit: int | None = None
    image: str | None = None  # the image's name
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def facts_job(model: ModelConfig, identity: dict) -> Job:
    key = job_key(
        "facts",
        {
            "model": identity,
        },
    )
    return Job("facts", model.id, key)


def photo_job(image: DatasetImage) -> Job:
    key = job_key(
        "photo",
        {
            "image": image.digest,
            "side": PHOTO_SIDE,
            "thumb": THUMB_SIDE,
        },
    )
    return Job("photo", "", key, image=image.name)


def predict_job(
    model: ModelConfig, identity: dict, image: DatasetImage, input_size: Sequence[int]
) -> Job:
    key = job_key(
        "predict",
        {
            "model": identity,
            "image": image.digest,
            "size": list(input_size),
            "top_k": max(5, model.render.top_k),
        },
    )
    return Job("predict", model.id, key, image=image.name)


def image_job(
    model: ModelConfig,
    identity: dict,
    image: DatasetImage,
    layers: Sequence[str],
    second_class: int,
    input_size: Sequence[int],
    gradcam: bool = True,
) -> Job:
    """An image's activation grids and statistics for every layer, and its Grad-CAM maps
    (top-1 and ``second_class``, the true label; none for a model without classes)."""
    render = model.render
    key = job_key(
        "image",
        {
            "model": identity,
            "image": image.digest,
            "layers": list(layers),
            "size": list(input_size),
            "channels": render.activation_channels,
            "alpha": render.gradcam_alpha,
            "second_class": second_class,
            "gradcam": gradcam,
            "scorecam_channels": render.scorecam_channels,
            "photo_side": PHOTO_SIDE,
        },
    )
    return Job(
        "image",
        model.id,
        key,
        image=image.name,
        extra={"second_class": second_class, "gradcam": gradcam},
    )


def scores_job(
    model: ModelConfig,
    image: Job,
    trimap: Path | None,
    faithful: bool,
    steps: int,
    faith_layers: Sequence[int] = (),
) -> Job:
    """Localisation (against the trimap, if any) of every layer's and method's top-1 map of
    one image, and faithfulness (if ``faithful``) of those of the layers ``faith_layers``
    (indices into the image job's layers), read from that image's job (no Score-CAM map
    when ``render.scorecam_channels`` is 0)."""
    methods = [m for m in CAM_METHODS if m != "scorecam" or model.render.scorecam_channels]
    faith_layers = list(faith_layers) if faithful else []
    key = job_key(
        "scores",
        {
            "image_job": image.key,
            "trimap": file_digest(trimap) if trimap is not None else None,
            "faithful": faithful,
            "steps": steps,
            "methods": methods,
            "faith_layers": faith_layers,
        },
    )
    extra = {
        "image_key": image.key,
        "trimap": trimap,
        "faithful": faithful,
        "methods": methods,
        "faith_layers": faith_layers,
    }
    return Job("scores", model.id, key, image=image.image, extra=extra)


def unit_params(
    model: ModelConfig, index: int, input_size: Sequence[int], quality: str | None = None
):
    """The model's filter-visualization parameters: its ``render.quality`` preset (or
    ``quality``) for its size + overrides.

    Raises:
        ConfigError: an override that is not a parameter of the method.
    """
    from atlas.config.methods import resolve_params

    render = model.render
    overrides = render.classic if render.method == "classic" else render.lucid
    return resolve_params(
        render.method,
        int(input_size[0]),
        overrides,
        f"models[{index}].render.{render.method}",
        quality or render.quality,
    )


def _picture_fields(model: ModelConfig, layer: dict, unit: int, params: object) -> dict:
    """What every picture of a unit depends on besides its seed(s) and objective."""
    return {
        "address": layer["address"],
        "unit": unit,
        "method": repr(params),
        # gradient through an activation that is off (graph.ascent_model)
        "redirect": REDIRECT if layer.get("pre_activation") else None,
        **_versions(),
        # Left out at float32, so that keys made before the setting existed still hold.
        **({"precision": model.render.precision} if model.render.precision != "float32" else {}),
    }


def unit_job(model: ModelConfig, layer: dict, unit: int, params: object) -> Job:
    """A unit's picture, keyed by the content address of its tensor (``layer["address"]``:
    the preprocessing and every operation and weight up to it), not by the model: two
    models sharing a frozen backbone share its pictures."""
    layer_name = layer["name"]
    seed = unit_seed(model.render.seed, layer_name, unit)
    fields = _picture_fields(model, layer, unit, params)
    key = job_key("unit", {**fields, "seed": seed})
    return Job("unit", model.id, key, layer=layer_name, unit=unit, extra={"seed": seed})


def view_seed(seed: int, layer: str, unit: int, view: str, index: int) -> int:
    """The seed of a unit's negative (``index`` 0) or ``index``-th diversity picture: like
    :func:`unit_seed`, but never the channel picture's start."""
    text = f"{seed}/{layer.rsplit('/', 1)[-1]}/{unit}/{view}/{index}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "big") & 0x7FFFFFFF


def view_job(model: ModelConfig, layer: dict, unit: int, params: object, view: str) -> Job:
    """A unit's negative picture (its mean driven down) or its diversity pictures
    (:data:`atlas.config.methods.DIVERSITY_PICTURES` optimised together with the diversity
    term of weight ``DIVERSITY_WEIGHT``), keyed like its channel picture."""
    from atlas.config.methods import DIVERSITY_PICTURES, DIVERSITY_WEIGHT

    count = DIVERSITY_PICTURES if view == "diversity" else 1
    seeds = [view_seed(model.render.seed, layer["name"], unit, view, i) for i in range(count)]
    objective = (
        {"sign": 1, "diversity_weight": DIVERSITY_WEIGHT} if view == "diversity" else {"sign": -1}
    )
    key = job_key(
        view, {**_picture_fields(model, layer, unit, params), "seeds": seeds, **objective}
    )
    return Job(view, model.id, key, layer=layer["name"], unit=unit, extra={"seeds": seeds})


def grid_job(model: ModelConfig, layer: str, unit_keys: Sequence[str]) -> Job:
    key = job_key(
        "grid",
        {
            "units": list(unit_keys),
            "best": model.render.best_grid,
        },
    )
    return Job("grid", model.id, key, layer=layer)


def exemplars_job(
    model: ModelConfig,
    layer: dict,
    input_size: Sequence[int],
    choices: dict[int, list[str]],
    digests: dict[str, str],
) -> Job:
    """The maps of each unit on its most and least exciting photos (chosen from stats by
    :func:`atlas.analysis.unit_views.most_and_least`: the first ``MOST`` names are the most
    exciting), keyed by the content address of the units' tensor, like the units."""
    from atlas.config.views import MOST

    key = job_key(
        "exemplars",
        {
            "address": layer["address"],
            **_versions(),
            "size": list(input_size),
            "most": MOST,
            "choices": {
                str(u): [digests[n] for n in names] for u, names in sorted(choices.items())
            },
        },
    )
    return Job("exemplars", model.id, key, layer=layer["name"], extra={"choices": choices})
