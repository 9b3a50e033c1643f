"""A link and page checker for a built atlas site, reusable by any test.

``check_site(root)`` returns a list of problems (empty when the site is sound): links that
do not resolve to a file inside the site, absolute or external links, pictures without
alt text or size, and pages over the weight limit. It reads HTML with the standard
library's ``html.parser`` only.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

MAX_PAGE_BYTES = 300 * 1024

# (tag, attribute) pairs whose value the browser follows or fetches.
LINK_ATTRIBUTES = {
    ("a", "href"),
    ("link", "href"),
    ("img", "src"),
    ("script", "src"),
    ("source", "src"),
    ("iframe", "src"),
    ("video", "src"),
    ("audio", "src"),
    ("image", "href"),
    ("use", "href"),
}


class _Page(HTMLParser):
    """Collects the links and pictures of one HTML file."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str, int]] = []  # (tag, url, line)
        self.images: list[tuple[dict[str, str | None], int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        line = self.getpos()[0]
        for name, value in attrs:
            if (tag, name) in LINK_ATTRIBUTES and value is not None:
                self.links.append((tag, value, line))
            if tag == "img" and name == "srcset" and value:
                self.links.extend(
                    (tag, part.split()[0], line) for part in value.split(",") if part.strip()
                )
        if tag == "img":
            self.images.append((values, line))

    handle_startendtag = handle_starttag


def _link_problem(
    root: Path, page: Path, tag: str, target: str, external_links: bool
) -> str | None:
    """Why a link of ``page`` is broken, or None."""
    parts = urlsplit(target)
    if parts.scheme or target.startswith("//"):
        if tag == "a" and external_links and parts.scheme in ("http", "https", "mailto"):
            return None  # a link the reader may follow, not a request the page makes
        return f"absolute or external link {target!r}"
    if target.startswith("/"):
        return f"root-relative link {target!r} (breaks under a sub-path and on file://)"
    if not parts.path:
        return None  # "#fragment" or "?query" on the page itself
    resolved = (page.parent / unquote(parts.path)).resolve()
    if not resolved.is_relative_to(root):
        return f"link {target!r} points outside the site"
    if resolved.is_dir():
        resolved = resolved / "index.html"
    if not resolved.is_file():
        return f"broken link {target!r}"
    return None


def check_site(
    root: Path, *, external_links: bool = False, max_page_bytes: int = MAX_PAGE_BYTES
) -> list[str]:
    """Every problem of the site in ``root``, as ``"<page>:<line>: <problem>"`` lines.

    Args:
        root: the site folder (holding index.html).
        external_links: allow ``<a href="https://...">`` (links in author notes); pictures,
            scripts and style sheets must always be local.
        max_page_bytes: report HTML files larger than this.

    Returns:
        The problems, sorted; an empty list for a sound site.
    """
    root = Path(root).resolve()
    problems: list[str] = []
    if not (root / "index.html").is_file():
        return [f"{root}: no index.html"]
    for page in sorted(root.rglob("*.html")):
        name = page.relative_to(root).as_posix()
        size = page.stat().st_size
        if size > max_page_bytes:
            problems.append(f"{name}: {size / 1024:.0f} KB, over {max_page_bytes // 1024} KB")
        parser = _Page()
        parser.feed(page.read_text(encoding="utf-8"))
        parser.close()
        for tag, target, line in parser.links:
            problem = _link_problem(root, page, tag, target, external_links)
            if problem:
                problems.append(f"{name}:{line}: {problem}")
        for attributes, line in parser.images:
            missing = [key for key in ("alt", "width", "height") if attributes.get(key) is None]
            if missing:
                problems.append(
                    f"{name}:{line}: <img src={attributes.get('src')!r}> lacks "
                    + ", ".join(missing)
                )
    return problems


def page_sizes(root: Path) -> list[tuple[int, str]]:
    """(bytes, site path) of every HTML file, largest first."""
    root = Path(root)
    return sorted(
        ((page.stat().st_size, page.relative_to(root).as_posix()) for page in root.rglob("*.html")),
        reverse=True,
    )


REPO = Path(__file__).resolve().parents[1]
DETAILED = ("Abyssinian_101", "Persian_140", "beagle_111", "pug_112")  # image names: stems
LAYERS = ("conv1", "conv_dw_1", "conv_pw_1", "conv_pw_13", "conv_preds")
_built: dict[str, Path] = {}


def small_config(folder: Path, **changes) -> Path:
    """A config in ``folder`` for a small real build: MobileNet, 5 layers, 4 units each.

    ``changes`` replace top-level keys of ``site``, ``dataset`` or the model entry, e.g.
    ``small_config(folder, title="x", images=path)``.
    """
    import yaml

    data = REPO / "data"
    config = {
        "site": {
            "title": changes.pop("site_title", "atlas test"),
            "output": str(folder / "site"),
            "notes": str(REPO / "notes" / "intro.md"),
        },
        "cache": str(changes.pop("cache", folder / "cache")),
        "dataset": {
            "name": "Oxford-IIIT Pet (sample)",
            "images": str(changes.pop("images", data / "oxford-pets" / "images")),
            "annotations": str(data / "oxford-pets" / "annotations" / "list.txt"),
            "class_index": str(data / "imagenet_class_index.json"),
            "breeds": str(data / "breeds.json"),
            "detailed": changes.pop("detailed", list(DETAILED)),
        },
        "render": {"units_per_layer": changes.pop("units_per_layer", 4)},
        "models": [
            {
                "id": "mobilenet",
                "title": "MobileNet v1 (alpha 0.25, 128 px)",
                "application": "MobileNet",
                "options": {"alpha": 0.25, "input_shape": [128, 128, 3]},
                "weights": str(data / "models" / "mobilenet_2_5_128_tf.h5"),
                "layers": list(changes.pop("layers", LAYERS)),
                "notes": str(REPO / "notes" / "mobilenet.md"),
                **changes,
            }
        ],
    }
    path = folder / "site_config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def small_site(tmp_path_factory) -> Path:
    """The small site, built once per test session (shared by every module that asks)."""
    if "small" not in _built:
        from atlas.build import BuildOptions, build

        folder = tmp_path_factory.mktemp("small-site")
        report = build(small_config(folder), BuildOptions(progress=False, max_steps=2))
        _built["small"] = report.output
    return _built["small"]


if __name__ == "__main__":
    import sys

    site = Path(sys.argv[1] if len(sys.argv) > 1 else "_site")
    found = check_site(site, external_links=True)
    print("\n".join(found) or f"{site}: no problems")
    for size, path in page_sizes(site)[:5]:
        print(f"{size / 1024:8.1f} KB  {path}")
    sys.exit(1 if found else 0)


def files_of(site: Path) -> dict[str, bytes]:
    """Every file of a site by its relative path, for byte-for-byte comparisons."""
    return {
        p.relative_to(site).as_posix(): p.read_bytes()
        for p in sorted(site.rglob("*"))
        if p.is_file()
    }


def assets(files: dict[str, bytes]) -> dict[str, bytes]:
    """The rendered pictures of a site (named by content hash)."""
    return {name: data for name, data in files.items() if name.startswith("assets/")}


def edit_config(path: Path, change) -> None:
    """Load a YAML config, let ``change`` edit the data, write it back."""
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
