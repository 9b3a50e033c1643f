"""The activation atlas page of one layer: the grid of cells the backend laid out (its
cache entry's ``atlas.webp`` and meta), with display labels, patches and the class filter.

An activation atlas (Carter et al., Distill 2019) lays out many spatial activation vectors
of one layer in 2-D, grids them and draws each cell with a feature visualisation of the
cell's mean activation. Pure Python over cached metadata: nothing here loads a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from atlas.site.views import class_title
from atlas.site.writer import Assets

LABEL_METHODS = {
    "class": "attribution: activation × gradient of the class logit at the position, "
    "averaged over the cell's vectors",
    "dataset": "the most frequent dataset class among the cell's photos",
}


@dataclass(frozen=True)
class AtlasPatch:
    """One photo region a cell's activation vectors came from, cropped by CSS.

    Attributes:
        image: the photo's name (``DatasetImage.name``).
        link: the site path of its image page; None when it has none (not detailed).
        photo: the site path of the photo's picture; None when it is not published.
        box: the region as fractions of the photo's width and height (x0, y0, x1, y1).
        crop: CSS geometry that shows only the region of the photo as a background:
            background-size x and y, background-position x and y (all percentages) and the
            region's aspect ratio (width / height in photo pixels).
    """

    image: str
    link: str | None
    photo: str | None
    box: tuple[float, float, float, float]
    crop: tuple[float, float, float, float, float]


@dataclass(frozen=True)
class AtlasCell:
    """One drawn cell of the grid.

    Attributes:
        row, col: the grid position (row from the top, col from the left).
        count: the activation vectors in the cell.
        label: the display name of the label the cell supports most; None: no label.
        label_index: that label's index in ``AtlasView.labels``; -1 without a label.
        share: the label's share (0..1), None without a label.
        top: up to three (label index, display label, share), the strongest first.
        cos: cosine similarity of the icon's activation with the cell's direction.
        icon: the icon's box within its grid cell, as percentages of the cell's side
            (x, y, width, height): the icons of cells with fewer vectors are smaller.
        patches: the photo regions the cell's vectors came from.
    """

    row: int
    col: int
    count: int
    label: str | None
    label_index: int
    share: float | None
    top: tuple[tuple[int, str, float], ...]
    cos: float | None
    icon: tuple[float, float, float, float]
    patches: tuple[AtlasPatch, ...]


@dataclass(frozen=True)
class AtlasView:
    """What the atlas page of one layer (and its links) reads.

    Attributes:
        layer: the conv layer's name; ``layer_path`` its page.
        path: this page's site path (``models/<model>/atlas/<layer slug>.html``).
        picture: the site path of ``atlas.webp`` (``side`` pixels square).
        labels: every display label a cell names (cell labels and their top three);
            cells refer to them by index.
        classes: (label index, display label, cells) of each label some cell is labelled
            with, most cells first: the class filter's choices.
    """

    layer: str
    layer_path: str
    path: str
    picture: str | None
    side: int
    grid: int
    cell: int
    samples: int
    photos: int
    layout: str
    min_count: int
    label_kind: str | None
    seconds: float
    cells: tuple[AtlasCell, ...]
    labels: tuple[str, ...]
    classes: tuple[tuple[int, str, int], ...]

    @property
    def layout_title(self) -> str:
        """The 2-D layout's name as people write it."""
        return {"tsne": "t-SNE", "umap": "UMAP"}.get(self.layout, self.layout)

    @property
    def label_method(self) -> str | None:
        """How the cells' labels were computed, in words (None: no labels)."""
        return LABEL_METHODS.get(self.label_kind or "")

    def data(self, link: Callable[[str], str]) -> dict:
        """The cells as the page's script reads them (embedded JSON, so the page works
        from file:// without fetching anything), compact: photos are listed once and
        patches refer to them by index.

        Args:
            link: the page's ``link`` function: a site path -> a URL relative to the page.
        """
        photos: dict[str, int] = {}
        table: list[list] = []
        cells = []
        for cell in self.cells:
            patches = []
            for patch in cell.patches:
                if patch.image not in photos:
                    photos[patch.image] = len(table)
                    table.append(
                        [
                            patch.image,
                            link(patch.photo) if patch.photo else None,
                            link(patch.link) if patch.link else None,
                        ]
                    )
                patches.append([photos[patch.image], *patch.crop])
            cells.append(
                {
                    "r": cell.row,
                    "c": cell.col,
                    "n": cell.count,
                    "l": cell.label_index,
                    "s": cell.share,
                    "cos": cell.cos,
                    "top": [[i, share] for i, _, share in cell.top],
                    "p": patches,
                }
            )
        return {"labels": list(self.labels), "photos": table, "cells": cells}


def crop_geometry(box, size: tuple[int, int]) -> tuple[float, float, float, float, float]:
    """CSS background geometry that shows only ``box`` (fractions x0, y0, x1, y1) of a
    picture of ``size`` pixels in a box of the region's aspect ratio.

    A background ``1 / w`` times the box's width, placed at ``x0 / (1 - w)`` (CSS
    percentages place the picture's point at that fraction on the box's point at the same
    fraction), puts the region's left edge on the box's left edge.

    Returns:
        (background-size x %, y %, background-position x %, y %, width / height).
    """
    x0, y0, x1, y1 = (min(1.0, max(0.0, float(v))) for v in box)
    width, height = max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)

    def position(start: float, extent: float) -> float:
        return round(100 * start / (1 - extent), 2) if extent < 1 else 0.0

    aspect = (width * max(size[0], 1)) / (height * max(size[1], 1))
    return (
        round(100 / width, 2),
        round(100 / height, 2),
        position(x0, width),
        position(y0, height),
        round(aspect, 3),
    )


def _icon(box, row: int, col: int, cell: int) -> tuple[float, float, float, float]:
    """The icon's pixel box in the picture as percentages of its grid cell."""
    x, y, w, h = (float(v) for v in box)
    side = max(cell, 1)

    def pct(value: float) -> float:
        return round(min(100.0, max(0.0, 100 * value / side)), 2)

    return pct(x - col * cell), pct(y - row * cell), pct(w), pct(h)


class _Labels:
    """Display names of raw labels, each listed once; cells refer to them by index."""

    def __init__(self, title: Callable[[object], str]) -> None:
        self.title = title
        self.index: dict[object, int] = {}
        self.names: list[str] = []

    def __call__(self, raw) -> int:
        if raw not in self.index:
            self.index[raw] = len(self.names)
            self.names.append(self.title(raw))
        return self.index[raw]


def _patches(cell: dict, photos: dict, image_paths: dict) -> tuple[AtlasPatch, ...]:
    found = []
    for patch in cell.get("patches") or ():
        name = patch["image"]
        photo = photos.get(name, {})
        box = tuple(float(v) for v in patch["box"])
        found.append(
            AtlasPatch(
                image=name,
                link=image_paths.get(name),
                photo=photo.get("photo"),
                box=box,
                crop=crop_geometry(box, photo.get("size", (1, 1))),
            )
        )
    return tuple(found)


def _cell(raw: dict, meta: dict, labels: _Labels, photos: dict, image_paths: dict) -> AtlasCell:
    label = raw.get("label")
    index = labels(label) if label is not None else -1
    top = [(labels(lab), float(share)) for lab, share in raw.get("top") or () if lab is not None]
    cos = raw.get("cos")
    return AtlasCell(
        row=int(raw["row"]),
        col=int(raw["col"]),
        count=int(raw["count"]),
        label=labels.names[index] if index >= 0 else None,
        label_index=index,
        share=float(raw["share"]) if label is not None and raw.get("share") is not None else None,
        top=tuple((i, labels.names[i], share) for i, share in top),
        cos=float(cos) if cos is not None else None,
        icon=_icon(raw["box"], int(raw["row"]), int(raw["col"]), int(meta["cell"])),
        patches=_patches(raw, photos, image_paths),
    )


def atlas_view(
    entry,
    layer: str,
    layer_path: str,
    path: str,
    assets: Assets,
    title: Callable[[object], str],
    photos: dict,
    image_paths: dict,
) -> AtlasView:
    """The view of one layer's atlas from its cache entry.

    Args:
        entry: the atlas job's cache entry (``atlas.webp`` and the cells in its meta).
        layer, layer_path: the layer's name and its page's site path.
        path: the atlas page's site path.
        title: a raw label (class index or dataset class key) -> its display name.
        photos: photo name -> {"photo", "thumb", "size"} (``pages._photos``).
        image_paths: photo name -> image page path, for the photos that have a page.
    """
    meta = entry.meta
    labels = _Labels(title)
    cells = tuple(
        _cell(raw, meta, labels, photos, image_paths)
        for raw in sorted(meta["cells"], key=lambda c: (c["row"], c["col"]))
    )
    counts: dict[int, int] = {}
    for cell in cells:
        if cell.label_index >= 0:
            counts[cell.label_index] = counts.get(cell.label_index, 0) + 1
    classes = sorted(counts.items(), key=lambda item: (-item[1], labels.names[item[0]]))
    return AtlasView(
        layer=layer,
        layer_path=layer_path,
        path=path,
        picture=assets.publish(entry, "atlas.webp"),
        side=int(meta["grid"]) * int(meta["cell"]),
        grid=int(meta["grid"]),
        cell=int(meta["cell"]),
        samples=int(meta.get("samples", 0)),
        photos=int(meta.get("photos", 0)),
        layout=str(meta.get("layout", "tsne")),
        min_count=int(meta.get("min_count", 0)),
        label_kind=meta.get("label_kind"),
        seconds=float(meta.get("seconds", 0.0)),
        cells=cells,
        labels=tuple(labels.names),
        classes=tuple((i, labels.names[i], n) for i, n in classes),
    )


def atlas_views(model_plan, context, assets: Assets, layers, images, photos: dict) -> list:
    """The atlas view of each layer whose atlas is rendered, in layer order; each such
    LayerView's ``atlas_path`` is set to its page (the others keep None: no link).

    Args:
        model_plan: the model's plan (``atlases``: layer name -> job; ``space``).
        context: the build context (its cache, and the dataset's class titles).
        layers: the model's LayerViews; images: its ImageViews (only the detailed ones
            have pages to link to).
        photos: photo name -> published picture (``pages._photos``).
    """
    image_paths = {image.name: image.path for image in images if image.detailed}
    space, breeds = model_plan.space, context.breeds
    titles = {
        "class": lambda i: space.label(int(i)) if space is not None else f"class {i}",
        "dataset": lambda key: class_title(breeds, str(key)),
    }
    views = []
    for layer in layers:
        job = model_plan.atlases.get(layer.name)
        entry = context.cache.get(job.key) if job else None
        if entry is None or "cells" not in entry.meta:
            continue
        base = layer.path.split("/layers/")[0]
        path = f"{base}/atlas/{layer.slug}.html"
        title = titles.get(entry.meta.get("label_kind"), str)
        views.append(
            atlas_view(entry, layer.name, layer.path, path, assets, title, photos, image_paths)
        )
        layer.atlas_path = path
    return views
