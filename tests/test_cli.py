"""The ``atlas`` command: exit codes, messages, clean, serve."""

from __future__ import annotations

import http.client
import threading

import pytest
import yaml

from atlas.cli import main
from atlas.errors import AtlasError, ConfigError
from atlas.site.serve import make_server


def atlas(*argv: str) -> int:
    return main(list(argv))


@pytest.fixture(scope="module")
def built(tmp_path_factory, project_factory):
    """A tiny project built through the CLI: (config path, exit code)."""
    config = project_factory(tmp_path_factory.mktemp("cli"), images=2, units_per_layer=1)
    return config, atlas("build", "-c", str(config), "--no-progress", "--max-steps", "1")


@pytest.mark.slow
def test_build_succeeds_with_exit_code_0(built, capsys):
    config, code = built
    assert code == 0
    assert (config.parent / "_site" / "index.html").is_file()
    assert (config.parent / "_site" / ".atlas-site").is_file()


def test_bad_config_exits_2_naming_the_key(small_config, capsys):
    config = small_config(render={"top_k": "five"})
    assert atlas("build", "-c", str(config), "--no-progress") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "render.top_k (line" in err
    assert "expected an integer" in err and "Traceback" not in err


def test_missing_config_exits_2(tmp_path, capsys):
    assert atlas("build", "-c", str(tmp_path / "nope.yaml")) == 2
    assert "config file not found" in capsys.readouterr().err


def test_unknown_option_exits_2(capsys):
    assert atlas("build", "--frobnicate") == 2
    assert "unrecognized arguments: --frobnicate" in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(capsys):
    assert atlas() == 2
    assert "build" in capsys.readouterr().out


def test_damaged_model_file_exits_1(small_config, capsys):
    config = small_config()
    model = config.parent / "tiny.keras"
    model.write_bytes(model.read_bytes()[:200])
    assert atlas("build", "-c", str(config), "--no-progress", "--max-steps", "1") == 1
    err = capsys.readouterr().err
    assert "error: model 'tiny'" in err and "tiny.keras" in err and "Traceback" not in err
    assert not (config.parent / "_site").exists()


def test_debug_lets_the_traceback_through(small_config):
    config = small_config(render={"top_k": 0})
    with pytest.raises(ConfigError, match="render.top_k"):
        atlas("--debug", "build", "-c", str(config), "--no-progress")


def test_locked_cache_exits_1(small_config, capsys):
    from atlas.cache.store import Cache

    config = small_config()
    holder = Cache(config.parent / ".atlas-cache")
    holder.lock()
    try:
        assert atlas("build", "-c", str(config), "--no-progress") == 1
    finally:
        holder.unlock()
    assert "in use by another atlas build" in capsys.readouterr().err


def test_clean_removes_site_then_cache(small_config, capsys):
    config = small_config()
    site, cache = config.parent / "_site", config.parent / ".atlas-cache"
    site.mkdir()
    (site / ".atlas-site").write_text("")
    (site / "index.html").write_text("<p>old</p>")
    (cache / "ab").mkdir(parents=True)
    (cache / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    assert atlas("clean", "-c", str(config), "--site") == 0
    assert not site.exists() and cache.exists()
    assert atlas("clean", "-c", str(config)) == 0
    assert not cache.exists()
    assert f"removed {cache}" in capsys.readouterr().out
    assert atlas("clean", "-c", str(config)) == 0  # nothing left: still fine


def test_clean_refuses_a_folder_atlas_did_not_make(small_config, capsys):
    config = small_config()
    site = config.parent / "_site"
    site.mkdir()
    (site / "thesis.tex").write_text("years of work")
    assert atlas("clean", "-c", str(config), "--site") == 2
    assert "refusing to use" in capsys.readouterr().err
    assert (site / "thesis.tex").exists()


@pytest.fixture
def server(built):
    config, code = built
    assert code == 0
    httpd = make_server(config.parent / "_site", "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def get(server, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.slow
def test_serve_gives_pages_and_never_files_outside_the_site(server, built):
    site = built[0].parent / "_site"
    status, body = get(server, "/")
    assert status == 200 and body == (site / "index.html").read_bytes()
    status, body = get(server, "/static/atlas.css")
    assert status == 200 and body == (site / "static" / "atlas.css").read_bytes()
    not_found = (site / "404.html").read_bytes()
    for path in (
        "/../../etc/passwd",
        "/..%2f..%2fetc%2fpasswd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/../site_config.yaml",
        "/no/such/page.html",
    ):
        status, body = get(server, path)
        assert status == 404, path
        assert body == not_found, path
        assert b"root:" not in body


def test_serve_without_a_site_is_an_error(tmp_path):
    with pytest.raises(AtlasError, match="run `atlas build` first"):
        make_server(tmp_path, "127.0.0.1", 0)


def test_serve_command_reads_the_output_from_the_config(small_config, capsys):
    config = small_config()
    data = yaml.safe_load(config.read_text())
    assert data["site"]["output"] == "_site"
    assert atlas("serve", "-c", str(config), "--port", "0") == 1  # nothing built yet
    assert "run `atlas build` first" in capsys.readouterr().err
