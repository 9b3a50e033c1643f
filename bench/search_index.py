"""The search index's size for an already built site, without building anything.

Reads a built site's pages (layers, unit pages with their strongest photos, image pages,
ImageNet's labels for each classifier), rebuilds the views
:func:`atlas.site.search.build_index` needs
from them, and prints the index's size, raw and gzipped (what GitHub Pages sends).

    python bench/search_index.py _site
"""

from __future__ import annotations

import gzip
import html
import json
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace as NS

import _tree  # noqa: F401 - this checkout's atlas, whatever is installed

from atlas.site.search import index_script

_IMAGENET = tuple(
    label
    for _, label in json.loads(
        (Path(__file__).parent.parent / "data" / "imagenet_class_index.json").read_text()
    ).values()
)


def _photo_breeds(site: Path) -> dict[str, str]:
    """Photo name -> breed title, from the image pages ("A <strong>Breed</strong>")."""
    found = {}
    for page in site.glob("models/*/images/*.html"):
        text = page.read_text(encoding="utf-8")
        match = re.search(r"A <strong>([^<]+)</strong>", text)
        found[page.stem] = html.unescape(match.group(1)) if match else ""
    return found


def _model(folder: Path, site: Path, breeds: dict[str, str]) -> NS:
    base = folder.relative_to(site).as_posix()
    layers = []
    for layer_dir in sorted((folder / "layers").iterdir()):
        units = []
        for page in sorted((layer_dir / "units").glob("*.html"), key=lambda p: int(p.stem)):
            text = page.read_text(encoding="utf-8").split('class="exemplars"', 1)[-1]
            names = re.findall(r"<figcaption>([^<]+?) · max", text)
            units.append(NS(index=int(page.stem), exemplars=tuple({"image": n} for n in names)))
        layers.append(
            NS(name=layer_dir.name, path=f"{base}/layers/{layer_dir.name}/index.html", units=units)
        )
    images = [
        NS(name=name, breed_title=title, detailed=True, path=f"{base}/images/{name}.html")
        for name, title in breeds.items()
        if (folder / "images" / f"{name}.html").is_file()
    ]
    # Every classifier is given ImageNet's 1,000 labels: an upper bound (a model with the
    # 37 breeds as classes has fewer).
    labels = _IMAGENET if (folder / "accuracy.html").is_file() else ()
    return NS(
        id=folder.name,
        title=folder.name,
        path=f"{base}/index.html",
        layers=layers,
        images=images,
        has_classes=bool(labels),
        space=NS(labels=labels),
        sibling=lambda name, base=base: f"{base}/{name}",
    )


def main(site: Path) -> None:
    breeds = _photo_breeds(site)
    models = [_model(folder, site, breeds) for folder in sorted((site / "models").iterdir())]
    start = time.perf_counter()
    data = index_script(models).encode("utf-8")
    seconds = time.perf_counter() - start
    units = sum(len(layer.units) for model in models for layer in model.layers)
    pages = sum(1 for _ in site.rglob("*.html"))
    print(
        f"{pages} pages, {units} units, {len(breeds)} photos: index {len(data):,} bytes "
        f"({len(gzip.compress(data)):,} gzipped), built in {seconds * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "_site"))
