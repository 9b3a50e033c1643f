"""The activation atlases' stages that run in the build process, between the tasks:
laying out the cached samples (:func:`make_layouts`), the labels' and cells' tasks
(:func:`atlas_tasks`), and stitching each finished atlas (:func:`stitch_atlases`).

See :mod:`atlas.plan.atlas` for the jobs and keys.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence

from atlas.errors import AtlasError
from atlas.plan import estimate
from atlas.plan.atlas import CELL_PX, AtlasPlan, cell_gflop, known_cells, read_array
from atlas.plan.jobs import ENCODING, Job

log = logging.getLogger(__name__)

CELL_TASK = 64  # cell pictures per task


def make_layouts(context, force: bool) -> None:
    """Lay out every atlas whose samples are cached and whose layout is missing, then
    plan the cells of every cached layout."""
    cache, done = context.cache, set()
    for model_plan in context.models:
        for plan in model_plan.atlas_plans.values():
            if plan.layout.key in done or cache.has(plan.atlas.key) and not force:
                continue
            done.add(plan.layout.key)
            if cache.has(plan.layout.key) and not force:
                context.count("atlas_layout", False)
                continue
            samples = cache.get(plan.samples.key)
            if samples is None:  # an interrupted build, or a shard's
                continue
            with context.timer.stage("atlas layouts"):
                make_layout(plan.layout, samples, cache)
            context.count("atlas_layout", True)
        known_cells(model_plan.atlas_plans, model_plan.config, model_plan.params, cache)


def make_layout(job: Job, samples, cache) -> None:
    """One layer's layout, cells, directions and chosen vectors (see
    :mod:`atlas.analysis.atlas`), into the cache."""
    import numpy as np

    from atlas.analysis import atlas as analysis

    started = time.perf_counter()
    settings, seed = job.extra["settings"], job.extra["seed"]
    vectors = read_array(samples, "vectors.npy")
    where = read_array(samples, "where.npy")
    try:
        layout = analysis.layout_2d(vectors, settings.layout, seed)
    except analysis.LayoutError as error:
        if settings.layout == "umap":
            raise AtlasError(f"{job.model}: {error}") from None
        log.warning("%s %s: no atlas: %s", job.model, job.layer, error)
        layout = np.zeros((len(vectors), 2), np.float32)
    cells = analysis.bin_cells(layout, vectors, settings.grid, settings.min_count)
    white = analysis.whitened(cells.directions, analysis.whitening(vectors))
    member_of = np.full(len(vectors), -1, np.int32)
    for index, members in enumerate(cells.members):
        member_of[members] = index
    picked = analysis.pick_members(cells, vectors, analysis.LABEL_SAMPLES)
    meta = {
        "layer": job.layer,  # as the model that planned it first names it
        "samples_key": job.extra["samples"],
        "grid": settings.grid,
        "samples": len(vectors),
        "layout": settings.layout,
        "min_count": settings.min_count,
        "cells": [
            {"row": int(r), "col": int(c), "count": int(n)}
            for r, c, n in zip(cells.rows, cells.cols, cells.counts, strict=True)
        ],
        "label_members": [[int(i) for i in chosen] for chosen in picked],
        "patches": analysis.patch_members(cells, vectors, where[:, 0]),
        "seconds": round(time.perf_counter() - started, 3),
    }
    files = {
        "layout.npy": _npy(layout.astype(np.float32)),
        "directions.npy": _npy(cells.directions),
        "whitened.npy": _npy(white),
        "mean.npy": _npy(vectors.astype(np.float64).mean(axis=0).astype(np.float32)),
        "members.npy": _npy(member_of),
    }
    cache.put(job.key, meta, files)
    log.info("%s %s: %d vectors laid out, %d cells", job.model, job.layer, len(vectors), len(cells))


def _npy(array) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def atlas_tasks(context, missing: Callable[[Sequence[Job]], list[Job]], max_steps: int | None):
    """The missing labels and cell pictures of the atlases still to stitch; a cell two
    models share (the same tensor and direction) is rendered once."""
    from atlas.execute.tasks import Task

    images = {image.name: image for image in context.scan.images}
    scheduled: set[str] = set()
    tasks = []
    for model_plan in context.models:
        plans = [p for p in model_plan.atlas_plans.values() if p.cells]
        plans = [p for p in plans if missing([p.atlas])]
        labels = missing([p.labels for p in plans if p.labels is not None])
        if labels:
            names = sorted(
                {n for job in labels for n in _plan_of(plans, job).samples.extra["photos"]}
            )
            tasks.append(
                Task(
                    "atlas_labels",
                    model_plan.config,
                    tuple(labels),
                    tuple(images[n] for n in names),
                    gflop=_labels_gflop(model_plan, labels),
                )
            )
        cells = [job for p in plans for job in missing(p.cells) if job.key not in scheduled]
        scheduled.update(job.key for job in cells)
        prefix = estimate.prefix_flops(model_plan.facts)
        for start in range(0, len(cells), CELL_TASK):
            chunk = tuple(cells[start : start + CELL_TASK])
            gflop = sum(
                cell_gflop(model_plan.facts, prefix, job.layer, model_plan.params, max_steps)
                for job in chunk
            )
            tasks.append(
                Task(
                    "atlas_cell",
                    model_plan.config,
                    chunk,
                    params=model_plan.params,
                    gflop=gflop,
                    max_steps=max_steps,
                )
            )
    return tasks


def _plan_of(plans: list[AtlasPlan], job: Job) -> AtlasPlan:
    return next(p for p in plans if p.labels is not None and p.labels.key == job.key)


def _labels_gflop(model_plan, jobs: Sequence[Job]) -> float:
    """A forward, a backward and their double-backward per attributed vector."""
    from atlas.analysis.atlas import LABEL_SAMPLES

    total = max(estimate.prefix_flops(model_plan.facts).values(), default=0.0)
    plans = list(model_plan.atlas_plans.values())
    vectors = sum(len(_plan_of(plans, job).cells) * LABEL_SAMPLES for job in jobs)
    return 3.0 * total * vectors / 1e9


def stitch_atlases(context, force: bool) -> None:
    """Each atlas whose parts are all cached: its picture and its page's cells."""
    cache = context.cache
    labels_of = {image.name: image.label for image in context.scan.images}
    for model_plan in context.models:
        for plan in model_plan.atlas_plans.values():
            if not force and cache.has(plan.atlas.key):
                context.count("atlas", False)
                continue
            parts = [cache.get(plan.samples.key), cache.get(plan.layout.key)]
            cells = [cache.get(job.key) for job in plan.cells]
            labels = cache.get(plan.labels.key) if plan.labels is not None else None
            missing = any(entry is None for entry in [*parts, *cells])
            if missing or (plan.labels is not None and labels is None):
                continue  # an interrupted or partial build: no atlas yet
            with context.timer.stage("atlas pictures"):
                meta, picture = atlas_page_data(
                    plan, *parts, cells, labels, labels_of, model_plan.input_size
                )
                cache.put(plan.atlas.key, meta, {"atlas.webp": picture})
            context.count("atlas", True)


def atlas_page_data(
    plan: AtlasPlan, samples, layout, cells: list, labels, labels_of: dict, input_size
) -> tuple[dict, bytes]:
    """What the atlas page reads (docs/architecture.md, "Activation atlases") and its
    stitched picture."""
    from atlas.analysis import atlas as analysis

    meta = layout.meta
    where = read_array(samples, "where.npy")
    photos = samples.meta["photos"]
    shape = tuple(samples.meta["shape"])
    grid_cells = meta["cells"]
    import numpy as np

    counts = np.asarray([c["count"] for c in grid_cells], np.int64)
    rows = np.asarray([c["row"] for c in grid_cells], np.int64)
    cols = np.asarray([c["col"] for c in grid_cells], np.int64)
    boxes = analysis.icon_boxes(counts, rows, cols, CELL_PX)
    found, kind = _cell_labels(layout, labels, labels_of, where, photos)
    field = plan.layer.get("receptive_field")
    page_cells = []
    for index, cell in enumerate(grid_cells):
        label, share, top = found[index]
        patches = [
            {
                "image": photos[int(where[i, 0])],
                "box": analysis.patch_box(
                    int(where[i, 1]), int(where[i, 2]), shape, field, input_size
                ),
            }
            for i in meta["patches"][index]
        ]
        page_cells.append(
            {
                **cell,
                "box": boxes[index],
                "label": label,
                "share": share,
                "top": top,
                "cos": cells[index].meta["cos"],
                "patches": patches,
            }
        )
    picture = _stitch([entry.read("cell.webp") for entry in cells], boxes, meta["grid"])
    seconds = meta["seconds"] + sum(entry.meta["seconds"] for entry in cells)
    return {
        "layer": plan.layer["name"],
        "grid": meta["grid"],
        "cell": CELL_PX,
        "samples": meta["samples"],
        "photos": len(photos),
        "layout": meta["layout"],
        "min_count": meta["min_count"],
        "label_kind": kind,
        "seconds": round(seconds + (labels.meta["seconds"] if labels else 0.0), 2),
        "cells": page_cells,
    }, picture


def _cell_labels(layout, labels, labels_of: dict, where, photos: list) -> tuple[list, str | None]:
    """Each cell's (label, share, top three) and the labels' kind: the model's classes by
    attribution, else the dataset class most frequent among the cell's photos."""
    import numpy as np

    from atlas.analysis import atlas as analysis

    if labels is not None:
        return [(c["label"], c["share"], c["top"]) for c in labels.meta["cells"]], "class"
    member_of = read_array(layout, "members.npy")
    members = [np.flatnonzero(member_of == i) for i in range(len(layout.meta["cells"]))]
    classes = [labels_of.get(photos[int(p)]) for p in where[:, 0]]
    found = analysis.photo_labels(members, classes)
    return found, "dataset" if any(label is not None for label, _, _ in found) else None


def _stitch(icons: list[bytes], boxes: list, grid: int) -> bytes:
    """The atlas picture: each cell's icon in its box on white."""
    from PIL import Image

    from atlas.data.images import encode_webp

    side = grid * CELL_PX
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    for data, (x, y, width, height) in zip(icons, boxes, strict=True):
        with Image.open(io.BytesIO(data)) as icon:
            canvas.paste(icon.convert("RGB").resize((width, height), Image.LANCZOS), (x, y))
    return encode_webp(canvas, quality=ENCODING["atlas"]["quality"])
