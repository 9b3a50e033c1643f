"""Scores of every layer's class activation maps for one photo (the ``scores`` jobs).

Localisation needs only the cached maps and the photo's trimap; faithfulness (deletion and
insertion, see ``atlas.analysis.scores``) runs the model on the photo with its pixels removed or
added in the order of each map, every curve of every layer and method batched into
fixed-size forward passes (``cams.Feed``).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Collection, Sequence

import numpy as np
from PIL import Image, ImageFilter

from atlas.analysis import scores
from atlas.cache.store import Cache
from atlas.data.batches import iter_batches
from atlas.data.scan import DatasetImage
from atlas.plan.jobs import Job
from atlas.render.cams import SCORE_BATCH, Feed
from atlas.render.device import forward_batch
from atlas.render.engine import B, ops
from atlas.render.load import LoadedModel

log = logging.getLogger(__name__)

# Insertion starts from the photo blurred this much (RISE blurs with sigma 5 at 224 px).
BLUR_RADIUS = 4.0


def cached_maps(entry, layers: int, methods: Sequence[str]) -> dict[str, list[np.ndarray]]:
    """The top-1 class maps of an image entry: method -> per layer (h, w) in [0, 1]."""
    found = {}
    for method in methods:
        maps = []
        for index in range(layers):
            name = f"raw0_{index}.png" if method == "gradcam" else f"{method}0_{index}.png"
            with Image.open(io.BytesIO(entry.read(name))) as picture:
                maps.append(np.asarray(picture, np.float32) / 255.0)
        found[method] = maps
    return found


def curve_inputs(
    photo: np.ndarray, saliency: np.ndarray, blurred: np.ndarray, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """The inner points of a deletion and an insertion curve: (steps - 1, H, W, 3) each.

    Step ``s`` removes (deletion: sets to black) or restores (insertion: into the blurred
    photo) the ``s / steps`` most salient pixels. The end points are the same for every map
    (the photo, black, the blurred photo) and are run once per photo.
    """
    height, width = photo.shape[:2]
    order = np.argsort(-saliency.ravel(), kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))  # each pixel's place in the saliency order
    counts = np.array([round(step * len(order) / steps) for step in range(1, steps)])
    chosen = (rank[None, :] < counts[:, None])[..., None]  # (steps - 1, pixels, 1)
    flat, soft = photo.reshape(1, -1, 3), blurred.reshape(1, -1, 3)
    deletion = np.where(chosen, photo.dtype.type(0), flat).astype(photo.dtype, copy=False)
    insertion = np.where(chosen, flat, soft).astype(blurred.dtype, copy=False)
    shape = (steps - 1, height, width, 3)
    return deletion.reshape(shape), insertion.reshape(shape)


def is_empty(cam: np.ndarray) -> bool:
    """Whether a map says nothing: all zero or constant (Grad-CAM with no positive
    evidence at a layer). Its scores are undefined, not zero: left out of the means."""
    return bool(cam.size == 0 or float(cam.max()) <= float(cam.min()))


def faithfulness(
    probabilities: Callable[[Feed], np.ndarray],
    feed: Feed,
    photo: np.ndarray,
    maps: dict[str, list[np.ndarray]],
    class_index: int,
    steps: int = scores.STEPS,
    layers: Collection[int] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Deletion and insertion AUCs of each method's map of each layer for one photo.

    Args:
        probabilities: runs what was fed and returns every input's class probabilities.
        feed: the batching feed the curves' inputs go into.
        photo: the photo at the model's input size, uint8 (H, W, 3).
        maps: method -> per layer (h, w) map; an empty map (:func:`is_empty`) gets no
            curve and None for its AUCs.
        class_index: the class whose probability is followed (the maps' class).
        layers: the indices of the layers scored (None: all); the others get None.
    """
    blurred = np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(BLUR_RADIUS)))
    ends = np.stack([photo, np.zeros_like(photo), blurred])
    feed.add(ops.convert_to_tensor(ends, "float32"))
    order = []
    for method, per_layer in maps.items():
        for layer, cam in enumerate(per_layer):
            if (layers is not None and layer not in layers) or is_empty(cam):
                continue
            saliency = scores.resize_map(cam, photo.shape[:2])
            deletion, insertion = curve_inputs(photo, saliency, blurred, steps)
            feed.add(ops.convert_to_tensor(np.concatenate([deletion, insertion]), "float32"))
            order.append((method, layer))
    followed = probabilities(feed)[:, class_index]
    full, black, blur = followed[:3]
    result: dict[str, dict[str, list[float | None]]] = {
        "deletion": {m: [None] * len(v) for m, v in maps.items()},
        "insertion": {m: [None] * len(v) for m, v in maps.items()},
    }
    inner = steps - 1
    for position, (method, layer) in enumerate(order):
        block = followed[3 + 2 * inner * position : 3 + 2 * inner * (position + 1)]
        deletion = [full, *block[:inner], black]
        insertion = [blur, *block[inner:], full]
        result["deletion"][method][layer] = round(scores.area_under(deletion), 5)
        result["insertion"][method][layer] = round(scores.area_under(insertion), 5)
    return result


def run_scores(
    loaded: LoadedModel,
    jobs: Sequence[Job],
    images: dict[str, DatasetImage],
    cache: Cache,
    progress: Callable[[int], None],
) -> None:
    """Localisation and (for the chosen photos) faithfulness of every layer and method."""
    model = loaded.logits_model()
    forward = B.compile(lambda x: loaded.probabilities(model(loaded.preprocess(x), training=False)))
    per_pass = forward_batch(model, loaded.input_size[0], SCORE_BATCH)
    faithful = [images[job.image] for job in jobs if job.extra["faithful"]]
    photos = {}
    for batch_images, batch in iter_batches(faithful, loaded.input_size):
        photos.update(zip((image.name for image in batch_images), batch, strict=True))
    for job in jobs:
        start = time.perf_counter()
        entry = cache.get(job.extra["image_key"])
        if entry is None:  # an interrupted build: the maps come first
            continue
        layers, methods = len(entry.meta["shapes"]), job.extra["methods"]
        maps = cached_maps(entry, layers, methods)
        meta: dict = {"class": entry.meta["cam_classes"][0], "layers": layers}
        if job.extra["trimap"] is not None:
            meta.update(_localisation(maps, scores.load_trimap(job.extra["trimap"])))
        if job.extra["faithful"] and job.image in photos:
            feed = Feed(forward, per_pass)
            scored = [i for i in job.extra["faith_layers"] if i < layers]
            meta.update(
                faithfulness(
                    lambda f: f.finish(),
                    feed,
                    photos[job.image],
                    maps,
                    meta["class"],
                    layers=set(scored),
                )
            )
            meta["faith_layers"] = scored
        meta["seconds"] = round(time.perf_counter() - start, 3)
        cache.put(job.key, meta)
        progress(1)


def _localisation(maps: dict[str, list[np.ndarray]], trimap: np.ndarray) -> dict:
    """Energy on the pet and the pointing game of each map; None for an empty map."""
    weight = scores.pet_weight(trimap)
    energy: dict[str, list] = {}
    pointing: dict[str, list] = {}
    for method, per_layer in maps.items():
        for cam in per_layer:
            share, hit = (None, None) if is_empty(cam) else scores.localisation(cam, trimap, weight)
            energy.setdefault(method, []).append(None if share is None else round(share, 5))
            pointing.setdefault(method, []).append(None if hit is None else int(hit))
    return {"energy": energy, "pointing": pointing}
