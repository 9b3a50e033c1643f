"""Hostile names and files: escaped in every page, sanitised and collision-free file names,
nothing written outside the output and cache folders, safe loading, a local-only server."""

from __future__ import annotations

import ast
import http.client
import logging
import os
import re
import shutil
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from atlas.cli import _parser, main
from atlas.site.serve import make_server
from atlas.site.writer import Slugs, environment

REPO = Path(__file__).resolve().parents[1]
PETS = REPO / "data" / "oxford-pets" / "images"
SAFE_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")

# File name -> the words a reader must see (unescaped) on some page. Each names a breed too
# (breed = the name without "_<number>"), so breed names are hostile as well.
HOSTILE = {
    "x<script>alert(1)<\\script>_1.jpg": "x<script>alert(1)<\\script>_1",
    'a"b&c_2.jpg': 'a"b&c_2',
    "ünïcödé_3.jpg": "ünïcödé_3",
    "x?y_4.jpg": "x?y_4",
    "x*y_4.jpg": "x*y_4",
    "up..%2F..%2Fescape..\\.._5.jpg": "up..%2F..%2Fescape..\\.._5",
    "L" + "o" * 230 + "ng_6.jpg": "L" + "o" * 230 + "ng_6",
    "y<img src=x onerror=alert(2)>_7.jpg": "y<img src=x onerror=alert(2)>_7",
    "q'uote_8.jpg": "q'uote_8",
}
RAW_FORBIDDEN = ("<script>alert", "<img src=x", 'a"b&c', "<\\script>")
BAD = {"empty_13.jpg", "cut_14.jpg", "text_15.jpg"}  # skipped, one warning each
ODD = {"pngdata_10.jpg", "cmyk_11.jpg", "deep_12.png"}  # decoded, no warning


def photo(index: int) -> Path:
    return sorted(PETS.glob("*.jpg"))[index]


def salt_dataset(images: Path) -> None:
    for index, name in enumerate(HOSTILE):
        shutil.copyfile(photo(index), images / name)
    small = Image.open(photo(20)).convert("RGB").resize((64, 48))
    small.save(images / "pngdata_10.jpg", format="PNG")
    small.convert("CMYK").save(images / "cmyk_11.jpg", format="JPEG")
    grey = Image.open(photo(21)).convert("L").resize((64, 48)).point(lambda v: v * 257)
    grey.convert("I;16").save(images / "deep_12.png")
    (images / "empty_13.jpg").write_bytes(b"")
    data = photo(22).read_bytes()
    (images / "cut_14.jpg").write_bytes(data[: len(data) // 3])
    (images / "text_15.jpg").write_text("this is not a picture\n")


class _Text(HTMLParser):
    """Collects what a reader sees: text and attribute values, with entities decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.parts.extend(value for _, value in attrs if value)

    def handle_data(self, data):
        self.parts.append(data)


def link_problems(site: Path) -> list[str]:
    """Broken links, by the shared checker (tests/sitecheck.py) where it exists."""
    if not (Path(__file__).parent / "sitecheck.py").is_file():  # pragma: no cover
        return []
    from sitecheck import check_site

    return [problem for problem in check_site(site) if "link" in problem]


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.slow
def test_hostile_names_and_bad_files_build_safely(tmp_path, project_factory, caplog):
    project = tmp_path / "project"
    config = project_factory(project, images=0, units_per_layer=1)
    salt_dataset(project / "images")
    outside = {
        tmp_path: listing(tmp_path),
        project: listing(project),
        project / "images": listing(project / "images"),
    }

    caplog.set_level(logging.WARNING)
    code = main(["build", "-c", str(config), "--no-progress", "--max-steps", "2"])
    assert code == 0

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    for name in BAD:
        assert sum(name in message for message in warnings) == 1, (name, warnings)
    for name in ODD | set(HOSTILE):
        assert not any(name in message for message in warnings), (name, warnings)

    # Nothing written outside the output and cache folders.
    assert listing(tmp_path) == outside[tmp_path]
    assert listing(project) == sorted(outside[project] + ["_site", ".atlas-cache"])
    assert listing(project / "images") == outside[project / "images"]

    site = project / "_site"
    files = [p for p in site.rglob("*") if p.is_file()]
    for path in files:  # sanitised names only, all inside the site
        assert SAFE_PATH.match(path.relative_to(site).as_posix()), path
        assert path.resolve().is_relative_to(site.resolve())
    texts = {
        p: p.read_text(encoding="utf-8")
        for p in files
        if p.suffix in (".html", ".js", ".css", ".json", ".txt")
    }
    for path, text in texts.items():
        for raw in RAW_FORBIDDEN:
            assert raw not in text, f"{raw!r} unescaped in {path.relative_to(site)}"

    seen = ""
    for path, text in texts.items():
        if path.suffix == ".html":
            parser = _Text()
            parser.feed(text)
            seen += "\n".join(parser.parts)
    for shown in HOSTILE.values():
        assert shown in seen, f"{shown!r} is not shown on any page"

    image_pages = [p for p in files if p.parent.name == "images" and p.suffix == ".html"]
    assert len(image_pages) == len(HOSTILE) + len(ODD)  # x?y_4 and x*y_4 both have one
    dataset = (site / "dataset.html").read_text(encoding="utf-8")
    for name in BAD:
        assert name in dataset
    assert link_problems(site) == []


# -- file names -------------------------------------------------------------------------


def test_slugs_of_names_differing_only_in_dropped_characters_differ():
    slugs = Slugs()
    names = [
        "x?y_4",
        "x*y_4",
        "x_y_4",
        "X_Y_4",
        "x/y_4",
        "x\\y_4",
        "..",
        ".",
        "",
        "../etc",
        "ünïcödé",
        "unicode",
        "a" * 300,
        "a" * 301,
    ]
    made = [slugs(name) for name in names]
    assert len({m.lower() for m in made}) == len(names)
    for slug in made:
        assert SAFE_PATH.match(slug) and not slug.startswith(".") and len(slug) <= 100
    assert [slugs(name) for name in names] == made  # stable


@settings(max_examples=200, deadline=None)
@given(names=st.lists(st.text(max_size=40), unique=True, max_size=20))
def test_slugs_are_safe_unique_and_stable(names):
    slugs = Slugs()
    made = [slugs(name) for name in names]
    assert len({m.lower() for m in made}) == len(made)
    for slug in made:
        assert SAFE_PATH.match(slug) and not slug.startswith(".")
    assert [slugs(name) for name in names] == made


def test_templates_escape_by_default():
    env = environment(None)
    assert env.autoescape is True
    html = env.from_string("{{ name }}").render(name="<script>alert(1)</script>")
    assert html == "&lt;script&gt;alert(1)&lt;/script&gt;"


# -- nothing unsafe is ever loaded --------------------------------------------------------


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield ast.unparse(node.func), {k.arg: ast.unparse(k.value) for k in node.keywords}


@pytest.mark.parametrize(
    "source", sorted((REPO / "atlas").rglob("*.py")), ids=lambda p: p.relative_to(REPO).as_posix()
)
def test_no_pickle_no_unsafe_yaml_keras_in_safe_mode(source):
    text = source.read_text(encoding="utf-8")
    tree = ast.parse(text)
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"pickle", "cPickle", "dill", "joblib", "shelve", "marshal"}
    for name, keywords in calls(tree):
        if name.endswith(("np.load", "numpy.load")):
            assert keywords.get("allow_pickle") == "False", source
        assert name not in (
            "yaml.load",
            "yaml.unsafe_load",
            "yaml.full_load",
            "eval",
            "exec",
            "pickle.load",
            "pickle.loads",
            "torch.load",
        )
        if name.endswith("load_model") and ("keras" in name or "saving" in name):
            assert keywords.get("safe_mode") == "True", source
        if name.endswith("Environment"):
            assert keywords.get("autoescape") == "True", source


# -- the preview server ---------------------------------------------------------------------


def test_serve_binds_to_this_machine_only_by_default():
    args = _parser().parse_args(["serve"])
    assert args.bind == "127.0.0.1"
    assert make_server.__defaults__[0] == "127.0.0.1"


def test_serve_does_not_follow_links_out_of_the_site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>home</p>")
    (site / "404.html").write_text("<p>not here</p>")
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret")
    (site / "leak.txt").symlink_to(secret)
    (site / "leaks").symlink_to(tmp_path)
    (site / "inside.txt").symlink_to(site / "index.html")
    server = make_server(site, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for path, status, body in [
            ("/leak.txt", 404, b"<p>not here</p>"),
            ("/leaks/secret.txt", 404, b"<p>not here</p>"),
            ("/inside.txt", 200, b"<p>home</p>"),
            ("/", 200, b"<p>home</p>"),
        ]:
            connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
            connection.request("GET", path)
            response = connection.getresponse()
            assert (response.status, response.read()) == (status, body), path
            connection.close()
    finally:
        server.shutdown()
        server.server_close()
