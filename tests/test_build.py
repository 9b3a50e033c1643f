"""Whole builds of a tiny site: cold = warm, exact re-rendering, interruptions, the output.

One cold build of the tiny ``.keras`` model on four photos is shared by the module; tests
that change something work on a copy of its project folder (config, images, cache, site).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from sitecheck import assets, edit_config, files_of

from atlas.build import BuildOptions, build
from atlas.errors import AtlasError

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
OPTIONS = BuildOptions(progress=False, max_steps=2)
# 4 photos; 3 conv layers x 2 units; every image detailed
COLD = {"facts": 1, "photo": 4, "predict": 4, "image": 4, "unit": 6, "grid": 3, "exemplars": 3}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {kind: n for kind, n in counts.items() if n}


def broken_links(site: Path) -> list[str]:
    """Every href/src of every page that points at no file of the site."""
    broken = []
    for page in site.rglob("*.html"):
        for link in re.findall(r'(?:href|src)="([^"]*)"', page.read_text(encoding="utf-8")):
            parts = urlsplit(link)
            if parts.scheme or link.startswith(("#", "//", "data:")) or not parts.path:
                continue
            target = (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file() or site.resolve() not in target.parents:
                broken.append(f"{page.relative_to(site)} -> {link}")
    return broken


def cache_entries(cache: Path, field: str) -> list[Path]:
    """Entry folders whose meta.json has ``field`` (e.g. "own_activation" for units)."""
    found = []
    for meta in cache.glob("*/*/meta.json"):
        try:
            if field in json.loads(meta.read_text()):
                found.append(meta.parent)
        except (OSError, ValueError):
            pass
    return found


def build_in_subprocess(config: Path, *, max_steps: int | None = 2) -> dict:
    """A build in a fresh interpreter; returns its report and whether TensorFlow loaded."""
    code = (
        "import json, sys\n"
        "from atlas.build import build, BuildOptions\n"
        f"r = build(sys.argv[1], BuildOptions(progress=False, max_steps={max_steps!r}))\n"
        "print(json.dumps({'rendered': r.rendered, 'reused': r.reused, "
        "'tensorflow': 'tensorflow' in sys.modules, 'keras': 'keras' in sys.modules}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory, project_factory):
    """A cold build of the tiny project: (config path, report, site files)."""
    config = project_factory(tmp_path_factory.mktemp("tiny-site"), model="tiny", images=4)
    report = build(config, OPTIONS)
    return config, report, files_of(report.output)


@pytest.fixture
def project(tiny_site, tmp_path) -> Path:
    """A private copy of the built tiny project; returns its config path."""
    config = tiny_site[0]
    shutil.copytree(config.parent, tmp_path / "project", symlinks=True)
    return tmp_path / "project" / "site_config.yaml"


def test_cold_build_renders_everything_and_links_hold(tiny_site):
    config, report, files = tiny_site
    assert nonzero(report.rendered) == COLD
    assert nonzero(report.reused) == {}
    assert report.output == config.parent / "_site"
    assert report.pages == sum(1 for name in files if name.endswith(".html"))
    assert {"index.html", "404.html", "dataset.html", ".atlas-site"} <= set(files)
    units = [n for n in files if re.search(r"layers/[^/]+/units/\d+\.html$", n)]
    assert len(units) == 6
    assert broken_links(report.output) == []


LEDGER = "build.html"  # the compute ledger: the one page that differs between builds


def without_ledger(files: dict) -> dict:
    return {name: data for name, data in files.items() if name != LEDGER}


def test_warm_build_renders_nothing_and_skips_tensorflow(tiny_site, project):
    result = build_in_subprocess(project)
    assert nonzero(result["rendered"]) == {}
    assert nonzero(result["reused"]) == COLD  # the facts too: read from the cache
    assert result["tensorflow"] is False and result["keras"] is False
    site = files_of(project.parent / "_site")
    assert site.keys() == tiny_site[2].keys()
    assert assets(site) == assets(tiny_site[2])


def stamps(site: Path) -> dict[str, tuple[int, int]]:
    """Every file of a site with its inode and mtime: what a rewrite would change."""
    return {
        p.relative_to(site).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in site.rglob("*")
        if p.is_file()
    }


def settled(project: Path) -> Path:
    """The copied project's site after one warm build: the copy gave every file (site and
    cache) a new inode, so the first build there cannot know the site is as it was."""
    build(project, OPTIONS)
    return project.parent / "_site"


def test_warm_build_writes_nothing_when_nothing_changed(tiny_site, project, monkeypatch):
    site = settled(project)
    before = stamps(site)

    def no_projection(*args, **kwargs):
        raise AssertionError("an up-to-date site needs no budget projection")

    monkeypatch.setattr("atlas.plan.report.rows", no_projection)
    report = build(project, OPTIONS)
    assert nonzero(report.rendered) == {} and report.pages_written == 0
    assert nonzero(report.reused) == COLD  # every job counted, as the full checks count
    assert report.pages == tiny_site[1].pages
    assert stamps(site) == before  # not one file rewritten, the ledger included
    assert without_ledger(files_of(site)) == without_ledger(tiny_site[2])


def test_an_entry_gone_from_the_cache_is_rendered_again_though_the_site_is_current(project):
    from atlas.cache.store import Cache
    from atlas.config.load import load_config

    site = settled(project)
    before = files_of(site)
    config = load_config(project)
    cache = Cache(config.cache)
    unit = next(key for key in sorted(cache.keys()) if (cache.path_of(key) / "unit.webp").is_file())
    shutil.rmtree(cache.path_of(unit))
    report = build(project, OPTIONS)
    assert nonzero(report.rendered) == {"unit": 1}
    assert Cache(config.cache).get(unit) is not None
    assert without_ledger(files_of(site)) == without_ledger(before)  # the same picture


def test_prune_on_a_current_site_still_drops_what_the_site_does_not_use(project):
    from dataclasses import replace

    from atlas.cache.keys import make_key
    from atlas.cache.store import Cache
    from atlas.config.load import load_config

    settled(project)
    cache = Cache(load_config(project).cache)
    stray = make_key({"left": "by an older config"})
    cache.put(stray, {"kind": "unit"}, {"unit.webp": b"old"})
    assert build(project, OPTIONS).pages_written == 0  # current: nothing dropped
    assert Cache(cache.root).get(stray) is not None
    report = build(project, replace(OPTIONS, prune=True))
    assert nonzero(report.rendered) == {}
    assert Cache(cache.root).get(stray) is None


def test_a_small_change_rewrites_only_the_pages_it_changes(tiny_site, project):
    site = settled(project)
    before = stamps(site)
    edit_config(project, lambda d: d["render"].update(best_grid=2))  # the layer pages' grids
    report = build(project, OPTIONS)
    assert nonzero(report.rendered) == {"grid": 3}
    after = stamps(site)
    changed = {name for name in after if after[name] != before.get(name)}
    pages = {name for name in changed if name.endswith(".html")}
    assert LEDGER in pages and report.pages_written == len(pages)
    assert any("/layers/" in name for name in pages)
    assert not any("/units/" in name for name in pages)  # unit pages were linked, not written
    assert all(after[name] == before[name] for name in after if "/units/" in name)

    def fresh(data):  # the same config, cold, into another cache and site
        data["cache"] = "other-cache"
        data["site"]["output"] = "other-site"

    edit_config(project, fresh)
    cold = build(project, OPTIONS)
    assert without_ledger(files_of(cold.output)) == without_ledger(files_of(site))


def test_a_site_changed_by_hand_is_written_again(tiny_site, project):
    site = settled(project)
    before = stamps(site)
    (site / "index.html").unlink()
    (site / "404.html").write_text("edited")
    report = build(project, OPTIONS)
    after = stamps(site)
    pages = {n for n in after if n.endswith(".html") and after[n] != before.get(n)}
    # The ledger is written again only when its rounded stage times changed.
    assert pages - {LEDGER} == {"index.html", "404.html"}
    assert report.pages_written == len(pages) and nonzero(report.rendered) == {}
    assert without_ledger(files_of(site)) == without_ledger(tiny_site[2])


def test_a_timestamped_site_is_never_taken_as_up_to_date(project, caplog):
    edit_config(project, lambda d: d["site"].update(timestamp=True))
    build(project, OPTIONS)
    # Pages are rendered again (the footer's minute may have changed); those whose bytes
    # did not change are linked. (Whether the ledger's bytes change depends on its
    # rounded stage times: two quick builds can give the same ones, so it is not asserted.)
    caplog.set_level(logging.INFO, logger="atlas.site.writer")
    report = build(project, OPTIONS)
    assert not [r for r in caplog.records if "up to date" in r.getMessage()]
    assert report.pages == len(list((project.parent / "_site").rglob("*.html")))


def test_two_cold_builds_into_different_caches_are_identical(tiny_site, project):
    def fresh(data):
        data["cache"] = "other-cache"
        data["site"]["output"] = "other-site"

    edit_config(project, fresh)
    report = build(project, OPTIONS)
    assert nonzero(report.rendered) == COLD
    assert without_ledger(files_of(report.output)) == without_ledger(tiny_site[2])


def test_damaged_entry_is_rendered_again_and_only_it(tiny_site, project):
    cache = project.parent / ".atlas-cache"
    unit = sorted(cache_entries(cache, "own_activation"))[0]
    picture = unit / "unit.webp"
    picture.write_bytes(picture.read_bytes()[:10])
    report = build(project, OPTIONS)
    assert nonzero(report.rendered) == {"unit": 1}
    assert assets(files_of(report.output)) == assets(tiny_site[2])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["render"].update(lucid={"steps": 3}), {"unit": 6, "grid": 3}),
        (lambda d: d["render"].update(method="classic"), {"unit": 6, "grid": 3}),
        (lambda d: d["render"].update(best_grid=2), {"grid": 3}),
        # exemplars depend on which images excite a unit most: unchanged here
        (lambda d: d["render"].update(activation_channels=2), {"image": 4}),
        (lambda d: d["site"].update(title="another title"), {}),
        (lambda d: d["models"][0].update(layers=["conv", "sep*"]), {"image": 4}),
    ],
    ids=["lucid-steps", "method", "best-grid", "channels", "title", "layers"],
)
def test_a_changed_setting_renders_exactly_what_depends_on_it(project, change, expected):
    edit_config(project, change)
    report = build(project, OPTIONS)
    assert nonzero(report.rendered) == expected
    assert broken_links(report.output) == []


def test_changed_notes_and_templates_render_nothing(tiny_site, project):
    notes = project.parent / "notes.md"
    notes.write_text("# About\n\nA *tiny* atlas.\n")
    templates = project.parent / "my_templates"
    templates.mkdir()
    footer = (
        (REPO / "templates" / "base.html").read_text().replace("</body>", "<!-- custom --></body>")
    )
    (templates / "base.html").write_text(footer)

    def add(data):
        data["site"].update(notes="notes.md", templates="my_templates")

    edit_config(project, add)
    report = build(project, OPTIONS)
    assert nonzero(report.rendered) == {}
    index = (report.output / "index.html").read_text()
    assert "<em>tiny</em>" in index and "<!-- custom -->" in index
    assert files_of(report.output).keys() == tiny_site[2].keys()


def test_an_added_image_renders_only_its_assets(tiny_site, project):
    images = project.parent / "images"
    extra = sorted(p for p in (REPO / "data/oxford-pets/images").glob("Bengal_*.jpg"))[0]
    shutil.copyfile(extra, images / extra.name)
    report = build(project, OPTIONS)
    rendered = nonzero(report.rendered)
    exemplars = rendered.pop("exemplars", 0)
    assert rendered == {"photo": 1, "predict": 1, "image": 1}
    assert exemplars <= 3  # only layers whose strongest images changed
    stem = extra.stem
    assert any(name.endswith(f"images/{stem}.html") for name in files_of(report.output))
    assert broken_links(report.output) == []


def test_a_removed_model_removes_its_pages(project):
    def add_second(data):
        second = dict(
            data["models"][0],
            id="second",
            title="Second",
            layers=["conv"],
            render={"units_per_layer": 1},
        )
        data["models"].append(second)

    edit_config(project, add_second)
    report = build(project, OPTIONS)
    # Same file, same layer, same unit: the unit picture is shared by content; the
    # per-image maps (other layer list), the 1-unit grid and its exemplars are new.
    assert nonzero(report.rendered) == {"image": 4, "grid": 1, "exemplars": 1}
    names = files_of(report.output)
    assert any("second" in name for name in names)
    edit_config(project, lambda data: data["models"].pop())
    report = build(project, OPTIONS)
    assert nonzero(report.rendered) == {}
    names = files_of(report.output)
    assert not any("second" in name for name in names)
    assert "second" not in (report.output / "index.html").read_text().lower()
    assert broken_links(report.output) == []


def start_build(config: Path, *extra: str) -> subprocess.Popen:
    # Many units at the real step count: the unit stage lasts long enough to interrupt.
    return subprocess.Popen(
        [sys.executable, "-m", "atlas", "build", "-c", str(config), "--no-progress", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def wait_for_units(process: subprocess.Popen, cache: Path, before: int) -> int:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        count = len(cache_entries(cache, "own_activation"))
        if count > before:
            return count
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    pytest.fail("no unit was rendered in time")


def more_units(data: dict) -> None:
    data["render"].update(units_per_layer=4, lucid={"steps": 400})


def test_killed_build_resumes_with_finished_units(project):
    edit_config(project, more_units)
    cache = project.parent / ".atlas-cache"
    before = len(cache_entries(cache, "own_activation"))
    process = start_build(project)
    try:
        wait_for_units(process, cache, before)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        process.kill()
        process.communicate()
    finished = len(cache_entries(cache, "own_activation")) - before
    # Units are written batch by batch and a batch may span layers: the kill can land
    # after every unit of the one batch was written, so all 12 may be finished.
    assert 0 < finished <= 12
    report = build(project, OPTIONS)  # also removes what the kill left half-written
    assert report.reused["unit"] == finished
    assert report.rendered.get("unit", 0) == 12 - finished
    assert not list(cache.glob("*/.tmp-*"))
    assert broken_links(report.output) == []


def test_ctrl_c_keeps_finished_units_and_the_previous_site(project):
    site = project.parent / "_site"
    previous = files_of(site)
    edit_config(project, more_units)
    cache = project.parent / ".atlas-cache"
    process = start_build(project)
    try:
        wait_for_units(process, cache, len(cache_entries(cache, "own_activation")))
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err[-3000:]
    assert "interrupted" in err and "kept" in err
    assert "Traceback" not in err
    assert files_of(site) == previous
    assert not list(project.parent.glob("._site.tmp-*"))


def test_failed_build_leaves_the_previous_site(project):
    site = project.parent / "_site"
    previous = files_of(site)
    templates = project.parent / "broken_templates"
    templates.mkdir()
    (templates / "layer.html").write_text(
        "{% extends 'base.html' %}{% block main %}{{ c.no_such_field }}{% endblock %}"
    )
    edit_config(project, lambda data: data["site"].update(templates="broken_templates"))
    with pytest.raises(Exception, match="no_such_field"):
        build(project, OPTIONS)
    assert files_of(site) == previous
    assert not list(project.parent.glob("._site.tmp-*"))


def test_refuses_to_replace_a_folder_it_did_not_make(project):
    def elsewhere(data):
        data["site"]["output"] = "precious"

    edit_config(project, elsewhere)
    precious = project.parent / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(AtlasError, match="refusing to use .*precious as site.output.*atlas-site"):
        build(project, OPTIONS)
    assert [p.name for p in precious.iterdir()] == ["thesis.tex"]
    assert not list(project.parent.glob(".precious.tmp-*"))
