"""``atlas serve --watch``: a real server on 127.0.0.1 that rebuilds when the config, notes or
templates change and tells open pages to reload (every wait is bounded)."""

from __future__ import annotations

import http.client
import json
import logging
import shutil
import time
from pathlib import Path

import pytest
from sitecheck import edit_config

from atlas.build import BuildOptions
from atlas.project import resources
from atlas.site.serve import VERSION_PATH
from atlas.watch import LiveSite

pytestmark = pytest.mark.slow

MARK = "<p>an edited template</p>"


def get(site: LiveSite, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection(*site.server.server_address[:2], timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def version(site: LiveSite) -> int:
    status, body = get(site, VERSION_PATH)
    assert status == 200
    return json.loads(body)["version"]


def wait_for_version(site: LiveSite, wanted: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while version(site) < wanted:
        assert time.monotonic() < deadline, f"no rebuild within {timeout} s"
        time.sleep(0.1)
    assert version(site) == wanted


@pytest.fixture
def live(tmp_path, project_factory):
    config = project_factory(tmp_path / "project", images=1, units_per_layer=1)
    notes = config.parent / "notes.md"
    notes.write_text("first words")
    templates = config.parent / "my_templates"
    templates.mkdir()

    def use_notes_and_templates(data):
        data["site"]["notes"] = "notes.md"
        data["site"]["templates"] = "my_templates"

    edit_config(config, use_notes_and_templates)
    site = LiveSite(config, "127.0.0.1", 0, BuildOptions(progress=False, max_steps=1), interval=0.1)
    site.start()
    yield site
    site.stop()


def test_pages_reload_after_changes_to_notes_templates_and_config(live, caplog):
    assert live.server.server_address[0] == "127.0.0.1"
    status, page = get(live, "/")
    assert status == 200 and "first words" in page
    assert VERSION_PATH in page and "var seen = 0;" in page  # the polling script
    assert version(live) == 0
    project = live.config_path.parent

    (project / "notes.md").write_text("second words")
    wait_for_version(live, 1)
    page = get(live, "/index.html")[1]
    assert "second words" in page and "var seen = 1;" in page

    index = (resources.templates() / "index.html").read_text()
    assert "{% block main %}" in index
    (project / "my_templates" / "index.html").write_text(
        index.replace("{% block main %}", "{% block main %}" + MARK, 1)
    )
    wait_for_version(live, 2)
    assert MARK in get(live, "/")[1]

    edit_config(live.config_path, lambda data: data["site"].update(title="A new title"))
    wait_for_version(live, 3)
    assert "A new title" in get(live, "/")[1]

    with caplog.at_level(logging.ERROR, logger="atlas.watch"):
        live.config_path.write_text(live.config_path.read_text() + "\nsite: [\n")
        deadline = time.monotonic() + 60
        while "rebuild failed" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)
    assert "rebuild failed (the previous site is still served)" in caplog.text
    assert version(live) == 3 and "A new title" in get(live, "/")[1]


def test_other_files_are_served_as_they_are(live):
    status, css = get(live, "/static/atlas.css")
    assert status == 200 and VERSION_PATH not in css
    assert css == (resources.templates() / "static" / "atlas.css").read_text()
    assert get(live, "/no-such-page.html")[0] == 404


@pytest.mark.browser
def test_an_open_page_reloads_itself(live):
    """The injected script, run by a real browser, reloads the page after a rebuild."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        chromium = Path(shutil.which("chromium") or "/nonexistent")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.goto(live.url)
            assert "first words" in page.content()
            (live.config_path.parent / "notes.md").write_text("words the browser sees")
            page.wait_for_function(
                "document.body.innerText.includes('words the browser sees')", timeout=90_000
            )
        finally:
            browser.close()
