"""The site writer: slugs, links, the writer's refusals, the atomic swap, a real small build."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sitecheck import REPO, check_site, small_config, small_site

from atlas.errors import AtlasError
from atlas.site.publish import write_site
from atlas.site.writer import MARKER, Page, Slugs, environment, render_pages, url

HOSTILE = '<b>&"é'


# --- Slugs and url() ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("conv_pw_1", "conv_pw_1"),
        ("Abyssinian_101", "Abyssinian_101"),
        ("block1.conv-2", "block1.conv-2"),
    ],
)
def test_safe_names_are_kept(name, expected):
    assert Slugs()(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        HOSTILE,
        "../../etc/passwd",
        "a/b",
        "a\\b",
        "",
        ".",
        "..",
        "con:1",
        "x" * 300,
        "日本語",
        "naïve café",
        "with space",
        "?#%",
        "\x00nul",
    ],
)
def test_hostile_names_become_safe_file_names(name):
    slug = Slugs()(name)
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,89}", slug), slug
    assert not slug.startswith(".") and "/" not in slug


def test_slugs_never_collide_and_are_stable():
    slugs = Slugs()
    names = ["a b", "a_b", "a?b", "A_B", "a_b ", "café", "cafe", "cafe\u0301", "", "item"]
    found = [slugs(name) for name in names]
    assert len({slug.lower() for slug in found}) == len(names)  # case-insensitive disks too
    assert [slugs(name) for name in names] == found
    assert Slugs()("a?b") == Slugs()("a?b")  # the same in every build


def test_unicode_is_folded_to_ascii():
    assert Slugs()("naïve").startswith("naive-")


@pytest.mark.parametrize(
    "page, target, expected",
    [
        ("index.html", "dataset.html", "dataset.html"),
        ("index.html", "models/m/index.html", "models/m/index.html"),
        ("models/m/index.html", "index.html", "../../index.html"),
        ("models/m/layers/l/units/3.html", "models/m/layers/l/units/4.html", "4.html"),
        ("models/m/layers/l/index.html", "models/m/images/x.html", "../../images/x.html"),
    ],
)
def test_url_is_relative(page, target, expected):
    assert url(page, target) == expected


@given(
    st.lists(st.sampled_from(["a", "b", "units", "."]), max_size=4),
    st.sampled_from(["index.html", "3.html"]),
    st.lists(st.sampled_from(["a", "b", "index.html", "x.png", "", "."]), min_size=1, max_size=5),
)
def test_url_is_what_relpath_says(folders, page, target):
    page_path, target_path = "/".join([*folders, page]), "/".join(target)
    if not target_path.strip("/."):
        return  # relpath refuses an empty path
    source = str(PurePosixPath(page_path).parent)
    assert url(page_path, target_path) == os.path.relpath(target_path, start=source)


def test_page_root_climbs_to_the_site():
    assert Page("index.html", "x", "t", {}).root == ""
    assert Page("models/m/layers/l/index.html", "x", "t", {}).root == "../../../../"


# --- the writer -------------------------------------------------------------------------


def _env(tmp_path: Path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "plain.html").write_text("{{ page.title }} {{ c.value }}")
    return environment(tmp_path / "templates")


def test_writer_refuses_two_pages_with_one_path(tmp_path):
    pages = [
        Page("a/index.html", "plain.html", "one", {"value": 1}),
        Page("a/index.html", "plain.html", "two", {"value": 2}),
    ]
    with pytest.raises(AtlasError, match="a/index.html"):
        render_pages(pages, _env(tmp_path), tmp_path / "out", {})


def test_writer_escapes_what_it_is_given(tmp_path):
    render_pages(
        [Page("p.html", "plain.html", HOSTILE, {"value": HOSTILE})],
        _env(tmp_path),
        tmp_path / "out",
        {},
    )
    html = (tmp_path / "out" / "p.html").read_text(encoding="utf-8")
    assert HOSTILE not in html and "&lt;b&gt;&amp;&#34;é" in html


class _Config:
    """The parts of a config and a build context that write_site reads."""

    def __init__(self, output: Path) -> None:
        self.config = self
        self.site = self
        self.output = output
        self.templates = None
        self.cache = None


def test_refuses_to_replace_a_folder_it_did_not_make(tmp_path, monkeypatch):
    output = tmp_path / "site"
    output.mkdir()
    (output / "precious.txt").write_text("keep me")
    monkeypatch.setattr("atlas.site.pages.collect_pages", lambda context, assets: ([], {}))
    with pytest.raises(AtlasError, match="not made by atlas"):
        write_site(_Config(output))
    assert (output / "precious.txt").read_text() == "keep me"


def test_failed_render_keeps_the_old_site(tmp_path, monkeypatch):
    output = tmp_path / "site"
    output.mkdir()
    (output / MARKER).write_text("")
    (output / "index.html").write_text("old site")

    def broken(context, assets):
        return [Page("index.html", "no-such-template.html", "t", {})], {}

    monkeypatch.setattr("atlas.site.pages.collect_pages", broken)
    with pytest.raises(Exception, match="no-such-template"):
        write_site(_Config(output))
    assert (output / "index.html").read_text() == "old site"
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no temp folder left behind


def test_swap_replaces_an_atlas_site(tmp_path, monkeypatch):
    output = tmp_path / "site"
    output.mkdir()
    (output / MARKER).write_text("")
    (output / "stale.html").write_text("old")
    monkeypatch.setattr(
        "atlas.site.pages.collect_pages",
        lambda context, assets: (
            [Page("index.html", "404.html", "t", {})],
            {"title": "t", "base_path": "", "version": "0", "models": [], "timestamp": None},
        ),
    )
    write_site(_Config(output))
    assert (output / "index.html").is_file() and not (output / "stale.html").exists()
    assert (output / ".nojekyll").is_file() and (output / MARKER).is_file()


# --- sitecheck itself ---------------------------------------------------------------------


def test_sitecheck_finds_every_kind_of_problem(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "ok.png").write_bytes(b"")
    (tmp_path / "index.html").write_text(
        '<a href="sub/">dir</a><a href="ok.png#x">ok</a><a href="#top">self</a>'
        '<a href="missing.html">1</a><a href="/abs.html">2</a><a href="http://x.org/">3</a>'
        '<a href="../outside.html">4</a><img src="ok.png" alt="a" width="1" height="1">'
        '<img src="ok.png"><script src="https://cdn.example/x.js"></script>'
        '<a href="file:///etc/passwd">5</a><a href="//cdn.example/y">6</a>'
    )
    (tmp_path / "sub" / "index.html").write_text("x" * 400_000)
    problems = "\n".join(check_site(tmp_path))
    for expected in (
        "missing.html",
        "/abs.html",
        "http://x.org/",
        "outside the site",
        "lacks alt, width, height",
        "cdn.example/x.js",
        "file:///etc/passwd",
        "//cdn.example/y",
        "sub/index.html: 391 KB",
    ):
        assert expected in problems
    assert "sub/'" not in problems and "ok.png#x" not in problems
    assert "http://x.org" not in "\n".join(check_site(tmp_path, external_links=True))


# --- a real small build -------------------------------------------------------------------


@pytest.mark.slow
def test_small_build_is_a_sound_site(tmp_path_factory):
    site = small_site(tmp_path_factory)
    assert check_site(site, external_links=True) == []
    for path in (
        "index.html",
        "404.html",
        "dataset.html",
        ".nojekyll",
        "models/mobilenet/index.html",
        "models/mobilenet/predictions.html",
        "models/mobilenet/accuracy.html",
        "models/mobilenet/layers/conv1/index.html",
        "models/mobilenet/layers/conv_preds/units/3.html",
        "models/mobilenet/images/pug_112.html",
        "static/atlas.css",
    ):
        assert (site / path).is_file(), path
    html = "\n".join(p.read_text(encoding="utf-8") for p in site.rglob("*.html"))
    assert "http://" not in html.replace('href="http', "")  # no request leaves the site
    assert not re.search(r'(src|href)="https?:', html.replace('<a href="http', ""))


@pytest.mark.slow
def test_hostile_names_are_escaped_and_linked(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    pets = REPO / "data" / "oxford-pets" / "images"
    hostile_names = [f"{HOSTILE}_1", f"Cat {HOSTILE}_2", "pug_112"]
    for name, source in zip(
        hostile_names, ("Persian_140", "Abyssinian_101", "pug_112"), strict=False
    ):
        shutil.copyfile(pets / f"{source}.jpg", images / f"{name}.jpg")
    from atlas.build import BuildOptions, build

    config = small_config(
        tmp_path,
        images=images,
        detailed="all",
        units_per_layer=1,
        layers=["conv1"],
        title=f"Model {HOSTILE}",
        site_title=f"Site {HOSTILE}",
    )
    report = build(config, BuildOptions(progress=False, max_steps=1))
    site = report.output
    assert check_site(site, external_links=True) == []
    pages = {
        p.relative_to(site).as_posix(): p.read_text(encoding="utf-8") for p in site.rglob("*.html")
    }
    for name, html in pages.items():
        assert HOSTILE not in html, f"{name} shows {HOSTILE!r} unescaped"
    image_pages = [name for name in pages if "/images/" in name]
    assert len(image_pages) == 2  # the first name says no breed: listed as skipped
    assert "&lt;b&gt;&amp;&#34;é_1.jpg" in pages["dataset.html"]
    assert all(
        re.fullmatch(r"models/mobilenet/images/[A-Za-z0-9_.-]+\.html", n) for n in image_pages
    )
    home = pages["index.html"]
    assert "Model &lt;b&gt;&amp;&#34;é" in home and "Site &lt;b&gt;&amp;&#34;é" in home
    predictions = pages["models/mobilenet/predictions.html"]
    assert "Cat &lt;b&gt;&amp;&#34;é_2" in predictions
