"""Planning activation atlases: which layers, which photos, and each stage's job and key.

One layer's atlas is five kinds of cache entry, each keyed by what determines it:

* ``atlas_samples``: activation vectors at seeded positions of the chosen photos, read at
  the layer's unit tensor (:mod:`atlas.render.atlas`). Keyed by the tensor's content
  address, not the model: two models sharing a frozen backbone share them.
* ``atlas_layout``: the 2-D layout, its grid, each cell's direction and whitened direction
  (:mod:`atlas.analysis.atlas`, in the build process). Keyed by the samples' key.
* ``atlas_cell``: one cell's picture, the whitened direction ascended at the layer's
  centre position. Keyed by the address, the direction's digest and the method: shared.
* ``atlas_labels``: per model, each cell's class by attribution (activation x gradient of
  the class logit at the vector's position); a model without classes has none (its cells
  take the dataset class most frequent among their photos).
* ``atlas``: per model, the stitched picture and the page's cells (what the site reads).

Every key but the cells' is known before anything is rendered; the cells' keys follow
from the cached layout (:func:`cell_jobs`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from atlas.config.atlas import MAX_PER_PHOTO, MIN_PER_PHOTO, AtlasSettings
from atlas.config.names import select_layers
from atlas.config.settings import ModelConfig
from atlas.data.scan import DatasetImage
from atlas.plan.jobs import Job, _picture_fields, _version, _versions, job_key

log = logging.getLogger(__name__)

BORDER = 1  # positions this close to the map's edge are not sampled (padding artefacts)
CELL_PX = 64  # the stitched atlas' cell side in pixels
ICON_PX = 96  # a cell picture's stored side


@dataclass
class AtlasPlan:
    """One model's atlas of one layer: its jobs (``cells`` once the layout is cached)."""

    layer: dict
    samples: Job
    layout: Job
    labels: Job | None  # None: no classes, the cells take their photos' dataset class
    atlas: Job
    cells: list[Job] = field(default_factory=list)


def atlas_layers(layers: Sequence[dict], settings: AtlasSettings) -> list[dict]:
    """The layers that get an atlas: the configured names or patterns, else
    ``settings.count`` spread evenly over the depth (the deepest included) among the
    layers with room for samples away from the border (at least 6 x 6 positions),
    depthwise convolutions left out when others qualify (their units see one channel)."""
    if not settings.enabled:
        return []
    if settings.layers is not None:
        chosen = set(select_layers([layer["name"] for layer in layers], settings.layers))
        return [layer for layer in layers if layer["name"] in chosen]
    roomy = [layer for layer in layers if min(_map_shape(layer)) >= 2 * BORDER + 6]
    full = [layer for layer in roomy if layer["type"] != "DepthwiseConv2D"] or roomy
    count = min(settings.count, len(full))
    if count == 0:
        return []
    if count == 1:
        return [full[-1]]
    picks = sorted({round((len(full) - 1) * (i + 1) / count) for i in range(count)})
    return [full[i] for i in picks]


def _map_shape(layer: dict) -> tuple[int, int]:
    shape = layer["output_shape"]
    return (int(shape[1] or 0), int(shape[2] or 0))


def sample_photos(images: Sequence[DatasetImage], samples: int) -> tuple[list[DatasetImage], int]:
    """The photos an atlas reads and the positions read per photo: every photo while
    ``samples`` allows :data:`MAX_PER_PHOTO` or fewer each (at least
    :data:`MIN_PER_PHOTO`), else an even spread of them."""
    if not images:
        return [], 0
    per_photo = max(MIN_PER_PHOTO, min(MAX_PER_PHOTO, samples // len(images)))
    used = max(1, min(len(images), samples // per_photo))
    if used == len(images):
        return list(images), per_photo
    return [images[(i * len(images)) // used] for i in range(used)], per_photo


def plan_atlases(
    model: ModelConfig,
    identity: dict,
    layers: Sequence[dict],
    images: Sequence[DatasetImage],
    input_size: Sequence[int],
    params: object,
    has_classes: bool,
) -> dict[str, AtlasPlan]:
    """Every atlas of a model, layer name -> its plan (see the module docstring)."""
    settings = model.atlas
    photos, per_photo = sample_photos(images, settings.samples)
    if not photos:
        return {}
    plans = {}
    for layer in atlas_layers(layers, settings):
        samples = samples_job(model, layer, photos, per_photo, input_size)
        layout = layout_job(model, samples)
        labels = labels_job(model, identity, layer, layout) if has_classes else None
        final = atlas_job(model, layer, layout, labels, params, photos)
        plans[layer["name"]] = AtlasPlan(layer, samples, layout, labels, final)
    return plans


def samples_job(
    model: ModelConfig,
    layer: dict,
    photos: Sequence[DatasetImage],
    per_photo: int,
    input_size: Sequence[int],
) -> Job:
    seed = model.render.seed
    key = job_key(
        "atlas_samples",
        {
            "address": layer["address"],
            "photos": _digest([photo.digest for photo in photos]),
            "per_photo": per_photo,
            "border": BORDER,
            "seed": seed,
            "size": list(input_size),
            **_versions(),
        },
    )
    extra = {"photos": [photo.name for photo in photos], "per_photo": per_photo, "seed": seed}
    return Job("atlas_samples", model.id, key, layer=layer["name"], extra=extra)


def layout_job(model: ModelConfig, samples: Job) -> Job:
    settings = model.atlas
    key = job_key(
        "atlas_layout",
        {
            "samples": samples.key,
            "grid": settings.grid,
            "min_count": settings.min_count,
            "layout": settings.layout,
            "seed": model.render.seed,
            "scikit-learn": _version("scikit-learn"),
            **({"umap": _version("umap-learn")} if settings.layout == "umap" else {}),
        },
    )
    extra = {"samples": samples.key, "settings": settings, "seed": model.render.seed}
    return Job("atlas_layout", model.id, key, layer=samples.layer, extra=extra)


def labels_job(model: ModelConfig, identity: dict, layer: dict, layout: Job) -> Job:
    key = job_key(
        "atlas_labels",
        {"model": identity, "layout": layout.key, "read_at": layer["read_at"]},
    )
    extra = {"layout": layout.key, "samples": layout.extra["samples"]}
    return Job("atlas_labels", model.id, key, layer=layer["name"], extra=extra)


def atlas_job(
    model: ModelConfig,
    layer: dict,
    layout: Job,
    labels: Job | None,
    params: object,
    photos: Sequence[DatasetImage],
) -> Job:
    """The stitched atlas: keyed by its layout, its labels (or its photos' classes) and
    what its cell pictures depend on besides their directions."""
    key = job_key(
        "atlas",
        {
            "layout": layout.key,
            "labels": labels.key if labels is not None else None,
            "photo_classes": None if labels else _digest([str(p.label) for p in photos]),
            "cells": _cell_fields(model, layer, params),
            "cell_px": CELL_PX,
            "field": layer.get("receptive_field"),
        },
    )
    return Job("atlas", model.id, key, layer=layer["name"])


def _cell_fields(model: ModelConfig, layer: dict, params: object) -> dict:
    fields = _picture_fields(model, layer, 0, params)
    fields.pop("unit")
    return {**fields, "cossim_pow": model.atlas.cossim_pow, "icon": ICON_PX}


def cell_jobs(
    model: ModelConfig, layer: dict, params: object, directions, whitened, mean
) -> list[Job]:
    """One job per cell of a cached layout (``directions`` and ``whitened``: its rows;
    ``mean``: the layer's mean vector, which the cell's cosine is measured from)."""
    fields = _cell_fields(model, layer, params)
    jobs = []
    for raw, white in zip(directions, whitened, strict=True):
        digest = hashlib.sha256(white.tobytes() + raw.tobytes() + mean.tobytes()).hexdigest()
        seed = int(digest[:8], 16) & 0x7FFFFFFF
        key = job_key("atlas_cell", {**fields, "direction": digest, "seed": seed})
        extra = {"direction": raw, "whitened": white, "seed": seed, "mean": mean}
        jobs.append(Job("atlas_cell", model.id, key, layer=layer["name"], extra=extra))
    return jobs


def _digest(values: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(values).encode()).hexdigest()


def read_array(entry, name: str):
    """A NumPy array stored in a cache entry (``np.save`` format, no pickles)."""
    import io

    import numpy as np

    return np.load(io.BytesIO(entry.read(name)), allow_pickle=False)


def known_cells(plans: dict[str, AtlasPlan], model: ModelConfig, params: object, cache) -> None:
    """Each plan's cell jobs, where its layout is cached (else they stay unknown)."""
    for plan in plans.values():
        entry = cache.get(plan.layout.key)
        if entry is None:
            continue
        try:
            directions = read_array(entry, "directions.npy")
            whitened = read_array(entry, "whitened.npy")
            mean = read_array(entry, "mean.npy")
        except (OSError, ValueError) as error:
            log.warning("atlas layout of %s unreadable (%s): made again", plan.layer["name"], error)
            continue
        plan.cells = cell_jobs(model, plan.layer, params, directions, whitened, mean)


# -- costs for `atlas plan` ------------------------------------------------------------------

ATLAS_PAGE_BYTES = 150_000  # an atlas page with its cells' data (default site: 149-154 KB)
ATLAS_PICTURE_BYTES = 300_000  # the stitched 1,280-px WebP (default site: 244-338 KB)
# Cells a layout keeps, before it exists: about one per 15 vectors, at most 62 % of the
# grid (the default site's 3,552 vectors on a 20 x 20 grid kept 227-234 cells).
VECTORS_PER_CELL = 15
GRID_SHARE = 0.62


def expected_cells(plan: AtlasPlan, settings: AtlasSettings) -> int:
    """The cells of a layout, counted if it is cached, else estimated."""
    if plan.cells:
        return len(plan.cells)
    vectors = len(plan.samples.extra["photos"]) * plan.samples.extra["per_photo"]
    return int(min(GRID_SHARE * settings.grid**2, vectors / VECTORS_PER_CELL))


def cell_gflop(facts: dict, prefix: dict, layer: str, params: object, max_steps=None) -> float:
    """One cell picture's GFLOPs: a unit picture's at that layer (same steps and size)."""
    from atlas.plan import estimate

    steps = estimate.unit_steps(params, max_steps)
    area = estimate.picture_area(params, facts["input_size"])
    return estimate.job_gflop("unit", facts, prefix, layer=layer, steps=steps, area=area)


def cost_rows(model_plan, max_steps: int | None = None) -> list[tuple]:
    """``(kind, jobs, published bytes each, GFLOPs each)`` of a model's atlases for the
    plan's table; cells not known yet (no layout) stand in as placeholder jobs."""
    from atlas.analysis.atlas import LABEL_SAMPLES
    from atlas.plan import estimate

    facts, params = model_plan.facts, model_plan.params
    prefix = estimate.prefix_flops(facts)
    whole = max(prefix.values(), default=0.0)
    plans = list(model_plan.atlas_plans.values())
    if not plans:
        return []
    settings = model_plan.config.atlas
    photos = len(plans[0].samples.extra["photos"])
    deepest = max(prefix.get(p.layer["name"], 0.0) for p in plans)
    cells, cell_gflops, labels_gflop = [], [], []
    for plan in plans:
        count = expected_cells(plan, settings)
        cells += plan.cells or [
            Job("atlas_cell", model_plan.config.id, f"estimate-{plan.layout.key}-{i}")
            for i in range(count)
        ]
        gflop = cell_gflop(facts, prefix, plan.layer["name"], params, max_steps)
        cell_gflops += [gflop] * count
        labels_gflop.append(3.0 * whole * count * LABEL_SAMPLES / 1e9)
    samples = [p.samples for p in plans]
    labels = [p.labels for p in plans if p.labels is not None]
    return [
        # one pass over the photos serves every layer: charged to the first job
        ("atlas_samples", samples, 0, [deepest * photos / 1e9] + [0.0] * (len(samples) - 1)),
        ("atlas_layout", [p.layout for p in plans], 0, [0.0] * len(plans)),
        ("atlas_labels", labels, 0, labels_gflop[: len(labels)] if labels else []),
        ("atlas_cell", cells, 0, cell_gflops),
        ("atlas", [p.atlas for p in plans], ATLAS_PICTURE_BYTES, [0.0] * len(plans)),
    ]
