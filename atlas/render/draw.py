"""Pictures from arrays: activation grids, heat-map overlays, unit grids.

Pure numpy + Pillow + matplotlib colour maps (no TensorFlow), so the page stage can
stitch grids from cached pictures without loading a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image

GAP = 1  # pixels between grid cells
GAP_COLOUR = (24, 24, 28)


@lru_cache(maxsize=8)
def _lut(name: str) -> np.ndarray:
    """A 256-entry uint8 RGB lookup table from matplotlib's registered colour map."""
    from matplotlib import colormaps  # imported lazily: a few hundred ms

    table = colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    return np.round(table * 255).astype(np.uint8)


def colorize(values: np.ndarray, name: str) -> np.ndarray:
    """Map values in [0, 1] (any shape) to uint8 RGB with a matplotlib colour map."""
    index = np.clip(np.round(np.nan_to_num(values) * 255), 0, 255).astype(np.uint8)
    return _lut(name)[index]


# A channel whose spread is below this share of its layer's is drawn flat: stretching it
# to full contrast would draw float noise (which differs with thread counts and executors).
FLAT_SHARE = 1e-3


def standardize_channels(maps: np.ndarray) -> np.ndarray:
    """The classic recipe per channel: zero mean, unit std, x64 + 128, clipped to [0, 1].

    Args:
        maps: (height, width, channels) activations.

    Returns:
        float32 array of the same shape in [0, 1]; a channel that is constant, or whose
        spread is negligible against the layer's (:data:`FLAT_SHARE`), becomes 0.5.
    """
    maps = maps.astype(np.float32)
    mean = maps.mean(axis=(0, 1), keepdims=True)
    std = maps.std(axis=(0, 1), keepdims=True)
    scaled = (maps - mean) / (std + 1e-5) * 64.0 + 128.0
    flat = std <= FLAT_SHARE * float(maps.std())
    scaled = np.where(flat, np.float32(128.0), scaled)
    return np.clip(scaled, 0, 255) / 255.0


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns) of the most square grid holding ``count`` cells."""
    columns = max(1, math.ceil(math.sqrt(count)))
    return math.ceil(count / columns), columns


def _block_scale(maps: np.ndarray, cell: int) -> np.ndarray:
    """Resize (h, w, c) maps so the longer side is about ``cell``: whole-number nearest-
    neighbour enlargement (each activation stays a visible square) or block-mean reduction.
    """
    longest = max(maps.shape[0], maps.shape[1])
    if cell >= longest:
        factor = cell // longest
        return maps.repeat(factor, axis=0).repeat(factor, axis=1)
    factor = math.ceil(longest / cell)
    height, width = maps.shape[0] // factor, maps.shape[1] // factor
    trimmed = maps[: height * factor, : width * factor]
    return trimmed.reshape(height, factor, width, factor, -1).mean(axis=(1, 3))


def activation_grid(maps: np.ndarray, max_channels: int, max_side: int = 256) -> Image.Image:
    """The feature maps of one image at one layer as a viridis grid.

    Args:
        maps: (height, width, channels) activations of one image.
        max_channels: show at most this many channels (the first ones).
        max_side: the grid's width in pixels at most.
    """
    maps = standardize_channels(maps[..., :max_channels])
    count = maps.shape[2]
    rows, columns = grid_shape(count)
    cell = max(1, (max_side - GAP * (columns - 1)) // columns)
    tiles = colorize(_block_scale(maps, cell), "viridis")  # (h, w, c, 3)
    tile_h, tile_w = tiles.shape[0], tiles.shape[1]
    canvas = np.full(
        (rows * (tile_h + GAP) - GAP, columns * (tile_w + GAP) - GAP, 3), GAP_COLOUR, dtype=np.uint8
    )
    for channel in range(count):
        row, column = divmod(channel, columns)
        top, left = row * (tile_h + GAP), column * (tile_w + GAP)
        canvas[top : top + tile_h, left : left + tile_w] = tiles[:, :, channel]
    return Image.fromarray(canvas)


def map_to_png_array(values: np.ndarray) -> np.ndarray:
    """A non-negative map scaled to uint8 by its own maximum (the raw map kept per layer);
    non-finite values (a degenerate map) count as 0."""
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(values.max()) if values.size else 0.0
    if peak <= 0:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.clip(np.round(values / peak * 255), 0, 255).astype(np.uint8)


def stitch(
    pictures: Sequence[np.ndarray], columns: int | None = None, cell: int | None = None
) -> Image.Image:
    """Pictures (uint8 HxWx3) side by side in a grid, each resized to ``cell`` pixels."""
    if not pictures:
        raise ValueError("nothing to stitch")
    if columns is None:
        _, columns = grid_shape(len(pictures))
    rows = math.ceil(len(pictures) / columns)
    cell = cell or pictures[0].shape[0]
    canvas = np.full(
        (rows * (cell + GAP) - GAP, columns * (cell + GAP) - GAP, 3), GAP_COLOUR, dtype=np.uint8
    )
    for index, picture in enumerate(pictures):
        image = Image.fromarray(picture)
        if image.size != (cell, cell):
            image = image.resize((cell, cell), Image.LANCZOS)
        row, column = divmod(index, columns)
        top, left = row * (cell + GAP), column * (cell + GAP)
        canvas[top : top + cell, left : left + cell] = np.asarray(image.convert("RGB"))
    return Image.fromarray(canvas)


def fit(image: Image.Image, max_side: int) -> Image.Image:
    """The image scaled down (never up) so its longer side is at most ``max_side``."""
    scale = max_side / max(image.size)
    if scale >= 1:
        return image.copy()
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.LANCZOS)
