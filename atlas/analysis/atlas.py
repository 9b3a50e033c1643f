"""Activation atlases, the NumPy half: lay out a layer's activation vectors in 2-D, grid
the layout, and give each cell its direction, its whitened direction, the vectors its
label is read from and the photo patches it shows.

After Lucid's ``recipes/activation_atlas`` (``normalize_layout``,
``bin_laid_out_activations``, ``layer_inverse_covariance``), with t-SNE from scikit-learn
by default (UMAP from ``umap-learn`` when asked for and installed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

PATCHES = 6  # photo patches shown per cell
LABEL_SAMPLES = 12  # vectors per cell whose class attribution labels it
RIDGE = 1e-3  # whitening: a ridge of this share of the mean variance (dead channels)
PCA_DIMS = 50  # t-SNE runs on the vectors' first principal components (its usual start)


class LayoutError(ValueError):
    """The layout cannot be made (too few vectors, or the method is not installed)."""


@dataclass(frozen=True)
class Cells:
    """A gridded layout.

    Attributes:
        rows, cols: each kept cell's grid position (row from the top).
        counts: vectors per kept cell.
        members: per kept cell, the indices of its vectors.
        directions: ``(cells, C)`` each cell's mean vector.
    """

    rows: np.ndarray
    cols: np.ndarray
    counts: np.ndarray
    members: list[np.ndarray]
    directions: np.ndarray

    def __len__(self) -> int:
        return len(self.counts)


def layout_2d(vectors: np.ndarray, method: str, seed: int) -> np.ndarray:
    """``(N, 2)`` positions of ``vectors`` by cosine similarity, normalised to [0, 1]
    (:func:`normalize_layout`); the same vectors and seed give the same layout.

    Raises:
        LayoutError: fewer than 10 vectors, or ``umap`` without ``umap-learn``.
    """
    if len(vectors) < 10:
        raise LayoutError(f"only {len(vectors)} activation vectors; an atlas needs at least 10")
    data = _unit_rows(vectors.astype(np.float64))
    if method == "umap":
        try:
            from umap import UMAP
        except ImportError:
            raise LayoutError(
                "atlas.layout: umap needs the umap-learn package: pip install umap-learn, "
                "or use tsne"
            ) from None
        reducer = UMAP(
            n_components=2, n_neighbors=50, min_dist=0.05, metric="cosine", random_state=seed
        )
        return normalize_layout(reducer.fit_transform(data))
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    # On unit rows Euclidean distance is a function of cosine distance; PCA first as
    # scikit-learn's t-SNE guide advises (fast, and the layout barely changes).
    dims = min(PCA_DIMS, data.shape[1], len(data) - 1)
    if dims < data.shape[1]:
        data = PCA(n_components=dims, random_state=seed).fit_transform(data)
    perplexity = float(min(30.0, (len(data) - 1) / 3))
    # 500 iterations and angle 0.8 instead of 1,000 and 0.5: the default site's layouts took
    # 3.8 s instead of 33 s each, with the same trustworthiness (0.945 at 10 neighbours).
    # One thread: in a process that has started TensorFlow, or beside other busy threads
    # (the unit pictures), OpenMP's spinning threads made the same t-SNE take 12-22 s on
    # 2 cores instead of 3.8 s (2 threads, idle machine) or 5.9 s (1 thread, same result).
    from threadpoolctl import threadpool_limits

    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        random_state=seed,
        max_iter=500,
        angle=0.8,
        n_jobs=1,
    )
    with threadpool_limits(limits=1):
        return normalize_layout(tsne.fit_transform(data))


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def normalize_layout(layout: np.ndarray, low: float = 1, high: float = 99) -> np.ndarray:
    """Outliers clipped to the ``low``-``high`` percentiles (plus a 10 % margin), scaled
    to [0, 1] on both axes (Lucid's ``normalize_layout``)."""
    mins = np.percentile(layout, low, axis=0)
    maxs = np.percentile(layout, high, axis=0)
    span = maxs - mins
    mins, maxs = mins - 0.1 * span, maxs + 0.1 * span
    clipped = np.clip(layout, mins, maxs)
    clipped = clipped - clipped.min(axis=0)
    return clipped / np.maximum(clipped.max(axis=0), 1e-12)


def bin_cells(layout: np.ndarray, vectors: np.ndarray, grid: int, min_count: int) -> Cells:
    """The ``grid x grid`` cells of a [0, 1] layout with at least ``min_count`` vectors,
    row by row; x is the column, y the row."""
    index = np.minimum((layout * grid).astype(np.int64), grid - 1)
    flat = index[:, 1] * grid + index[:, 0]
    rows, cols, counts, members, directions = [], [], [], [], []
    for cell in np.unique(flat):
        where = np.flatnonzero(flat == cell)
        if len(where) < min_count:
            continue
        rows.append(int(cell // grid))
        cols.append(int(cell % grid))
        counts.append(len(where))
        members.append(where)
        directions.append(vectors[where].astype(np.float64).mean(axis=0))
    channels = vectors.shape[1]
    return Cells(
        rows=np.asarray(rows, np.int32),
        cols=np.asarray(cols, np.int32),
        counts=np.asarray(counts, np.int32),
        members=members,
        directions=np.asarray(directions, np.float32).reshape(-1, channels),
    )


def whitening(vectors: np.ndarray) -> np.ndarray:
    """The inverse of the vectors' (uncentered) correlation matrix, as Lucid's
    ``layer_inverse_covariance``, with a small ridge so that dead or collinear channels
    (a singular matrix) do not blow it up."""
    data = vectors.astype(np.float64)
    correlation = data.T @ data / len(data)
    ridge = RIDGE * max(float(np.trace(correlation)) / len(correlation), 1e-12)
    return np.linalg.inv(correlation + ridge * np.eye(len(correlation)))


def whitened(directions: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Each direction times the whitening matrix, scaled to unit length (the objective's
    scale does not matter to Adam, and unit rows keep its cosine factor comparable)."""
    return _unit_rows(directions.astype(np.float64) @ inverse).astype(np.float32)


def pick_members(cells: Cells, vectors: np.ndarray, count: int) -> list[np.ndarray]:
    """Per cell, at most ``count`` of its vectors: those closest in cosine to the cell's
    direction, closest first."""
    picked = []
    for members, direction in zip(cells.members, cells.directions, strict=True):
        scores = (
            _unit_rows(vectors[members].astype(np.float64))
            @ _unit_rows(direction[None].astype(np.float64))[0]
        )
        order = np.argsort(-scores, kind="stable")
        picked.append(members[order[:count]])
    return picked


def patch_members(cells: Cells, vectors: np.ndarray, photos: np.ndarray) -> list[list[int]]:
    """Per cell, up to :data:`PATCHES` vectors to show as photo patches: the closest to the
    cell's direction, at most one per photo."""
    result = []
    for members in pick_members(cells, vectors, 10**9):
        chosen, seen = [], set()
        for index in members:
            photo = int(photos[index])
            if photo in seen:
                continue
            seen.add(photo)
            chosen.append(int(index))
            if len(chosen) == PATCHES:
                break
        result.append(chosen)
    return result


def patch_box(
    y: int, x: int, shape: tuple[int, int], field: int | None, input_size: tuple[int, int]
) -> list[float]:
    """The input window of position ``(y, x)`` of a ``shape`` map, as fractions of the
    input's width and height ``[x0, y0, x1, y1]``: centred on the position, as wide as the
    receptive field (``field`` input pixels, at least one position's stride), clipped to
    the picture. The photo is resized to the input without cropping, so these are also
    fractions of the photo."""
    box = []
    for centre, cells, side in ((x, shape[1], input_size[1]), (y, shape[0], input_size[0])):
        middle = (centre + 0.5) / cells
        half = max((field or 0) / side, 1.0 / cells) / 2.0
        box.append((max(0.0, middle - half), min(1.0, middle + half)))
    (x0, x1), (y0, y1) = box
    return [round(x0, 4), round(y0, 4), round(x1, 4), round(y1, 4)]


def attribution_labels(attributions: list[np.ndarray]) -> list[tuple[int, float, list]]:
    """Each cell's label from its vectors' class attributions (``(n, classes)``: activation
    x gradient of each class logit at the vector's position): the class with the largest
    mean attribution, its share of the positive mean attributions, and the top three."""
    labels = []
    for values in attributions:
        mean = values.astype(np.float64).mean(axis=0)
        positive = np.maximum(mean, 0.0)
        total = positive.sum()
        order = np.argsort(-mean, kind="stable")[:3]
        shares = [float(positive[i] / total) if total > 0 else 0.0 for i in order]
        labels.append(
            (
                int(order[0]),
                shares[0],
                [[int(i), round(s, 4)] for i, s in zip(order, shares, strict=True)],
            )
        )
    return labels


def photo_labels(members: list[np.ndarray], photo_classes: list[str | None]) -> list[tuple]:
    """Each cell's label for a model without classes: the dataset class most frequent
    among its vectors' photos, its share, and the top three (None: unlabelled photos)."""
    labels = []
    for indices in members:
        classes = [photo_classes[i] for i in indices if photo_classes[i] is not None]
        if not classes:
            labels.append((None, 0.0, []))
            continue
        names, counts = np.unique(np.asarray(classes, dtype=object), return_counts=True)
        order = np.argsort(-counts, kind="stable")[:3]
        shares = [round(float(counts[i] / len(indices)), 4) for i in order]
        labels.append(
            (
                str(names[order[0]]),
                shares[0],
                [[str(names[i]), s] for i, s in zip(order, shares, strict=True)],
            )
        )
    return labels


def icon_boxes(counts: np.ndarray, rows: np.ndarray, cols: np.ndarray, cell: int) -> list:
    """Each cell's icon box ``[x, y, w, h]`` in the atlas picture: centred in its cell,
    its side growing with the square root of its count from half a cell to a whole one."""
    top = float(counts.max()) if len(counts) else 1.0
    boxes = []
    for count, row, col in zip(counts, rows, cols, strict=True):
        side = int(round(cell * (0.5 + 0.5 * np.sqrt(count / top))))
        offset = (cell - side) // 2
        boxes.append([int(col) * cell + offset, int(row) * cell + offset, side, side])
    return boxes
