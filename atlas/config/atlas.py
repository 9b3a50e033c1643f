"""``atlas:``: activation atlases (Carter et al., Distill 2019), top level and per model.

An atlas lays out many spatial activation vectors of one layer in 2-D, grids the layout
and draws each cell with a feature visualisation of the cell's mean direction. These
settings choose the layers and size the atlas; the pipeline is in :mod:`atlas.plan.atlas`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LAYOUTS = ("tsne", "umap")
DEFAULT_LAYERS = 3  # "auto": this many layers spread over the model's depth
# Enough vectors for a 20 x 20 grid on the default site (111 photos x 32 positions).
DEFAULT_SAMPLES = 4000
MAX_PER_PHOTO = 32  # positions read per photo at most (fewer when there are many photos)
MIN_PER_PHOTO = 4


@dataclass(frozen=True)
class AtlasSettings:
    """One model's atlas settings.

    Attributes:
        layers: ``None``: ``count`` layers spread over the depth ("auto", or a number);
            a tuple of names or glob patterns; ``()``: no atlas.
        count: how many layers "auto" picks.
        samples: at most this many activation vectors per layer.
        grid: cells per side of the layout's grid.
        min_count: a cell with fewer vectors is left empty (Lucid's threshold).
        layout: ``tsne`` (scikit-learn) or ``umap`` (the ``umap`` extra).
        cossim_pow: the power of the cosine factor of the cell objective.
    """

    layers: tuple[str, ...] | None = None
    count: int = DEFAULT_LAYERS
    samples: int = DEFAULT_SAMPLES
    grid: int = 20
    min_count: int = 8
    layout: str = "tsne"
    cossim_pow: float = 2.0

    @property
    def enabled(self) -> bool:
        return self.layers != () and self.count > 0


_KEYS = ("layers", "samples", "grid", "min_count", "layout", "cossim_pow")
_RANGES = {"samples": (50, 10**6), "grid": (2, 100), "min_count": (1, 10**4)}


def parse_atlas(check, value: Any, path: str, base: AtlasSettings) -> AtlasSettings:
    """Read an ``atlas`` block (problems go to ``check``); a model's block overrides the
    keys it sets.

    Args:
        check: the config's :class:`atlas.config.schema.Checker`.
        value: the block (None: not given).
        path: its key path (``atlas`` or ``models[i].atlas``).
        base: the inherited settings.
    """
    data = check.mapping(value if value is not None else {}, path, _KEYS)
    layers, count = _layers(check, data, path, base)
    numbers = {}
    for key, (low, high) in _RANGES.items():
        number = check.typed(data, key, path, int, getattr(base, key))
        if key in data and not low <= number <= high:
            check.problem(f"{path}.{key}", f"must be between {low} and {high}, got {number}")
        numbers[key] = number
    layout = check.typed(data, "layout", path, str, base.layout)
    if "layout" in data and layout not in LAYOUTS:
        check.problem(f"{path}.layout", f"expected one of: {', '.join(LAYOUTS)}; got {layout!r}")
    power = check.typed(data, "cossim_pow", path, float, base.cossim_pow)
    if "cossim_pow" in data and not 0 <= power <= 8:
        check.problem(f"{path}.cossim_pow", f"must be between 0 and 8, got {power}")
    return AtlasSettings(layers=layers, count=count, layout=layout, cossim_pow=power, **numbers)


def _layers(check, data: dict, path: str, base: AtlasSettings) -> tuple:
    """``layers``: auto, none, a number of layers spread over the depth, or names/globs."""
    if "layers" not in data:
        return base.layers, base.count
    raw = data["layers"]
    if raw == "auto":
        return None, DEFAULT_LAYERS
    if raw == "none" or raw == []:
        return (), 0
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 50:
        return (None, raw) if raw else ((), 0)
    if isinstance(raw, list) and raw and all(isinstance(v, str) and v for v in raw):
        return tuple(raw), len(raw)
    check.problem(
        f"{path}.layers",
        "expected auto, none, a number of layers (0-50) or a list of layer names or "
        f"patterns; got {raw!r}",
    )
    return base.layers, base.count
