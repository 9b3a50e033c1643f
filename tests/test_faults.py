"""Faults during a build: interruptions and kill -9 at chosen moments, two builds at once, a
read-only folder, a full disk, a broken template. After each: a clear one-line error, the
previous site intact, and a cache that the next build trusts.

Full and read-only disks are real small tmpfs mounts where this process may mount (root in
a container); elsewhere the same failures are injected by wrapping ``open``/``os.mkdir``.
"""

from __future__ import annotations

import builtins
import errno
import fcntl
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sitecheck import assets, edit_config, files_of

import atlas.cache.store
from atlas.build import BuildOptions, build
from atlas.cache.store import Cache
from atlas.cli import main

pytestmark = pytest.mark.slow

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
OPTIONS = BuildOptions(progress=False, max_steps=2)


def atlas_build(config: Path, *extra: str) -> int:
    return main(["build", "-c", str(config), "--no-progress", "--max-steps", "2", *extra])


def assert_cache_trusted(cache: Path, caplog) -> None:
    """No half-written entry is left and every entry reads back whole (no warning)."""
    assert not list(cache.glob("*/.tmp-*"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="atlas.cache.store"):
        reader = Cache(cache)
        assert all(reader.get(key) is not None for key in reader.keys())
    assert not [r for r in caplog.records if "damaged" in r.getMessage()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, project_factory):
    """A built tiny project: (config path, its site files)."""
    config = project_factory(tmp_path_factory.mktemp("faults"), images=3, units_per_layer=1)
    report = build(config, OPTIONS)
    return config, files_of(report.output)


@pytest.fixture
def project(reference, tmp_path) -> Path:
    """A private copy of the built project; returns its config path."""
    shutil.copytree(reference[0].parent, tmp_path / "project")
    return tmp_path / "project" / "site_config.yaml"


def cold(config: Path) -> None:
    """Drop the project's cache (its previous site stays)."""
    shutil.rmtree(config.parent / ".atlas-cache")


# -- Ctrl-C at chosen moments ---------------------------------------------------------------


@pytest.mark.parametrize("at_write", [1, 4, 9, 30, 60])
def test_ctrl_c_at_any_cache_write_keeps_the_site_and_a_trusted_cache(
    reference, project, monkeypatch, capsys, caplog, at_write
):
    cold(project)
    site = project.parent / "_site"
    writes = {"n": 0}
    original = atlas.cache.store._write_synced

    def interrupted(path, data):
        writes["n"] += 1
        if writes["n"] == at_write:
            original(path, data[: len(data) // 2])  # half a file, as a real interrupt may
            raise KeyboardInterrupt
        original(path, data)

    monkeypatch.setattr(atlas.cache.store, "_write_synced", interrupted)
    assert atlas_build(project) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert files_of(site) == reference[1]
    assert_cache_trusted(project.parent / ".atlas-cache", caplog)
    monkeypatch.undo()
    assert atlas_build(project) == 0
    assert assets(files_of(site)) == assets(reference[1])
    assert not list(project.parent.glob("._site.*"))


def test_ctrl_c_between_the_two_renames_of_the_fallback_swap_keeps_the_site(
    reference, project, monkeypatch, capsys
):
    """Where folders cannot be exchanged atomically, the swap is two renames: an interrupt
    between them puts the previous site back."""
    import atlas.site.writer

    edit_config(project, lambda d: d["site"].update(title="new title"))
    real_rename = os.rename

    def rename(source, target):
        if ".tmp-" in str(source) and Path(target).name == "_site":
            raise KeyboardInterrupt
        real_rename(source, target)

    monkeypatch.setattr(atlas.site.writer, "_exchange", lambda first, second: False)
    monkeypatch.setattr(os, "rename", rename)
    assert atlas_build(project) == 130
    monkeypatch.undo()
    assert files_of(project.parent / "_site") == reference[1]


def test_a_kill_between_the_two_renames_is_repaired_by_the_next_build(tmp_path):
    """The state a kill -9 between the renames leaves: no output, the old site aside."""
    from atlas.site.writer import clean_stale

    output = tmp_path / "_site"
    aside = tmp_path / "._site.old-0123456789ab"
    aside.mkdir()
    (aside / "index.html").write_text("previous")
    (tmp_path / "._site.tmp-0123456789ab").mkdir()
    clean_stale(output)
    assert (output / "index.html").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_site"]


def test_the_swap_exchanges_atomically_where_it_can(tmp_path):
    from atlas.site.writer import _exchange

    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "x").write_text("a")
    (second / "x").write_text("b")
    if not _exchange(first, second):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    assert (first / "x").read_text() == "b" and (second / "x").read_text() == "a"


# -- kill -9 at chosen moments ------------------------------------------------------------

KILLER = """
import os, signal, sys
import atlas.cache.store, atlas.site.writer
where, at = sys.argv[2], int(sys.argv[3])
calls = [0]
def killing(original):
    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    return wrapped
if where == "cache":
    atlas.cache.store._write_synced = killing(atlas.cache.store._write_synced)
else:
    atlas.site.writer.publish_files = killing(atlas.site.writer.publish_files)
from atlas.cli import main
sys.exit(main(["build", "-c", sys.argv[1], "--no-progress", "--max-steps", "2"]))
"""


@pytest.mark.parametrize(("where", "at"), [("cache", 25), ("site", 1)])
def test_kill_9_leaves_the_site_and_a_cache_the_next_build_trusts(
    reference, project, caplog, where, at
):
    cold(project)
    site = project.parent / "_site"
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(project), where, str(at)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert files_of(site) == reference[1]
    cache = project.parent / ".atlas-cache"
    entries = len(Cache(cache).keys())
    assert entries > 0
    caplog.set_level(logging.WARNING)
    report = build(project, OPTIONS)  # removes what the kill left half-written
    assert sum(report.reused.values()) >= entries - 1  # the scan memo is not an entry
    assert not [r for r in caplog.records if "damaged" in r.getMessage()]
    assert_cache_trusted(cache, caplog)
    assert assets(files_of(site)) == assets(reference[1])
    assert not list(project.parent.glob("._site.*"))


# -- two builds at once -------------------------------------------------------------------


def lock_is_held(cache: Path) -> bool:
    try:
        with open(cache / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True


def test_two_builds_at_once_the_second_stops_or_waits(reference, project, capsys, caplog):
    cold(project)
    cache = project.parent / ".atlas-cache"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "atlas",
            "build",
            "-c",
            str(project),
            "--no-progress",
            "--max-steps",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 120
        while not lock_is_held(cache):
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the first build never took the lock"
            time.sleep(0.02)
        assert atlas_build(project) == 1
        err = capsys.readouterr().err
        assert "in use by another atlas build" in err and "--wait" in err
        assert "Traceback" not in err
        assert atlas_build(project, "--wait", "240") == 0  # waits, then reuses its work
        out, err = first.communicate(timeout=240)
    finally:
        first.kill()
    assert first.returncode == 0, err[-2000:]
    assert "rendered: nothing" in capsys.readouterr().out
    assert_cache_trusted(cache, caplog)


# -- read-only folders and full disks -------------------------------------------------------


def _can_mount() -> bool:
    # ATLAS_TEST_NO_MOUNT=1 runs the injected variant where mounting would work.
    if os.environ.get("ATLAS_TEST_NO_MOUNT") or not sys.platform.startswith("linux"):
        return False
    return os.geteuid() == 0 and shutil.which("mount") is not None


@contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path | None]:
    """A tmpfs of ``size`` at ``folder``; None where mounting is not permitted."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = (
        _can_mount()
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield folder if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def remount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True)


def fill(folder: Path, leave: int) -> None:
    """Fill a file system until only about ``leave`` bytes are free."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    with open(folder / f"filler-{uuid.uuid4().hex}", "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))


def inject(monkeypatch, folder: Path, code: int, after: int = 0) -> None:
    """Without a mount: writes and new folders under ``folder`` fail with ``code`` after
    ``after`` successful ones."""
    folder = str(folder.resolve())
    count = {"n": 0}
    real_open, real_mkdir = builtins.open, os.mkdir

    def hit(path) -> bool:
        if not str(os.path.abspath(os.fspath(path))).startswith(folder):
            return False
        count["n"] += 1
        return count["n"] > after

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, str | os.PathLike) and set(mode) & set("wax+") and hit(file):
            raise OSError(code, os.strerror(code), os.fspath(file))
        return real_open(file, mode, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if hit(path):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def use_cache(config: Path, folder: Path) -> None:
    edit_config(config, lambda d: d.update(cache=str(folder / "cache")))


def use_output(config: Path, folder: Path) -> None:
    edit_config(config, lambda d: d["site"].update(output=str(folder / "site")))


def test_read_only_cache_is_a_clear_error_and_the_site_survives(
    reference, project, tmp_path, monkeypatch, capsys
):
    site = project.parent / "_site"
    with tmpfs(tmp_path / "ro", "4m") as mounted:
        folder = tmp_path / "ro"
        use_cache(project, folder)
        if mounted:
            shutil.copytree(project.parent / ".atlas-cache", folder / "cache")  # warm
            remount(folder, "ro")
        else:
            inject(monkeypatch, folder, errno.EROFS)
        edit_config(project, lambda d: d["site"].update(title="changed"))
        assert atlas_build(project) == 1
    err = capsys.readouterr().err
    assert "cannot write to the cache folder" in err and "Read-only file system" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert files_of(site) == reference[1]


def test_read_only_output_folder_is_a_clear_error_and_the_site_survives(
    reference, project, tmp_path, monkeypatch, capsys
):
    with tmpfs(tmp_path / "ro", "4m") as mounted:
        folder = tmp_path / "ro"
        use_output(project, folder)
        assert atlas_build(project) == 0
        before = files_of(folder / "site")
        if mounted:
            remount(folder, "ro")
        else:
            inject(monkeypatch, folder, errno.EROFS)
        edit_config(project, lambda d: d["site"].update(title="changed"))
        assert atlas_build(project) == 1
        err = capsys.readouterr().err
        assert f"cannot write the site next to {folder / 'site'}" in err, err
        assert "Read-only file system" in err and "Traceback" not in err
        monkeypatch.undo()
        assert files_of(folder / "site") == before


@pytest.mark.parametrize("leave", [20_000, 120_000])
def test_full_disk_under_the_cache_is_a_clear_error_and_resumes(
    reference, project, tmp_path, monkeypatch, capsys, caplog, leave
):
    site = project.parent / "_site"
    folder = tmp_path / "small"
    with tmpfs(folder, "2m") as mounted:
        use_cache(project, folder)
        if mounted:
            fill(folder, leave)
        else:
            inject(monkeypatch, folder, errno.ENOSPC, after=leave // 4000)
        edit_config(project, lambda d: d["site"].update(title="changed"))
        assert atlas_build(project) == 1
        err = capsys.readouterr().err
        assert "is full" in err and "Traceback" not in err, err
        assert files_of(site) == reference[1]
        monkeypatch.undo()
        assert_cache_trusted(folder / "cache", caplog)
        for filler in folder.glob("filler-*"):
            filler.unlink()
        assert atlas_build(project) == 0
    assert assets(files_of(site)) == assets(reference[1])


@pytest.mark.parametrize("leave", [8_000, 60_000])
def test_full_disk_under_the_output_is_a_clear_error_and_the_site_survives(
    reference, project, tmp_path, monkeypatch, capsys, leave
):
    folder = tmp_path / "small"
    with tmpfs(folder, "2m") as mounted:
        use_output(project, folder)
        assert atlas_build(project) == 0
        before = files_of(folder / "site")
        if mounted:
            fill(folder, leave)
        else:
            inject(monkeypatch, folder, errno.ENOSPC, after=leave // 4000)
        edit_config(project, lambda d: d["site"].update(title="changed"))
        assert atlas_build(project) == 1
        err = capsys.readouterr().err
        assert "the disk is full" in err and "previous site is untouched" in err, err
        assert "Traceback" not in err
        monkeypatch.undo()
        assert files_of(folder / "site") == before
        assert not list(folder.glob(".site.*"))


# -- a broken user template -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "code", "fragment"),
    [
        (
            "{% extends 'base.html' %}{% block main %}{{ c.no_such_field }}{% endblock %}",
            1,
            "layer.html, line 1: ",
        ),
        (  # a syntax error is found before rendering, as a config problem
            "{% extends 'base.html' %}\n{% block main %}{% if %}{% endblock %}",
            2,
            "site.templates (line ",  # then "layer.html, line 2: "
        ),
    ],
    ids=["undefined", "syntax"],
)
def test_broken_user_template_is_one_line(reference, project, capsys, template, code, fragment):
    templates = project.parent / "my_templates"
    templates.mkdir()
    (templates / "layer.html").write_text(template)
    edit_config(project, lambda d: d["site"].update(templates="my_templates"))
    assert atlas_build(project) == code
    err = capsys.readouterr().err
    prefix = "error: template " if code == 1 else "error: "
    assert err.startswith(prefix) and fragment in err, err
    assert code == 1 or "layer.html, line 2: " in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert files_of(project.parent / "_site") == reference[1]
    assert not list(project.parent.glob("._site.*"))
