"""Nothing of the user's is deleted or overwritten: the site and cache folders atlas writes.

Every command that reads a config refuses a ``site.output`` or ``cache`` that is the
project folder, a folder above it, the home folder, ``/`` or an unmarked folder with files
in it: one line naming the key and the folder, exit 2, and every user file left as it was.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import DATA, PETS

from atlas.cache.store import Cache
from atlas.cli import main
from atlas.config.load import load_config
from atlas.errors import ConfigError
from atlas.project.folders import CACHE_MARKER, SITE_MARKER, clean_cache

KEYS = ("site.output", "cache")
TARGETS = {"project": ".", "parent": "..", "home": "~", "unmarked": "stuff"}
COMMANDS = (
    ("build", "--no-progress"),
    ("clean",),
    ("clean", "--site"),
    ("clean", "--cache"),
    ("serve", "--port", "0"),
)


def write_config(project: Path, **changes) -> Path:
    """A valid config (no model is loaded before the folders are checked)."""
    images = project / "images"
    images.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sorted(PETS.glob("*.jpg"))[0], images / "cat.jpg")
    config = {
        "site": {"output": "_site"},
        "cache": ".atlas-cache",
        "dataset": {
            "images": "images",
            "class_index": str(DATA / "imagenet_class_index.json"),
            "breeds": str(DATA / "breeds.json"),
        },
        "models": [{"id": "m", "application": "MobileNet", "weights": "none"}],
    }
    for key, value in changes.items():
        if key == "output":
            config["site"]["output"] = value
        else:
            config[key] = value
    path = project / "site_config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A home folder with the user's files: home/diary.txt, home/work/thesis.tex, the
    project home/work/proj (mine.txt) and an unmarked folder proj/stuff (notes.txt)."""
    home = tmp_path / "home"
    project = home / "work" / "proj"
    (project / "stuff").mkdir(parents=True)
    for path in (
        home / "diary.txt",
        home / "work" / "thesis.tex",
        project / "mine.txt",
        project / "stuff" / "notes.txt",
    ):
        path.write_text(f"the user's own {path.name}")
    monkeypatch.setenv("HOME", str(home))
    return home


def user_files(home: Path) -> dict[str, str]:
    return {
        p.relative_to(home).as_posix(): p.read_text()
        for p in home.rglob("*")
        if p.is_file() and p.suffix in (".txt", ".tex")
    }


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("key", KEYS)
def test_a_users_folder_is_refused_by_every_command(home, capsys, key, target, command):
    project = home / "work" / "proj"
    config = write_config(
        project, **{"output" if key == "site.output" else "cache": TARGETS[target]}
    )
    before = user_files(home)
    code = main([command[0], "-c", str(config), *command[1:]])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    folder = {
        "project": project,
        "parent": project.parent,
        "home": home,
        "unmarked": project / "stuff",
    }[target]
    assert f"{key} (line" in err
    assert f"({folder}) as {key}" in err or f" {folder} as {key}" in err
    assert user_files(home) == before
    assert not (project / "_site").exists() and not (project / ".atlas-cache").exists()


@pytest.mark.parametrize("key", KEYS)
def test_the_file_system_root_is_refused(tmp_path, key):
    config = write_config(tmp_path, **{"output" if key == "site.output" else "cache": "/"})
    with pytest.raises(
        ConfigError,
        match=rf"{key} \(line \d+\): refusing to use the "
        r"file-system root \(/\)",
    ):
        load_config(config)


@pytest.mark.parametrize("key", KEYS)
def test_an_atlas_path_is_refused_where_atlas_writes(tmp_path, key):
    config = write_config(tmp_path, **{"output" if key == "site.output" else "cache": "atlas:data"})
    with pytest.raises(ConfigError, match="atlas: paths name atlas's own read-only files"):
        load_config(config)


def test_output_inside_the_cache_is_refused(tmp_path):
    config = write_config(tmp_path, output=".atlas-cache/site")
    with pytest.raises(ConfigError, match="must not be inside the cache folder"):
        load_config(config)


@pytest.mark.parametrize("key", KEYS)
def test_an_empty_or_missing_folder_is_accepted(tmp_path, key):
    (tmp_path / "empty").mkdir()
    for value in ("empty", "new/folder"):
        config = write_config(tmp_path, **{"output" if key == "site.output" else "cache": value})
        load_config(config)


def test_the_cache_is_marked_when_atlas_makes_it(tmp_path):
    cache = Cache(tmp_path / "cache")
    cache.lock()
    cache.put("ab" * 32, {"n": 1}, {"a.txt": b"x"})
    cache.unlock()
    tag = (tmp_path / "cache" / CACHE_MARKER).read_text()
    assert tag.startswith("Signature: 8a477f597d28d172789f06886806bc55\n")
    load_config(write_config(tmp_path, cache="cache"))  # accepted: it is atlas's


def filled_cache(root: Path) -> Cache:
    cache = Cache(root)
    cache.lock()
    for byte in ("ab", "cd"):
        cache.put(byte * 32, {"n": 1}, {"a.txt": b"x"})
    (root / "ab" / ".tmp-0123").mkdir()
    cache.unlock()
    return cache


def test_clean_removes_atlas_entries_and_keeps_a_users_file_in_the_cache(tmp_path, capsys):
    config = write_config(tmp_path)
    cache_folder = tmp_path / ".atlas-cache"
    filled_cache(cache_folder)
    (cache_folder / "ab" / "mine.txt").write_text("mine")
    (cache_folder / "todo.md").write_text("mine too")
    os.symlink(tmp_path / "images", cache_folder / "cd" / ("ef" * 32))  # not an entry
    assert main(["clean", "-c", str(config), "--cache"]) == 0
    assert "kept 3 file(s) atlas did not write" in capsys.readouterr().out
    left = sorted(p.relative_to(cache_folder).as_posix() for p in cache_folder.rglob("*"))
    assert left == sorted(["ab", "ab/mine.txt", CACHE_MARKER, "cd", "cd/" + "ef" * 32, "todo.md"])
    assert (tmp_path / "images" / "cat.jpg").is_file()  # a symlink is never followed


def test_clean_removes_a_cache_made_before_caches_were_marked(tmp_path, capsys):
    config = write_config(tmp_path)
    cache_folder = tmp_path / ".atlas-cache"
    filled_cache(cache_folder)
    (cache_folder / CACHE_MARKER).unlink()
    (cache_folder / "checked.json").write_text("{}")
    assert main(["clean", "-c", str(config), "--cache"]) == 0
    assert not cache_folder.exists()
    assert f"removed {cache_folder}" in capsys.readouterr().out


def test_clean_cache_returns_what_it_kept(tmp_path):
    filled_cache(tmp_path / "c")
    (tmp_path / "c" / "zz").mkdir()  # not a shard name
    assert clean_cache(tmp_path / "c") == [tmp_path / "c" / "zz"]
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [CACHE_MARKER, "zz"]


def test_a_marked_site_is_removed_whole(tmp_path, capsys):
    config = write_config(tmp_path)
    site = tmp_path / "_site"
    (site / "sub").mkdir(parents=True)
    (site / SITE_MARKER).write_text("")
    (site / "sub" / "page.html").write_text("<p>")
    assert main(["clean", "-c", str(config), "--site"]) == 0
    assert not site.exists()


@pytest.mark.slow
def test_clean_removes_everything_a_real_build_wrote(tmp_path, project_factory, capsys):
    """Every file a build, a sharded build and a plan leave in the cache is recognised as
    atlas's (a new kind of cache file must be added to folders.CACHE_FILES)."""
    config = project_factory(tmp_path / "project", images=1, units_per_layer=1)
    build = ["build", "-c", str(config), "--no-progress", "--max-steps", "1"]
    assert main([*build, "--shard", "1/2"]) == 0
    cache = config.parent / ".atlas-cache"
    assert list((cache / "shards").glob("*.json"))  # the recorded split
    assert main(build) == 0
    assert main(["plan", "-c", str(config)]) == 0
    assert (cache / CACHE_MARKER).is_file() and len(list(cache.rglob("*"))) > 10
    capsys.readouterr()
    assert main(["clean", "-c", str(config)]) == 0
    assert f"removed {cache}\n" in capsys.readouterr().out
    assert not cache.exists() and not (config.parent / "_site").exists()
