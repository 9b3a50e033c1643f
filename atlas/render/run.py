"""Executing the planned jobs that the cache does not hold (the Keras side).

Each finished asset is put in the cache as soon as it exists, so an interrupted build
keeps everything finished before the interruption.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby

import numpy as np

from atlas.cache.store import Cache
from atlas.data.batches import iter_batches
from atlas.data.images import encode_png, encode_webp
from atlas.data.scan import DatasetImage
from atlas.plan.jobs import ENCODING, Job
from atlas.render import draw
from atlas.render.device import BatchShapes
from atlas.render.engine import B, ops
from atlas.render.load import LoadedModel
from atlas.render.maps import MapRenderer, unit_maps

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
BATCH = 32
# Pillow releases the GIL while resizing and encoding: drawing uses both cores.
_DRAWING = ThreadPoolExecutor(max_workers=2)


def model_facts(loaded: LoadedModel) -> dict:
    """The model's facts for the site and for planning without TensorFlow."""
    model = loaded.keras_model
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return {
        "input_size": list(loaded.input_size),
        "params": int(model.count_params()),
        "trainable_params": trainable,
        "classes": loaded.graph.classes,  # None: no classification head
        "head": loaded.graph.head,
        "binary": loaded.graph.binary,
        "random_weights": loaded.random_weights,
        "layers": [layer.to_dict() for layer in loaded.graph.layers],
        "name": model.name,
    }


def run_predictions(
    loaded: LoadedModel,
    jobs: Sequence[Job],
    images: dict[str, DatasetImage],
    cache: Cache,
    progress: Progress,
) -> None:
    """Top-k classes for each image, batched, streamed from disk.

    The flat graph gives logits (a final softmax or sigmoid taken off); the model's own
    head turns them into probabilities once, here (:meth:`LoadedModel.probabilities`).
    """
    model = loaded.logits_model()
    # A traced function is ~3x faster than eager calls for this small model on the CPU.
    forward = B.compile(lambda x: model(loaded.preprocess(x), training=False))
    shapes = BatchShapes()
    top_k = max(5, loaded.config.render.top_k)
    by_image = {job.image: job for job in jobs}
    wanted = [images[name] for name in by_image]
    for batch_images, batch in iter_batches(wanted, loaded.input_size, batch_size=64):
        start = time.perf_counter()
        pixels = ops.convert_to_tensor(shapes.pad(batch), "float32")
        logits = ops.convert_to_numpy(forward(pixels))[: len(batch)]
        probabilities = loaded.probabilities(logits)
        seconds = (time.perf_counter() - start) / max(1, len(batch_images))
        for image, probs in zip(batch_images, probabilities, strict=True):
            top = np.argsort(-probs, kind="stable")[:top_k]
            cache.put(
                by_image[image.name].key,
                {
                    "top": [int(i) for i in top],
                    "probabilities": [round(float(probs[i]), 6) for i in top],
                    "seconds": round(seconds, 5),
                },
            )
        progress(len(batch_images))


def run_images(
    loaded: LoadedModel,
    jobs: Sequence[Job],
    images: dict[str, DatasetImage],
    layers: Sequence[str],
    cache: Cache,
    progress: Progress,
) -> None:
    """Activation grids, Grad-CAM overlays and channel statistics per image."""
    render = loaded.config.render
    gradcam = all(job.extra.get("gradcam", True) for job in jobs)
    model = loaded.graph.submodel(loaded.unit_tensors(layers), with_logits=gradcam)
    renderer = MapRenderer(
        model,
        loaded.preprocess,
        render.activation_channels,
        gradcam=gradcam,
        score_channels=render.scorecam_channels,
        probabilities=loaded.probabilities,
    )
    by_image = {job.image: job for job in jobs}
    wanted = [images[name] for name in by_image]
    for batch_images, batch in iter_batches(wanted, loaded.input_size, batch_size=BATCH):
        start = time.perf_counter()
        seconds_list = [
            job.extra["second_class"] for job in (by_image[i.name] for i in batch_images)
        ]
        results = renderer.run(batch, seconds_list)
        pass_seconds = (time.perf_counter() - start) / len(batch_images)
        drawn = _DRAWING.map(
            lambda pair: _image_assets(pair[0], pair[1], render, layers),
            zip(batch_images, results, strict=True),
        )
        for image, (files, meta) in zip(batch_images, drawn, strict=True):
            meta["seconds"] = round(pass_seconds + meta.pop("_draw_seconds"), 4)
            cache.put(by_image[image.name].key, meta, files)
        progress(len(batch_images))


def _image_assets(
    image: DatasetImage, maps, render, layers: Sequence[str]
) -> tuple[dict[str, bytes], dict]:
    """Per layer: the activation grid (WebP) and each Grad-CAM map as a grey PNG at the
    layer's own resolution, scaled by its peak (kept in ``cam_peaks``). The site blends
    the maps over the photo with jet at ``gradcam_alpha``: a few hundred bytes per map
    instead of a JPEG overlay each. The other CAM methods' maps are ``{method}{slot}_{i}.png``
    with their peaks in ``method_peaks``."""
    start = time.perf_counter()
    files: dict[str, bytes] = {}
    second_differs = len(maps.cam_classes) == 2 and maps.cam_classes[1] != maps.cam_classes[0]
    slots = (0, 1) if second_differs else (0,) if maps.cam_classes else ()
    cam_peaks: list[list[float]] = [[] for _ in slots]
    for index in range(len(layers)):
        files[f"act_{index}.webp"] = encode_webp(
            draw.activation_grid(
                maps.activations[index],
                render.activation_channels,
                max_side=ENCODING["image"]["grid_side"],
            ),
            quality=ENCODING["image"]["grid_quality"],
        )
        for slot in slots:
            cam = maps.cams[slot][index]
            cam_peaks[slot].append(round(float(cam.max()), 6))
            files[f"raw{slot}_{index}.png"] = encode_png(draw.map_to_png_array(cam))
    method_peaks = {}
    for method, per_slot in maps.method_cams.items():
        if method == "gradcam":
            continue
        method_peaks[method] = [[] for _ in slots]
        for slot in slots:
            for index, cam in enumerate(per_slot[slot]):
                method_peaks[method][slot].append(round(float(cam.max()), 6))
                files[f"{method}{slot}_{index}.png"] = encode_png(draw.map_to_png_array(cam))
    meta = {
        "cam_classes": maps.cam_classes if second_differs else maps.cam_classes[:1],
        "cam_peaks": cam_peaks,
        "method_peaks": method_peaks,
        "scorecam_channels": render.scorecam_channels if "scorecam" in method_peaks else 0,
        "top": [int(i) for i in np.argsort(-maps.logits, kind="stable")[:5]]
        if maps.logits.size
        else [],
        "channel_max": [_round(m) for m in maps.channel_max],
        "channel_mean": [_round(m) for m in maps.channel_mean],
        "shapes": [list(a.shape[:2]) for a in maps.activations],
        "_draw_seconds": time.perf_counter() - start,
    }
    return files, meta


def _round(values: np.ndarray) -> list[float]:
    return [float(f"{v:.5g}") for v in values.tolist()]


# Grouping layers for one traced unit renderer (see unit_groups). Measured on the 2-core
# CPU with the default MobileNet: tracing a step costs ~1.3 s, and a unit costs about
# (its model's forward GFLOPs) / 45 GFLOP/s more per step (the backward pass included).
TRACE_SECONDS = 1.5
FORWARD_FLOPS_PER_SECOND = 45e9


def unit_groups(prefix: Sequence[float], units: Sequence[int], steps: int) -> list[range]:
    """Split a model's conv layers (in network order) into runs that share one renderer.

    One renderer (one traced model with every layer of the run as an output) saves a
    trace per layer but runs every unit of the run through the run's deepest layer. The
    split minimises ``runs x TRACE_SECONDS + sum over units of steps x prefix[deepest] /
    FORWARD_FLOPS_PER_SECOND`` exactly (dynamic programming over the cut points).

    Args:
        prefix: each layer's forward FLOPs from the input (non-decreasing).
        units: each layer's unit count.
        steps: gradient steps per unit.

    Returns:
        the runs, as ranges of layer indices, in order.
    """
    count = len(prefix)
    best = [0.0] + [float("inf")] * count
    cut = [0] * (count + 1)
    for end in range(1, count + 1):
        in_run = 0
        for start in range(end - 1, -1, -1):
            in_run += units[start]
            cost = (
                best[start]
                + TRACE_SECONDS
                + in_run * steps * prefix[end - 1] / FORWARD_FLOPS_PER_SECOND
            )
            if cost < best[end]:
                best[end], cut[end] = cost, start
    runs, end = [], count
    while end > 0:
        runs.append(range(cut[end], end))
        end = cut[end]
    return runs[::-1]


def _unit_renderers(loaded: LoadedModel, params: object) -> dict[str, tuple]:
    """Layer name -> (the renderer of its run, its output index); built once per model.

    Each layer renders with its own parameters (:func:`methods.layer_params`: the
    small-field recipe), so a run of layers that share a renderer shares them too.
    """
    from atlas.config.methods import layer_params
    from atlas.plan import estimate
    from atlas.render import filters

    precision = loaded.config.render.precision
    key = (repr(params), precision)
    if key in loaded.renderers:
        return loaded.renderers[key]
    layers = loaded.conv_layers()
    facts = {
        "input_size": list(loaded.input_size),
        "layers": [layer.to_dict() for layer in loaded.graph.layers],
    }
    prefix = estimate.prefix_flops(facts)
    cap = loaded.config.render.units_per_layer
    units = [min(layer.channels or 1, cap or layer.channels or 1) for layer in layers]
    size = loaded.input_size[0]
    result = {}
    # consecutive layers with equal parameters (methods.layer_params) may share renderers
    for own, group in groupby(
        range(len(layers)), key=lambda i: layer_params(params, layers[i].receptive_field, size)
    ):
        chosen = list(group)
        runs = unit_groups(
            [prefix.get(layers[i].name, 0.0) for i in chosen],
            [units[i] for i in chosen],
            estimate.unit_steps(own),
        )
        for run in runs:
            names = [layers[chosen[i]].name for i in run]
            renderer = filters.UnitRenderer(
                loaded.features_model(names),
                own,
                loaded.preprocess,
                eval_size=size,
                precision=precision,
            )
            result.update({name: (renderer, index) for index, name in enumerate(names)})
    log.debug("%s: %d unit renderers", loaded.config.id, len({id(r) for r, _ in result.values()}))
    loaded.renderers[key] = result
    return result


def _layer_params(loaded: LoadedModel, params: object, layer: str) -> object:
    """The parameters of one layer's unit pictures (:func:`methods.layer_params`)."""
    from atlas.config.methods import layer_params

    try:
        field = loaded.graph.conv_facts(layer).receptive_field
    except KeyError:  # not a convolution's output: no known field
        field = None
    return layer_params(params, field, loaded.input_size[0])


def run_units(
    loaded: LoadedModel,
    jobs: Sequence[Job],
    params: object,
    cache: Cache,
    progress: Progress,
    max_steps: int | None = None,
) -> None:
    """Filter visualizations: the jobs' units in batches that may mix layers, each run of
    layers through one traced renderer kept on the model (see :func:`unit_groups`).

    Args:
        params: the method's parameters, as planned (they are in the jobs' keys).
    """
    renderers = _unit_renderers(loaded, params)
    by_renderer: dict[int, list[tuple[int, Job]]] = defaultdict(list)
    owner = {}
    for job in jobs:
        if job.layer not in renderers:  # not a selected layer: a renderer of its own
            from atlas.render import filters

            renderers[job.layer] = (
                filters.UnitRenderer(
                    loaded.feature_model(job.layer),
                    _layer_params(loaded, params, job.layer),
                    loaded.preprocess,
                    eval_size=loaded.input_size[0],
                    precision=loaded.config.render.precision,
                ),
                0,
            )
        renderer, index = renderers[job.layer]
        owner[id(renderer)] = renderer
        by_renderer[id(renderer)].append((index, job))
    from atlas.render.pictures import render_pictures

    for ident, pairs in by_renderer.items():
        render_pictures(owner[ident], pairs, cache, progress, max_steps)


def run_exemplars(
    loaded: LoadedModel,
    jobs: Sequence[Job],
    images: dict[str, DatasetImage],
    cache: Cache,
    progress: Progress,
) -> None:
    """Each unit's activation map on its most and least exciting photos, as small PNGs,
    with the map's peak and spatial mean."""
    needed = sorted(
        {name for job in jobs for names in job.extra["choices"].values() for name in names}
    )
    decoded = {}  # every layer's strongest images come from the same few photos
    for batch_images, batch in iter_batches([images[n] for n in needed], loaded.input_size):
        decoded.update(zip((image.name for image in batch_images), batch, strict=True))
    for job in jobs:
        start = time.perf_counter()
        choices: dict[int, list[str]] = job.extra["choices"]
        pairs = [(unit, name) for unit, names in sorted(choices.items()) for name in names]
        pairs = [(unit, name) for unit, name in pairs if name in decoded]
        arrays = {name: decoded[name] for _, name in pairs}
        order = sorted(arrays)
        position = {name: i for i, name in enumerate(order)}
        model = loaded.graph.submodel(loaded.unit_tensors([job.layer]))
        maps = unit_maps(
            model,
            loaded.preprocess,
            np.stack([arrays[name] for name in order])
            if order
            else np.zeros((0, *loaded.input_size, 3), np.uint8),
            [(position[name], unit) for unit, name in pairs],
        )
        files, index = {}, {}
        for (unit, name), values in zip(pairs, maps, strict=True):
            rank = len(index.setdefault(str(unit), []))
            peak = float(values.max())
            index[str(unit)].append(
                {"image": name, "max": round(peak, 5), "mean": round(float(values.mean()), 5)}
            )
            if values.shape[0] > 1 or values.shape[1] > 1:
                scaled = draw.map_to_png_array(np.maximum(values, 0))
                files[f"u{unit}_{rank}.png"] = encode_png(draw.colorize(scaled / 255.0, "viridis"))
        cache.put(
            job.key, {"units": index, "seconds": round(time.perf_counter() - start, 3)}, files
        )
        progress(1)
