"""The real ``atlas`` process on everything a user can get wrong: one line, the documented exit
code, no traceback; ``--debug`` shows the traceback.

tests/test_robustness.py tables every config and model error in-process; this table runs
``python -m atlas`` in a subprocess, one row per kind of fault (so a traceback printed from
anywhere, even outside ``main``, is caught), and adds what needs a process of its own: a
broken installation, a held lock, a full disk and Ctrl-C.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MOBILENET_WEIGHTS
from sitecheck import edit_config
from test_faults import fill, tmpfs

from atlas.cache.store import Cache

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# TensorFlow's C++ start-up lines (absl), which TF_CPP_MIN_LOG_LEVEL cannot silence.
NOISE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")


def run_atlas(cwd: Path, *argv: str, pythonpath: Path = REPO, **popen) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(pythonpath),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "atlas", *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def finish(process: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def assert_one_line(err: str, fragment: str) -> None:
    """One line says what went wrong; besides it only progress logs ("loading model"),
    warnings about the config, argparse's usage line and TensorFlow's start-up noise."""
    lines = [line for line in err.splitlines() if line.strip() and not NOISE.match(line)]
    errors = [line for line in lines if "error: " in line]
    assert len(errors) == 1 and fragment in errors[0], err
    assert all(
        line in errors or line.startswith(("loading model", "warning: ", "usage: "))
        for line in lines
    )
    assert "Traceback" not in err


BUILD = ("build", "--no-progress", "--max-steps", "1")


def set_site(**values) -> Callable[[Path], tuple[str, ...]]:
    def change(config: Path) -> tuple[str, ...]:
        edit_config(config, lambda data: data["site"].update(values))
        return BUILD

    return change


def wrong_weights(config: Path) -> tuple[str, ...]:
    model = {
        "id": "m",
        "application": "MobileNet",
        "weights": str(MOBILENET_WEIGHTS),
        "options": {"alpha": 0.5, "input_shape": [128, 128, 3]},
    }
    edit_config(config, lambda data: data.update(models=[model]))
    return BUILD


def corrupt_model(config: Path) -> tuple[str, ...]:
    model = config.parent / "tiny.keras"
    model.write_bytes(model.read_bytes()[:300])
    return BUILD


def users_file_as(key: str) -> Callable[[Path], tuple[str, ...]]:
    def change(config: Path) -> tuple[str, ...]:
        (config.parent / "mine").mkdir()
        (config.parent / "mine" / "thesis.tex").write_text("years of work")
        if key == "cache":
            edit_config(config, lambda data: data.update(cache="mine"))
        else:
            edit_config(config, lambda data: data["site"].update(output="mine"))
        return ("clean",)

    return change


# (id, make the fault and return the arguments, exit code, fragment of the one line, TF?)
ROWS = [
    ("missing config", lambda c: ("build", "-c", "missing.yaml"), 2, "config file not found"),
    ("invalid YAML", lambda c: c.write_text("site: [\n") and BUILD, 2, "invalid YAML"),
    ("unknown key", set_site(titel="x"), 2, "did you mean 'title'"),
    (
        "missing model file",
        lambda c: (c.parent / "tiny.keras").unlink() or BUILD,
        2,
        "models[0].file",
    ),
    ("missing templates folder", set_site(templates="nowhere"), 2, "site.templates"),
    ("the cache is a user's folder", users_file_as("cache"), 2, "as cache"),
    ("the output is a user's folder", users_file_as("output"), 2, "as site.output"),
    ("bad port", lambda c: ("serve", "--port", "70000"), 2, "expected a port number"),
    ("new into a file", lambda c: ("new", "site_config.yaml"), 2, "is not a folder"),
    ("corrupt model file", corrupt_model, 1, "model 'tiny'"),
    ("wrong weights", wrong_weights, 1, "model 'm'"),
    ("unwritable output", set_site(output="/sys/atlas-test-site"), 1, "cannot write the site"),
]
TF_ROWS = {"corrupt model file", "wrong weights", "unwritable output"}
# --debug re-raises what atlas caught; one row loading TensorFlow is enough, and a usage
# error (argparse's) has no traceback to show.
DEBUG_ROWS = [r for r in ROWS if r[0] not in TF_ROWS | {"bad port"}] + [
    r for r in ROWS if r[0] == "corrupt model file"
]


@pytest.fixture
def project(tmp_path, project_factory) -> Path:
    return project_factory(tmp_path / "project", images=1, units_per_layer=1)


@pytest.mark.parametrize(
    ("change", "code", "fragment"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_a_fault_is_one_line_and_its_exit_code(project, change, code, fragment):
    argv = change(project)
    result, out, err = finish(run_atlas(project.parent, *argv))
    assert result == code, err
    assert_one_line(err, fragment)
    assert (project.parent / "mine" / "thesis.tex").exists() or not (
        project.parent / "mine"
    ).exists()


@pytest.mark.parametrize(
    ("change", "code"),
    [r[1:3] for r in DEBUG_ROWS],
    ids=[r[0] for r in DEBUG_ROWS],
)
def test_debug_shows_the_traceback(project, change, code):
    argv = change(project)
    result, out, err = finish(run_atlas(project.parent, "--debug", *argv))
    assert result != 0
    assert "Traceback (most recent call last)" in err, err


def test_a_broken_installation_without_templates(project, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(REPO / "atlas", broken / "atlas", ignore=shutil.ignore_patterns("__pycache__"))
    result, out, err = finish(run_atlas(project.parent, *BUILD, pythonpath=broken))
    assert result == 1
    assert_one_line(err, "atlas's templates are missing")
    assert (
        not (project.parent / ".atlas-cache").exists()
        or not Cache(project.parent / ".atlas-cache").keys()
    )


def test_a_held_lock(project):
    holder = Cache(project.parent / ".atlas-cache")
    holder.lock()
    try:
        result, out, err = finish(run_atlas(project.parent, *BUILD))
    finally:
        holder.unlock()
    assert result == 1
    assert_one_line(err, "in use by another atlas build")


def test_a_full_output_disk(project, tmp_path):
    with tmpfs(tmp_path / "small", "64k") as mounted:
        if mounted is None:
            pytest.skip("needs a tmpfs mount (tests/test_faults.py injects the fault instead)")
        edit_config(project, lambda data: data["site"].update(output=str(mounted / "site")))
        fill(mounted, 4_000)
        result, out, err = finish(run_atlas(project.parent, *BUILD))
    assert result == 1
    assert_one_line(err, "the disk is full")


def wait_for(process: subprocess.Popen, text: str, timeout: float = 120) -> str:
    """Read stderr until ``text`` appears (the process keeps running)."""
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline and process.poll() is None, seen
        seen += process.stderr.readline()
    return seen


def test_ctrl_c_during_a_build(project):
    process = run_atlas(project.parent, *BUILD)
    try:
        before = wait_for(process, "loading model")
        process.send_signal(signal.SIGINT)
        result, out, err = finish(process)
    finally:
        process.kill()
    assert result == 130, before + err
    lines = [
        line
        for line in (before + err).splitlines()
        if line.strip() and not NOISE.match(line) and not line.startswith(("loading", "warning: "))
    ]
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), before + err
    assert "Traceback" not in err


def test_ctrl_c_stops_serve(project):
    site = project.parent / "_site"  # a built site's shape; serving needs no build
    site.mkdir()
    (site / ".atlas-site").write_text("")
    (site / "index.html").write_text("<p>home</p>")
    process = run_atlas(project.parent, "serve", "--port", "0")
    try:
        line = process.stdout.readline()
        assert line.startswith("serving ") and "http://127.0.0.1:" in line
        process.send_signal(signal.SIGINT)
        result, out, err = finish(process, timeout=30)
    finally:
        process.kill()
    assert result == 0 and "stopped" in out and "Traceback" not in err, err
