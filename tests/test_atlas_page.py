"""The activation atlas page: its view, its links and the cells it embeds.

The small site is built once (tests/sitecheck.small_site); a synthetic atlas entry (a
drawn atlas.webp and its cells' meta, as the backend writes them) is put into its cache
for one layer, and the site is written again into a folder of its own, so these tests do
not depend on the atlas renderer.
"""

from __future__ import annotations

import io
import json
import re
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from sitecheck import check_site, small_site

pytestmark = pytest.mark.slow

LAYER = "conv_pw_13"  # the layer given an atlas
MISSING = "conv_dw_1"  # a layer whose atlas job has no entry: no page, no link
GRID, CELL = 20, 48
# ImageNet classes of the sample's breeds: Persian cat, Egyptian cat, beagle, pug, tabby
CLASSES = (283, 285, 162, 254, 281)
_built: dict[str, tuple] = {}


def _picture(cells: list[dict]) -> bytes:
    """A white atlas.webp with a textured icon in each cell's box (hue by label)."""
    from PIL import Image

    side = GRID * CELL
    pixels = np.full((side, side, 3), 255, dtype=np.uint8)
    for index, cell in enumerate(cells):
        x, y, w, h = cell["box"]
        yy, xx = np.mgrid[0:h, 0:w] / max(w, 1)
        hue = CLASSES.index(cell["label"]) / len(CLASSES)
        wave = np.sin(2 * np.pi * ((3 + index % 5) * xx + (2 + index % 3) * yy))
        for channel in range(3):
            level = 0.5 + 0.5 * np.cos(2 * np.pi * (hue + channel / 3))
            pixels[y : y + h, x : x + w, channel] = 40 + 170 * level * (0.6 + 0.4 * wave)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "WEBP", quality=80)
    return buffer.getvalue()


def atlas_meta(images: list[str]) -> dict:
    """Cells in a blob of five class regions, as the backend's meta would hold them."""
    rng = np.random.default_rng(0)
    cells = []
    for row in range(GRID):
        for col in range(GRID):
            radius = np.hypot(row - 9.5, col - 9.5)
            if radius > 9.6 or rng.random() < 0.08:
                continue
            region = int((np.arctan2(row - 9.5, col - 9.5) + np.pi) / (2 * np.pi) * 5) % 5
            count = int(8 + rng.integers(0, 40) * max(0.2, 1 - radius / 10))
            side = int(CELL * min(1.0, 0.45 + count / 50))
            offset = (CELL - side) // 2
            others = [c for c in CLASSES if c != CLASSES[region]]
            share = round(float(rng.uniform(0.3, 0.8)), 3)
            picks = rng.choice(len(images), size=int(rng.integers(1, 7)), replace=False)
            cells.append(
                {
                    "row": row,
                    "col": col,
                    "count": count,
                    "box": [col * CELL + offset, row * CELL + offset, side, side],
                    "label": CLASSES[region],
                    "share": share,
                    "top": [[CLASSES[region], share], [others[0], 0.2], [others[1], 0.1]],
                    "cos": round(float(rng.uniform(0.5, 0.95)), 3),
                    "patches": [{"image": images[i], "box": [0.25, 0.1, 0.5, 0.45]} for i in picks],
                }
            )
    return {
        "layer": LAYER,
        "grid": GRID,
        "cell": CELL,
        "samples": sum(c["count"] for c in cells),
        "photos": len(images),
        "layout": "tsne",
        "min_count": 8,
        "label_kind": "class",
        "seconds": 12.3,
        "cells": cells,
    }


def atlas_site(tmp_path_factory) -> tuple[Path, dict, object]:
    """The small site written again with a synthetic atlas of LAYER (and an atlas job
    without an entry for MISSING); returns (site folder, the entry's meta, the context)."""
    if "site" in _built:
        return _built["site"]
    from sitecheck import small_config

    from atlas.cache import open_cache
    from atlas.config.load import load_config
    from atlas.plan.context import StageTimer
    from atlas.plan.exemplars import exemplar_jobs
    from atlas.plan.jobs import Job
    from atlas.prepare import BuildOptions, prepare
    from atlas.site.publish import write_site

    built = small_site(tmp_path_factory).parent
    folder = tmp_path_factory.mktemp("atlas-site")
    config = load_config(small_config(folder, cache=built / "cache"))
    cache = open_cache(config.cache)
    context, _ = prepare(config, cache, BuildOptions(progress=False), StageTimer())
    for model_plan in context.models:  # as a build does before it writes the site
        exemplar_jobs(model_plan, context)
    plan = context.models[0]
    images = sorted(image.name for image in context.scan.images)
    meta = atlas_meta(images)
    key = "test-atlas-" + LAYER
    cache.put(key, meta, {"atlas.webp": _picture(meta["cells"])})
    plan.atlases[LAYER] = Job("atlas", plan.config.id, key, layer=LAYER)
    plan.atlases[MISSING] = Job("atlas", plan.config.id, "test-atlas-none", layer=MISSING)
    written = write_site(context)
    _built["site"] = (written.output, meta, context)
    return _built["site"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return atlas_site(tmp_path_factory)


PAGE = f"models/mobilenet/atlas/{LAYER}.html"


def _embedded(html: str) -> dict:
    found = re.search(r'<script type="application/json" id="atlas-data">(.*?)</script>', html, re.S)
    assert found, "the page embeds its cells"
    return json.loads(found.group(1))


def test_atlas_page_embeds_the_entrys_cells(site):
    root, meta, context = site
    html = (root / PAGE).read_text(encoding="utf-8")
    data = _embedded(html)
    space = context.models[0].space
    expected = sorted(meta["cells"], key=lambda c: (c["row"], c["col"]))
    assert [(c["r"], c["c"], c["n"]) for c in data["cells"]] == [
        (c["row"], c["col"], c["count"]) for c in expected
    ]
    # labels are the model's class names, not indices
    assert [data["labels"][c["l"]] for c in data["cells"]] == [
        space.label(c["label"]) for c in expected
    ]
    assert "Persian cat" in data["labels"]
    first = data["cells"][0]
    assert [data["labels"][i] for i, _ in first["top"]] == [
        space.label(label) for label, _ in expected[0]["top"]
    ]
    # one hit box per cell, its label in words
    assert html.count('class="cell"') == len(meta["cells"])
    assert "distill.pub/2019/activation-atlas" in unescape(html)


def test_patches_link_to_existing_image_pages(site):
    root, meta, _ = site
    page = root / PAGE
    data = _embedded(page.read_text(encoding="utf-8"))
    folder = page.parent
    linked = [photo for photo in data["photos"] if photo[2]]
    assert linked, "some patches come from photos with image pages"
    for name, photo, link in data["photos"]:
        assert photo and (folder / photo).resolve().is_file(), name
        if link:
            assert (folder / link).resolve().is_file(), link
            assert link.endswith(f"images/{name}.html")
    detailed = {image.name for image in site[2].detailed}
    assert {photo[0] for photo in linked} <= detailed
    assert {photo[0] for photo in data["photos"] if not photo[2]}.isdisjoint(detailed)


def test_layer_and_model_pages_link_the_atlas(site):
    root, _, _ = site
    layer = (root / f"models/mobilenet/layers/{LAYER}/index.html").read_text(encoding="utf-8")
    assert f'href="../../atlas/{LAYER}.html"' in layer
    model = (root / "models/mobilenet/index.html").read_text(encoding="utf-8")
    assert f'href="atlas/{LAYER}.html"' in model
    assert "Activation atlases" in model
    other = (root / f"models/mobilenet/layers/{MISSING}/index.html").read_text(encoding="utf-8")
    assert "/atlas/" not in other
    assert not (root / f"models/mobilenet/atlas/{MISSING}.html").exists()
    atlas = (root / PAGE).read_text(encoding="utf-8")
    crumbs = re.search(r'<nav class="crumbs".*?</nav>', atlas, re.S).group(0)
    assert re.findall(r">([^<>]+)</(?:a|span)>", crumbs) == [
        "Home",
        "MobileNet v1 (alpha 0.25, 128 px)",
        LAYER,
        "Activation atlas",
    ]


def test_atlas_site_is_sound(site):
    root, _, _ = site
    assert check_site(root, external_links=True) == []


def test_view_from_a_dataset_labelled_entry(site):
    """Dataset labels show with the dataset's own titles; the filter counts cells."""
    from atlas.site.atlas_view import atlas_view
    from atlas.site.views import class_title
    from atlas.site.writer import Assets

    _, meta, context = site
    cells = [
        {**cell, "label": key, "top": [[key, 0.5]]}
        for cell, key in zip(meta["cells"][:3], ("great_pyrenees", "pug", "pug"), strict=True)
    ]
    entry = type("Entry", (), {"meta": {**meta, "label_kind": "dataset", "cells": cells}})()
    view = atlas_view(
        entry,
        LAYER,
        "layer.html",
        "atlas.html",
        Assets(),
        lambda key: class_title(context.breeds, key),
        {},
        {},
    )
    assert [cell.label for cell in view.cells] == ["Great Pyrenees", "Pug", "Pug"]
    assert [(name, count) for _, name, count in view.classes] == [
        ("Pug", 2),
        ("Great Pyrenees", 1),
    ]
    assert "most frequent dataset class" in view.label_method


def test_crop_geometry_shows_the_patch():
    from atlas.site.atlas_view import crop_geometry

    size_x, size_y, at_x, at_y, aspect = crop_geometry([0.25, 0.1, 0.75, 0.6], (400, 200))
    assert (size_x, size_y) == (200.0, 200.0)  # the photo twice the box
    # the box's left edge on the region's: x offset = at * (box - picture) = -x0 * picture
    assert at_x / 100 * (1 - size_x / 100) == pytest.approx(-0.25 * size_x / 100)
    assert at_y / 100 * (1 - size_y / 100) == pytest.approx(-0.1 * size_y / 100)
    assert aspect == 2.0  # 200 x 100 photo pixels
    assert crop_geometry([0, 0, 1, 1], (10, 10)) == (100.0, 100.0, 0.0, 0.0, 1.0)
