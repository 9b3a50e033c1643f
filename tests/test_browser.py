"""The built site in a real browser: click through, use the keys and the filter, no errors.

Drives Debian's Chromium through Playwright's Python package; Playwright never downloads a
browser here. Screenshots of each page kind go to test-artifacts/screenshots/, and into
docs/img/screens/ when ATLAS_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sitecheck import REPO, small_site

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = REPO / "test-artifacts" / "screenshots"
README_SHOTS = REPO / "docs" / "img" / "screens"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """The small site over HTTP on 127.0.0.1; yields its base URL."""
    from atlas.site.serve import make_server

    site = small_site(tmp_path_factory)
    httpd = make_server(site, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing; CI must run the browser tests")
        pytest.skip(f"{CHROMIUM} is missing")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Watched:
    """A page whose console errors, page errors and failed requests are recorded."""

    def __init__(self, browser, base: str, **context_options) -> None:
        self.context = browser.new_context(**context_options)
        self.page = self.context.new_page()
        self.base = base
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        # Leaving a page aborts its pending lazy pictures: that is not a failure.
        self.page.on(
            "requestfailed",
            lambda r: (
                r.failure == "net::ERR_ABORTED"
                or self.errors.append(f"failed: {r.url} ({r.failure})")
            ),
        )
        self.page.on(
            "response",
            lambda r: r.status >= 400 and self.errors.append(f"HTTP {r.status}: {r.url}"),
        )
        self.page.on(
            "request",
            lambda r: r.url.startswith(base) or self.errors.append(f"external request: {r.url}"),
        )

    def goto(self, path: str = "") -> None:
        self.page.goto(self.base + path, wait_until="load")

    def settle(self) -> None:
        """Scroll to the bottom and back so that lazy pictures load (and can fail). After
        a click the next page may still be loading (no body yet): wait for it first."""
        self.page.wait_for_load_state("load")
        self.page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        self.page.wait_for_load_state("networkidle")
        self.page.evaluate("window.scrollTo(0, 0)")

    def shot(self, kind: str, full_page: bool = False) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        target = SHOTS / f"{kind}.png"
        self.page.screenshot(path=str(target), full_page=full_page)
        if os.environ.get("ATLAS_UPDATE_SCREENSHOTS") == "1":
            README_SHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(target, README_SHOTS / f"{kind}.png")

    def path(self) -> str:
        return self.page.url.removeprefix(self.base)

    def close(self) -> None:
        self.context.close()


def test_click_through_keys_and_filter(browser, server):
    tab = Watched(browser, server, viewport={"width": 1280, "height": 900})
    page = tab.page
    tab.goto("index.html")
    tab.settle()
    tab.shot("home")

    page.click("a.model-card")
    assert tab.path() == "models/mobilenet/index.html"
    tab.settle()
    tab.shot("model")

    page.fill("input.filter", "conv_pw")
    visible = page.locator(".layer-card:visible .name").all_inner_texts()
    assert visible == ["conv_pw_1", "conv_pw_13"]
    page.fill("input.filter", "")

    page.click(".layer-card[data-name='conv_dw_1']")
    assert tab.path() == "models/mobilenet/layers/conv_dw_1/index.html"
    tab.settle()
    tab.shot("layer")
    page.keyboard.press("ArrowRight")
    page.wait_for_url("**/layers/conv_pw_1/index.html")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url("**/layers/conv_dw_1/index.html")

    page.fill("input.filter", "2")
    assert page.locator(".units > a:visible").all_inner_texts() == ["2"]
    page.fill("input.filter", "")
    page.select_option("select.sort", "o")
    order = page.locator(".units > a").evaluate_all("l => l.map(a => Number(a.dataset.o))")
    assert order == sorted(order, reverse=True)

    page.locator(".units > a").filter(has_text="1").first.click()
    assert tab.path() == "models/mobilenet/layers/conv_dw_1/units/1.html"
    tab.settle()
    tab.shot("unit")
    page.keyboard.press("ArrowRight")
    page.wait_for_url("**/units/2.html")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url("**/units/1.html")

    page.locator(".exemplars a").first.click()
    assert "/images/" in tab.path()
    first_image = tab.path()
    tab.settle()
    tab.shot("image")
    _switch_cam_methods(page)
    page.fill("input.filter", "conv_preds")
    assert page.locator(".layer-row:visible h3 a").all_inner_texts() == ["conv_preds"]
    page.fill("input.filter", "")
    page.locator("body").click(position={"x": 5, "y": 5})  # leave the box: keys navigate
    if page.locator("a[rel=next]").count():
        page.keyboard.press("ArrowRight")
        page.wait_for_url(lambda url: url != tab.base + first_image)
        page.keyboard.press("ArrowLeft")
        page.wait_for_url(tab.base + first_image)

    page.click("nav.crumbs a:text('Predictions')")
    assert tab.path() == "models/mobilenet/predictions.html"
    rows = page.locator("table.predictions tbody tr")
    total = rows.count()
    page.select_option("select.class-filter", "Pug")
    assert 0 < page.locator("table.predictions tbody tr:visible").count() < total
    page.select_option("select.class-filter", "")
    tab.shot("predictions")

    for path, kind in (("models/mobilenet/accuracy.html", "accuracy"), ("dataset.html", "dataset")):
        tab.goto(path)
        tab.settle()
        tab.shot(kind)
    assert tab.errors == []
    tab.close()


def _switch_cam_methods(page) -> None:
    """Each CAM method button swaps every overlay map in place: the page does not reload."""
    page.evaluate("window.__same_page = true")
    maps = page.locator("img.map[data-cam-gradcam]")
    assert maps.count() > 0
    buttons = page.locator(".cam-switch button")
    assert buttons.all_inner_texts() == ["Grad-CAM", "Grad-CAM++", "LayerCAM", "Score-CAM"]
    assert "Faster Score-CAM" in page.inner_text("main")
    for method in ("gradcampp", "layercam", "scorecam", "gradcam"):
        page.click(f".cam-switch button[data-cam='{method}']")
        first = maps.first
        wanted = first.get_attribute(f"data-cam-{method}")
        assert first.evaluate("img => img.getAttribute('src')") == wanted
        assert page.locator(f"button[data-cam='{method}']").get_attribute("aria-pressed") == "true"
        page.wait_for_function(
            "() => { const i = document.querySelector('img.map[data-cam-gradcam]');"
            " return i.complete && i.naturalWidth > 0; }"
        )
    sources = {maps.first.get_attribute(f"data-cam-{m}") for m in ("gradcam", "scorecam")}
    assert len(sources) == 2  # different files, not one map under four names
    assert page.evaluate("window.__same_page === true")


def test_missing_page_gets_the_404_page(browser, server):
    tab = Watched(browser, server)
    response = tab.page.goto(server + "no/such/page.html")
    assert response.status == 404
    assert "not part of" in tab.page.content()
    tab.close()


def test_phone_layout_has_no_sideways_scroll(browser, server):
    tab = Watched(
        browser,
        server,
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        device_scale_factor=2,
    )
    for path in (
        "index.html",
        "models/mobilenet/index.html",
        "models/mobilenet/layers/conv_pw_13/index.html",
        "models/mobilenet/layers/conv_pw_13/units/0.html",
    ):
        tab.goto(path)
        overflow = tab.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"{path} scrolls sideways by {overflow}px on a phone"
    tab.goto("models/mobilenet/index.html")
    tab.shot("phone")
    assert tab.errors == []
    tab.close()


def test_site_works_from_file_urls(browser, tmp_path_factory):
    """No server: file:// pages load their style, script and pictures, and links work."""
    site = small_site(tmp_path_factory)
    context = browser.new_context()
    page = context.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda r: r.failure == "net::ERR_ABORTED" or failed.append(r.url))
    page.on("pageerror", lambda e: failed.append(str(e)))
    page.goto((site / "index.html").as_uri())
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != "rgba(0, 0, 0, 0)"
    page.click("a.model-card")
    assert page.url.endswith("/models/mobilenet/index.html")
    page.click(".layer-card[data-name='conv1']")
    page.wait_for_url("**/layers/conv1/index.html")
    page.keyboard.press("ArrowRight")
    page.wait_for_url("**/layers/conv_dw_1/index.html")
    assert failed == []
    context.close()


def test_search_box_finds_a_unit_a_photo_and_a_breed_from_file_urls(browser, tmp_path_factory):
    """The home page's search box, no server: the index loads only when the box is used."""
    site = small_site(tmp_path_factory)
    context = browser.new_context()
    page = context.new_page()
    failed: list[str] = []
    loaded: list[str] = []
    page.on("requestfailed", lambda r: r.failure == "net::ERR_ABORTED" or failed.append(r.url))
    page.on("pageerror", lambda e: failed.append(str(e)))
    page.on("request", lambda r: loaded.append(r.url))
    page.goto((site / "index.html").as_uri())
    assert not any(url.endswith("search-index.js") for url in loaded)
    first = "ol.search-results li:first-child a"

    page.fill("input.site-search", "conv_dw_1 unit 2")
    page.wait_for_selector(first)
    assert any(url.endswith("search-index.js") for url in loaded)
    assert page.get_attribute(first, "href") == "models/mobilenet/layers/conv_dw_1/units/2.html"

    page.fill("input.site-search", "pug_112")
    assert page.get_attribute(first, "href") == "models/mobilenet/images/pug_112.html"

    # a layer's activation atlas
    page.fill("input.site-search", "conv_pw_1 atlas")
    assert page.get_attribute(first, "href") == "models/mobilenet/atlas/conv_pw_1.html"

    # a breed: its photos and the units whose strongest photos show it
    page.fill("input.site-search", "Pug")
    links = page.locator("ol.search-results a").evaluate_all("els => els.map(e => e.href)")
    assert any(link.endswith("/models/mobilenet/images/pug_112.html") for link in links)
    units = page.locator("ol.search-results li", has_text="unit").all_inner_texts()
    assert units and all("Pug" in text for text in units)

    page.click(first)  # the links work from a page one level down too
    page.wait_for_load_state("load")
    page.fill("input.site-search", "conv1 unit 0")
    page.wait_for_selector(first)
    page.click(first)
    page.wait_for_url("**/models/mobilenet/layers/conv1/units/0.html")
    assert failed == []
    context.close()


def test_confusion_page_switches_layers(browser, tmp_path_factory):
    site = small_site(tmp_path_factory)
    [confusion] = sorted((site / "models" / "mobilenet" / "confusions").glob("*.html"))[:1]
    context = browser.new_context()
    page = context.new_page()
    page.goto(confusion.as_uri())
    rows = "section.confusion .confusion-row:visible"
    assert (
        page.locator(rows).evaluate_all("els => els.map(e => e.dataset.layer)")
        == ["conv_preds"] * page.locator("section.confusion").count()
    )
    page.select_option("select.layer-switch", "conv1")
    assert set(page.locator(rows).evaluate_all("els => els.map(e => e.dataset.layer)")) == {"conv1"}
    assert page.locator(f"{rows} img.map").count() == 2 * page.locator("section.confusion").count()
    context.close()


def _atlas_checks(page) -> None:
    """Zoom (button and wheel), hover a cell, filter by a class, move with the arrows."""
    scale = "() => new DOMMatrix(getComputedStyle(document.querySelector('.atlas-stage'))"
    scale += ".transform).a"
    assert page.evaluate(scale) == 1
    page.click("button[data-zoom='in']")
    zoomed = page.evaluate(scale)
    assert zoomed > 1
    box = page.locator(".atlas-viewport").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -400)
    page.wait_for_function(f"() => ({scale})() > {zoomed}")
    data = page.evaluate("JSON.parse(document.getElementById('atlas-data').textContent)")
    # a cell inside the zoomed view: the hit boxes moved and grew with the picture
    inside = page.evaluate(
        """() => { const f = document.querySelector('.atlas-viewport').getBoundingClientRect();
        return [...document.querySelectorAll('.cell')].map(c => [c, c.getBoundingClientRect()])
          .filter(([c, b]) => b.left > f.left && b.right < f.right && b.top > f.top
                  && b.bottom < f.bottom).map(([c]) => Number(c.dataset.i)); }"""
    )
    assert inside and len(inside) < len(data["cells"])
    index = inside[len(inside) // 2]
    page.hover(f".cell[data-i='{index}']")
    cell = data["cells"][index]
    assert page.inner_text(".atlas-panel .cell-label") == data["labels"][cell["l"]]
    assert page.inner_text(".atlas-panel .cell-vectors") == str(cell["n"])
    assert page.locator(".atlas-panel .patch .crop").count() == len(cell["p"])
    page.click("button[data-zoom='reset']")
    assert page.evaluate(scale) == 1

    values = page.locator("select.atlas-filter option").evaluate_all(
        "options => options.map(o => o.value).filter(Boolean)"
    )
    chosen = values[1]
    page.select_option("select.atlas-filter", chosen)
    wanted = sum(1 for c in data["cells"] if c["l"] == int(chosen))
    assert page.locator(".cell.match").count() == wanted > 0
    assert page.inner_text(".atlas-count").startswith(f"{wanted} of {len(data['cells'])} cells")
    page.select_option("select.atlas-filter", "")
    assert page.locator(".cell.match").count() == 0

    page.focus(".cell[data-i='0']")
    first = page.url
    page.keyboard.press("ArrowRight")  # to the next cell, not to the next page
    focused = page.evaluate("Number(document.activeElement.dataset.i)")
    assert focused != 0 and page.url == first
    cell = data["cells"][focused]
    assert page.inner_text(".atlas-panel .cell-label") == data["labels"][cell["l"]]


def test_atlas_page_zooms_hovers_and_filters(browser, tmp_path_factory):
    """The activation atlas page over HTTP (desktop and phone) and from file://, on the
    small site with a synthetic atlas entry (tests/test_atlas_page.atlas_site)."""
    from test_atlas_page import PAGE, atlas_site

    from atlas.site.serve import make_server

    site, _, _ = atlas_site(tmp_path_factory)
    httpd = make_server(site, "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    try:
        tab = Watched(browser, base, viewport={"width": 1280, "height": 900})
        tab.goto(PAGE)
        tab.settle()
        _atlas_checks(tab.page)
        tab.page.hover(".cell[data-i='40']")
        tab.page.wait_for_load_state("networkidle")  # the patches' photos
        tab.shot("atlas")
        assert tab.errors == []
        tab.close()

        phone = Watched(
            browser,
            base,
            viewport={"width": 390, "height": 844},
            is_mobile=True,
            has_touch=True,
            device_scale_factor=2,
        )
        phone.goto(PAGE)
        overflow = phone.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"the atlas page scrolls sideways by {overflow}px on a phone"
        phone.page.tap(".cell[data-i='40']")
        assert phone.page.locator(".atlas-panel .cell-label").count() == 1
        phone.shot("atlas-phone", full_page=True)
        assert phone.errors == []
        phone.close()
    finally:
        httpd.shutdown()
        httpd.server_close()

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda r: r.failure == "net::ERR_ABORTED" or failed.append(r.url))
    page.on("pageerror", lambda e: failed.append(str(e)))
    page.on("console", lambda m: m.type == "error" and failed.append(m.text))
    page.goto((site / PAGE).as_uri())
    _atlas_checks(page)
    assert failed == []
    context.close()
