"""The distribution: the wheel and sdist hold what an installed atlas needs, and an atlas
installed from the wheel (not this checkout) finds its templates and default site."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from atlas import __version__
from atlas.errors import AtlasError
from atlas.project import resources

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def tracked(folder: str) -> list[str]:
    """The repository's files under ``folder`` (git's list where there is one)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", folder], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        return sorted(out.split())
    except (OSError, subprocess.CalledProcessError):  # an sdist: no git
        return sorted(
            p.relative_to(REPO).as_posix()
            for p in (REPO / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        )


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """A wheel and an sdist built with the standard tools (the wheel from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    return out


def test_the_wheel_is_keras_atlas_with_the_atlas_command(dist):
    (wheel,) = dist.glob("*.whl")
    assert wheel.name == f"keras_atlas-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        info = f"keras_atlas-{__version__}.dist-info"
        metadata = email.message_from_bytes(archive.read(f"{info}/METADATA"))
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert metadata["Name"] == "keras-atlas" and metadata["Version"] == __version__
    assert "atlas = atlas.cli:main" in entry_points


def test_the_wheel_holds_the_code_templates_and_default_site(dist):
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        modules = {p.relative_to(REPO).as_posix() for p in (REPO / "atlas").rglob("*.py")}
        assert modules <= names  # every subpackage is listed in pyproject.toml
        expected = {f"atlas/templates/{n.removeprefix('templates/')}" for n in tracked("templates")}
        expected |= {f"atlas/default_site/{n}" for n in tracked("data") + tracked("notes")}
        expected |= {
            "atlas/default_site/site_config.yaml",
            "atlas/default_site/docs/github-pages.yml",
        }
        assert expected <= names, sorted(expected - names)[:5]
        for name in ("data/models/mobilenet_2_5_128_tf.h5", "data/breeds.json"):
            assert archive.read(f"atlas/default_site/{name}") == (REPO / name).read_bytes()
        assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "bench"))]
        assert not [
            n
            for n in names
            if n.startswith("atlas/default_site/")
            and n.removeprefix("atlas/default_site/")
            not in {e.removeprefix("atlas/default_site/") for e in expected}
        ]


def test_the_sdist_holds_the_repository_layout(dist):
    (sdist,) = dist.glob("*.tar.gz")
    top = f"keras_atlas-{__version__}/"
    with tarfile.open(sdist) as archive:
        names = {n.removeprefix(top) for n in archive.getnames()}
    wanted = tracked("atlas") + tracked("templates") + tracked("data") + tracked("tests")
    wanted += [
        "pyproject.toml",
        "README.md",
        "site_config.yaml",
        "docs/github-pages.yml",
        "MANIFEST.in",
        ".ci/run",
    ]
    assert set(wanted) <= names, sorted(set(wanted) - names)[:5]
    assert not [n for n in names if "__pycache__" in n or n.startswith(("_site", ".atlas-"))]


def test_an_installed_wheel_uses_its_own_files(dist, tmp_path):
    """Installed into a bare folder, outside the checkout: resources resolve inside it and
    `atlas new` writes a project whose config loads from the installed data."""
    (wheel,) = dist.glob("*.whl")
    target = tmp_path / "site-packages"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    script = (
        "import atlas, atlas.project.resources as r, atlas.cli as cli\n"
        "from atlas.config.load import load_config\n"
        "print(atlas.__file__); print(r.templates()); print(r.default_site())\n"
        "assert cli.main(['new', 'proj']) == 0\n"
        "config = load_config('proj/site_config.yaml')\n"
        "print(config.models[0].weights)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(Path(line).is_relative_to(target) for line in lines[:3] + lines[-1:]), lines
    assert Path(lines[1]) == target / "atlas" / "templates"
    assert Path(lines[-1]) == target / "atlas/default_site/data/models/mobilenet_2_5_128_tf.h5"


def test_a_broken_installation_says_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(resources, "PACKAGE", tmp_path / "atlas")
    monkeypatch.setattr(resources, "CHECKOUT", tmp_path)
    with pytest.raises(AtlasError, match=r"atlas's templates are missing .*reinstall atlas"):
        resources.templates()
