"""How good each layer's class activation maps are: localisation and faithfulness.

Pure NumPy and Pillow (no TensorFlow): the per-photo numbers are computed where the maps
are rendered (``atlas.render.faith``), and summarised here for the model page.

- **Localisation** against the Oxford-IIIT Pet trimaps (1 pet, 2 background, 3 border):
  the share of the map's energy on the pet, counting the border at one half, and the
  pointing game, a hit when the map's peak lies on the pet or its border. Photos without a
  trimap are left out and counted.
- **Empty maps**: a map that is all zero or constant (Grad-CAM with no positive evidence at
  a layer) has no localisation and no deletion order: its scores are undefined (None), left
  out of the layer's means and counted, never taken as a score of 0.
- **Faithfulness** (Petsiuk et al. 2018, RISE): the class probability as the most salient
  pixels are deleted (set to black) or inserted (into a blurred copy), in ``STEPS`` equal
  steps; the area under each curve. Low deletion and high insertion AUCs are better.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from atlas.data.masks import STEPS

log = logging.getLogger(__name__)

PET, BACKGROUND, BORDER = 1, 2, 3
METRICS = ("energy", "pointing", "deletion", "insertion")
FAITHFULNESS = ("deletion", "insertion")  # the metrics that run the model (forward passes)
METRIC_TITLES = {
    "energy": "energy on the pet",
    "pointing": "pointing game",
    "deletion": "deletion AUC",
    "insertion": "insertion AUC",
}
HIGHER_IS_BETTER = {"energy": True, "pointing": True, "deletion": False, "insertion": True}


def load_trimap(path: Path) -> np.ndarray:
    """A mask as a trimap, (height, width) uint8 values 1 (object), 2 (background), 3
    (border): an Oxford trimap as it is; a binary mask (0 and 255, or 0 and 1: any mask
    with a 0) as object where it is not 0, background elsewhere."""
    with Image.open(path) as image:
        values = np.asarray(image.convert("L"), dtype=np.uint8)
    if (values == 0).any():
        return np.where(values > 0, PET, BACKGROUND).astype(np.uint8)
    return values


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (h, w) map resized bilinearly to ``size`` = (height, width), as float32.

    The model saw its photo squashed to the input size, so a map of the whole input
    covers the whole photo: resizing to the photo's size puts every cell where it was.
    """
    image = Image.fromarray(np.asarray(values, np.float32), mode="F")
    return np.asarray(image.resize((size[1], size[0]), Image.BILINEAR), np.float32)


def pet_weight(trimap: np.ndarray) -> np.ndarray:
    """Each pixel's share of the pet: 1 on the pet, 1/2 on its border, 0 elsewhere."""
    return np.where(trimap == PET, 1.0, np.where(trimap == BORDER, 0.5, 0.0))


def localisation(
    cam: np.ndarray, trimap: np.ndarray, weight: np.ndarray | None = None
) -> tuple[float, bool]:
    """(share of the map's energy on the pet, whether its peak is on the pet).

    Args:
        cam: a non-negative map at any resolution.
        trimap: the photo's trimap (1 pet, 2 background, 3 border).
        weight: ``pet_weight(trimap)``, when one photo's maps are scored in a row (a
            photo has 4 methods x every layer of maps: computed once, not per map).
    """
    values = np.maximum(resize_map(cam, trimap.shape), 0.0)
    total = float(values.sum())
    if total <= 0:
        raise ValueError("an empty map has no localisation (leave it out: see is_empty)")
    weight = pet_weight(trimap) if weight is None else weight
    share = float((values * weight).sum() / total)
    peak = np.unravel_index(int(np.argmax(values)), values.shape)
    return share, bool(trimap[peak] in (PET, BORDER))


def area_under(curve: Sequence[float]) -> float:
    """The trapezoidal area under a curve sampled at equal steps over [0, 1]."""
    values = np.asarray(curve, np.float64)
    if len(values) < 2:
        return float(values.sum())
    return float(((values[1:] + values[:-1]) / 2).sum() / (len(values) - 1))


def summarise(
    entries: Sequence[dict], layers: int, methods: Sequence[str]
) -> dict[str, dict[str, list[tuple[float | None, int]]]]:
    """Per metric, method and layer: (mean over photos, how many photos), from the
    per-photo score records (``meta`` of the scores jobs). Undefined scores (None: the
    photo's map at that layer was empty) are left out of both."""
    table: dict[str, dict[str, list[tuple[float | None, int]]]] = {}
    for metric in METRICS:
        table[metric] = {}
        for method in methods:
            column = []
            for layer in range(layers):
                values = [
                    float(entry[metric][method][layer])
                    for entry in entries
                    if entry.get(metric)
                    and method in entry[metric]
                    and entry[metric][method][layer] is not None
                ]
                column.append((float(np.mean(values)) if values else None, len(values)))
            table[metric][method] = column
    return table


def empty_counts(
    entries: Sequence[dict], layers: int, methods: Sequence[str]
) -> dict[str, dict[str, list[int]]]:
    """Per metric, method and layer, how many of the photos scored for that metric had an
    empty map there (an undefined score, None, left out of :func:`summarise`). A layer
    left out of a photo's deletion/insertion curves (its ``faith_layers``) is not empty."""
    return {
        metric: {
            method: [
                sum(
                    1
                    for entry in entries
                    if entry.get(metric)
                    and method in entry[metric]
                    and entry[metric][method][layer] is None
                    and (metric not in FAITHFULNESS or layer in scored_layers(entry, layers))
                )
                for layer in range(layers)
            ]
            for method in methods
        }
        for metric in METRICS
    }


def scored_layers(entry: dict, layers: int) -> set[int]:
    """The layers a photo's deletion/insertion curves were run for (all when unrecorded)."""
    return set(entry.get("faith_layers", range(layers)))


def best_cells(table: dict, metric: str) -> set[tuple[str, int]]:
    """The (method, layer) cells holding the best value of a metric (ties all marked)."""
    cells = [
        (value, method, layer)
        for method, column in table[metric].items()
        for layer, (value, _) in enumerate(column)
        if value is not None
    ]
    if not cells:
        return set()
    pick = max if HIGHER_IS_BETTER[metric] else min
    best = pick(value for value, _, _ in cells)
    return {(method, layer) for value, method, layer in cells if abs(value - best) < 1e-9}


def score_view(
    records: Sequence[dict],
    layer_names: Sequence[str],
    methods: Sequence[str],
    detailed: int,
    faithful_photos: Sequence[tuple[str, str | None]] = (),
) -> dict | None:
    """What the model page shows: the table (rows: layers; per method the four metrics,
    each a mean and how many photos it rests on), the best cells, the photo counts, the
    empty maps left out, and the photos the deletion/insertion curves were run on.

    Args:
        records: the scores entries' ``meta`` of this model's photos.
        detailed: how many detailed photos there are (those without a trimap are counted).
        faithful_photos: (name, image page path) of each photo with deletion/insertion
            curves.
    """
    if not records:
        return None
    table = summarise(records, len(layer_names), methods)
    located = sum(1 for record in records if record.get("energy"))
    return {
        "layers": list(layer_names),
        "methods": list(methods),
        "table": table,
        "best": {metric: best_cells(table, metric) for metric in METRICS},
        "trimaps": located,
        "without_trimap": detailed - located,
        "faithful": sum(1 for record in records if record.get("deletion")),
        "faithful_photos": list(faithful_photos),
        # The layers with deletion/insertion curves (a spread: render.scores.layers)
        "faith_layers": sorted(
            set().union(*(scored_layers(r, len(layer_names)) for r in records if r.get("deletion")))
        ),
        "empty": empty_counts(records, len(layer_names), methods),
        "steps": STEPS,
        "chart": chart_svg(table["energy"], layer_names),
    }


COLOURS = {
    "gradcam": "#2f5bd3",
    "gradcampp": "#d35f2f",
    "layercam": "#2f9e5b",
    "scorecam": "#8a3fc0",
}


def chart_svg(column: dict[str, list[tuple[float | None, int]]], layers: Sequence[str]) -> str:
    """An SVG line chart: per method, the mean energy on the pet at each layer (0 to 1)."""
    width, height, left, bottom, top = 640, 220, 40, 24, 10
    inner_w, inner_h = width - left - 10, height - bottom - top
    step = inner_w / max(1, len(layers) - 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="Energy on the pet per layer and method">'
    ]
    for tick in (0.0, 0.5, 1.0):
        y = top + inner_h * (1 - tick)
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#dde2ec"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{tick:g}</text>'
        )
    for method, values in column.items():
        points = [
            f"{left + i * step:.1f},{top + inner_h * (1 - value):.1f}"
            for i, (value, _) in enumerate(values)
            if value is not None
        ]
        if points:
            parts.append(
                f'<polyline fill="none" stroke="{COLOURS.get(method, "#555")}" '
                f'stroke-width="2" points="{" ".join(points)}"><title>{method}</title></polyline>'
            )
    parts.append(
        f'<text x="{left}" y="{height - 6}" font-size="11">{_escape(layers[0]) if layers else ""}'
        f'</text><text x="{width - 10}" y="{height - 6}" font-size="11" text-anchor="end">'
        f"{_escape(layers[-1]) if layers else ''}</text></svg>"
    )
    return "".join(parts)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
