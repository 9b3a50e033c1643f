"""Activation atlases, the Keras half: activation vectors from the photos, cells'
labels by attribution, and cells' pictures (see :mod:`atlas.plan.atlas` for the jobs).

* Samples: one forward pass per batch of photos to every atlased layer's unit tensor;
  each photo gives vectors at seeded positions away from the map's border.
* Labels: a vector's attribution to class ``c`` is ``a . d logit_c / d a`` at its
  position (activation x gradient, as in the paper), for every class at once: it is the
  forward derivative of the logits along ``a`` placed at that position
  (:func:`B.logits_jvp`: on TensorFlow the double-backward trick, where the gradient of
  ``u . logits`` is linear in ``u`` and its dot with the tangent, differentiated by ``u``,
  is the Jacobian-vector product; on JAX a linearisation).
* Cells: the unit renderer with a direction objective
  (:func:`atlas.render.objectives.direction_scores`), the same parameterisation,
  transforms and batching as unit pictures; each picture is cropped to the layer's
  receptive field around the centre, where the objective reads it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from atlas.analysis.atlas import attribution_labels
from atlas.cache.store import Cache
from atlas.data.batches import iter_batches
from atlas.data.images import encode_webp
from atlas.data.scan import DatasetImage
from atlas.plan.atlas import BORDER, ICON_PX
from atlas.plan.jobs import ENCODING, Job
from atlas.render.ascent import resize_to_model
from atlas.render.device import BatchShapes
from atlas.render.engine import B, ops
from atlas.render.load import LoadedModel

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
BATCH = 32
LABEL_BATCH = 64


def positions(shape: tuple[int, int], count: int, seed: int, digest: str, layer: str) -> np.ndarray:
    """``(n, 2)`` seeded ``(y, x)`` positions of a ``shape`` map, at least
    :data:`BORDER` from its edges, distinct; all of them when there are at most ``count``.
    The same photo (``digest``), layer and seed always give the same positions."""
    height, width = shape
    inner = [
        (y, x) for y in range(BORDER, height - BORDER) for x in range(BORDER, width - BORDER)
    ] or [(height // 2, width // 2)]
    text = f"{seed}/{layer.rsplit('/', 1)[-1]}/{digest}".encode()
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(text).digest()[:8], "big"))
    chosen = rng.permutation(len(inner))[: min(count, len(inner))]
    return np.asarray([inner[i] for i in sorted(chosen)], np.int32).reshape(-1, 2)


def run_atlas_samples(
    loaded: LoadedModel,
    jobs: Sequence[Job],
    images: dict[str, DatasetImage],
    cache: Cache,
    progress: Progress,
) -> None:
    """Activation vectors for atlases: one pass over the photos for all the jobs' layers
    (the jobs of one task read the same photos)."""
    started = time.perf_counter()
    names = list(jobs[0].extra["photos"])
    model = loaded.graph.submodel(loaded.unit_tensors([job.layer for job in jobs]))
    forward = B.compile(lambda x: model(loaded.preprocess(x), training=False))
    padding = BatchShapes()
    vectors: dict[int, list] = defaultdict(list)
    where: dict[int, list] = defaultdict(list)
    index = {name: i for i, name in enumerate(names)}
    shapes = {}
    for batch_images, batch in iter_batches([images[n] for n in names], loaded.input_size, BATCH):
        outputs = forward(ops.convert_to_tensor(padding.pad(batch), "float32"))
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        for k, (job, output) in enumerate(zip(jobs, outputs, strict=True)):
            values = ops.convert_to_numpy(output)[: len(batch)].astype(np.float32)
            shapes[k] = values.shape[1:3]
            for image, maps in zip(batch_images, values, strict=True):
                chosen = positions(
                    shapes[k], job.extra["per_photo"], job.extra["seed"], image.digest, job.layer
                )
                vectors[k].append(maps[chosen[:, 0], chosen[:, 1]])
                where[k] += [(index[image.name], int(y), int(x)) for y, x in chosen]
    seconds = (time.perf_counter() - started) / len(jobs)
    for k, job in enumerate(jobs):
        files = {
            "vectors.npy": _npy(np.concatenate(vectors[k]) if vectors[k] else np.zeros((0, 0))),
            "where.npy": _npy(np.asarray(where[k], np.int32).reshape(-1, 3)),
        }
        meta = {
            "layer": job.layer,
            "shape": [int(v) for v in shapes.get(k, (0, 0))],
            "photos": names,
            "seconds": round(seconds, 3),
        }
        cache.put(job.key, meta, files)
        progress(1)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def read_npy(entry, name: str) -> np.ndarray:
    return np.load(io.BytesIO(entry.read(name)), allow_pickle=False)


def attribution_function(loaded: LoadedModel, layer: str) -> Callable:
    """``f(images, masks) -> (n, classes)``: each image's attribution to every class of
    its activation at the one position ``masks`` marks (see the module docstring)."""
    model = loaded.graph.submodel(loaded.unit_tensors([layer]), with_logits=True)

    def attribute(images, masks):
        return B.logits_jvp(
            model,
            loaded.preprocess(images),
            lambda activations: activations * masks[..., None],
        )

    return B.compile(attribute)


def run_atlas_labels(
    loaded: LoadedModel,
    jobs: Sequence[Job],
    images: dict[str, DatasetImage],
    cache: Cache,
    progress: Progress,
) -> None:
    """Each cell's class by attribution, from the vectors the layout chose for it."""
    for job in jobs:
        started = time.perf_counter()
        samples, layout = cache.get(job.extra["samples"]), cache.get(job.extra["layout"])
        if samples is None or layout is None:
            log.warning("%s: atlas labels skipped, its layout is not cached", job.layer)
            continue
        where = read_npy(samples, "where.npy")
        members = layout.meta["label_members"]
        wanted = sorted({int(i) for cell in members for i in cell})
        values = _attributions(loaded, job.layer, where, wanted, samples.meta, images)
        labels = attribution_labels([values[[wanted.index(i) for i in cell]] for cell in members])
        cells = [
            {"label": label, "share": round(share, 4), "top": top} for label, share, top in labels
        ]
        meta = {
            "cells": cells,
            "vectors": len(wanted),
            "seconds": round(time.perf_counter() - started, 3),
        }
        cache.put(job.key, meta)
        progress(1)


def _attributions(
    loaded: LoadedModel,
    layer: str,
    where: np.ndarray,
    wanted: list[int],
    meta: dict,
    images: dict[str, DatasetImage],
) -> np.ndarray:
    """``(len(wanted), classes)`` attributions of the wanted vectors, in batches."""
    attribute = attribution_function(loaded, layer)
    names = meta["photos"]
    height, width = meta["shape"]
    photo_ids = sorted({int(where[i, 0]) for i in wanted})
    decoded = {}
    for batch_images, batch in iter_batches(
        [images[names[p]] for p in photo_ids], loaded.input_size, BATCH
    ):
        decoded.update(zip((image.name for image in batch_images), batch, strict=True))
    rows, padding = [], BatchShapes()
    for start in range(0, len(wanted), LABEL_BATCH):
        part = where[wanted[start : start + LABEL_BATCH]]
        pixels = np.stack([decoded[names[p]] for p in part[:, 0]]).astype(np.float32)
        masks = np.zeros((len(part), height, width), np.float32)
        masks[np.arange(len(part)), part[:, 1], part[:, 2]] = 1.0
        values = attribute(
            ops.convert_to_tensor(padding.pad(pixels)), ops.convert_to_tensor(padding.pad(masks))
        )
        rows.append(ops.convert_to_numpy(values)[: len(part)])
    return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)


def run_atlas_cells(
    loaded: LoadedModel,
    jobs: Sequence[Job],
    params: object,
    cache: Cache,
    progress: Progress,
    max_steps: int | None = None,
) -> None:
    """Cells' pictures: each whitened direction ascended at its layer's centre position,
    layer by layer through one traced renderer per layer (kept on the model)."""
    by_layer: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_layer[job.layer].append(job)
    for layer, layer_jobs in by_layer.items():
        renderer = _cell_renderer(loaded, layer, params)
        crop = _crop_share(loaded, layer)
        done = 0
        for results in renderer.render(
            [0] * len(layer_jobs),
            [job.extra["seed"] for job in layer_jobs],
            directions=[job.extra["whitened"] for job in layer_jobs],
            max_steps=max_steps,
        ):
            batch_jobs = layer_jobs[done : done + len(results)]
            done += len(results)
            icons = [_icon(result.picture, crop) for result in results]
            cosines = _centre_cosines(
                renderer,
                [r.picture for r in results],
                [j.extra["direction"] - j.extra["mean"] for j in batch_jobs],
                batch_jobs[0].extra["mean"],
            )
            for job, result, icon, cosine in zip(batch_jobs, results, icons, cosines, strict=True):
                data = encode_webp(icon, quality=ENCODING["atlas_cell"]["quality"])
                meta = {
                    "cos": round(float(cosine), 4),
                    "objective": round(result.objective, 5),
                    "steps": result.steps,
                    "seconds": round(result.seconds, 4),
                }
                cache.put(job.key, meta, {"cell.webp": data})
            progress(len(results))


def _cell_renderer(loaded: LoadedModel, layer: str, params: object):
    from atlas.render import filters

    key = ("atlas", layer, repr(params), loaded.config.render.precision)
    if key not in loaded.renderers:
        renderer = filters.UnitRenderer(
            loaded.feature_model(layer),
            params,
            loaded.preprocess,
            eval_size=loaded.input_size[0],
            precision=loaded.config.render.precision,
        )
        renderer.ascent.cossim_pow = loaded.config.atlas.cossim_pow
        loaded.renderers[key] = renderer
    return loaded.renderers[key]


def _crop_share(loaded: LoadedModel, layer: str) -> float:
    """The share of the picture's side a cell's icon keeps: the layer's receptive field
    over the model's input (at least a third of it)."""
    field = loaded.graph.conv_facts(layer).receptive_field or loaded.input_size[0]
    return float(min(1.0, max(field / loaded.input_size[0], 1 / 3)))


def _icon(picture: np.ndarray, share: float) -> np.ndarray:
    """The centre ``share`` of a picture, resized to :data:`ICON_PX`."""
    from PIL import Image

    side = picture.shape[0]
    keep = max(8, round(side * share))
    start = (side - keep) // 2
    crop = Image.fromarray(picture[start : start + keep, start : start + keep])
    return np.asarray(crop.resize((ICON_PX, ICON_PX), Image.BICUBIC))


def _centre_cosines(
    renderer, pictures: list[np.ndarray], directions: list[np.ndarray], mean: np.ndarray
) -> list[float]:
    """The cosine between each picture's activation at the layer's centre (the picture as
    published, at the model's input size) and its cell's direction, both less the layer's
    mean vector: ReLU activations all point roughly along the mean (the raw cosine of a
    random start with a cell of the default site's conv_pw_7 is 0.89), so only the part
    that sets a cell apart says whether the picture shows it."""
    from atlas.render.filters import as_published

    size = renderer.model_size or pictures[0].shape[0]
    shown = np.stack([as_published(picture) for picture in pictures]).astype(np.float32)
    pixels = resize_to_model(ops.convert_to_tensor(shown), size)
    output = renderer.model(renderer.ascent.preprocess(pixels), training=False)
    output = output[0] if isinstance(output, list | tuple) else output
    values = np.asarray(output, np.float64)
    centre = values[:, values.shape[1] // 2, values.shape[2] // 2, :] - mean
    result = []
    for vector, direction in zip(centre, directions, strict=True):
        norm = np.linalg.norm(vector) * np.linalg.norm(direction)
        result.append(float(vector @ direction / norm) if norm > 0 else 0.0)
    return result
