"""``atlas new``: a project derived from the shipped default site, never overwriting a file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from atlas.cli import main
from atlas.config.load import load_config
from atlas.errors import ConfigError
from atlas.project import resources
from atlas.project.new import new_project

REPO = Path(__file__).resolve().parents[1]


def with_local_data(value):
    """The default config's form of a scaffold value: atlas:data/x -> data/x."""
    if isinstance(value, dict):
        return {key: with_local_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_local_data(item) for item in value]
    if isinstance(value, str) and value.startswith("atlas:data/"):
        return value.removeprefix("atlas:")
    return value


def test_new_writes_a_project_that_loads_from_the_shipped_data(tmp_path, capsys):
    assert main(["new", str(tmp_path / "proj")]) == 0
    assert "next: cd" in capsys.readouterr().out
    project = tmp_path / "proj"
    names = sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file())
    notes = sorted(f"notes/{p.name}" for p in (REPO / "notes").glob("*.md"))
    assert names == sorted(
        [".github/workflows/pages.yml", ".gitignore", "site_config.yaml"] + notes
    )
    config = load_config(project / "site_config.yaml")
    shipped = resources.default_site() / "data"
    for path in (config.dataset.images, config.dataset.class_index, config.dataset.breeds):
        assert path.is_relative_to(shipped) and path.exists()
    for model in config.models:
        source = model.file if model.file is not None else model.weights
        assert isinstance(source, Path) and source.is_relative_to(shipped), model.id
    assert config.site.notes == project / "notes" / "intro.md"
    assert (project / ".gitignore").read_text().splitlines()[1:] == ["/_site/", "/.atlas-cache/"]


def test_the_scaffold_config_is_the_default_one_with_shipped_paths(tmp_path):
    new_project(tmp_path / "proj")
    text = (tmp_path / "proj" / "site_config.yaml").read_text()
    scaffold = yaml.safe_load(text)
    default = yaml.safe_load((REPO / "site_config.yaml").read_text())
    assert with_local_data(scaffold) == default  # every model and key of the default
    assert "atlas:data/" in text and "`atlas new --copy-data`" in text


def test_copy_data_copies_the_data_and_keeps_the_default_config(tmp_path):
    project = tmp_path / "proj"
    new_project(project, copy_data=True)
    copied = sorted(p.relative_to(project / "data") for p in (project / "data").rglob("*"))
    assert copied == sorted(p.relative_to(REPO / "data") for p in (REPO / "data").rglob("*"))
    weights = "models/mobilenet_2_5_128_tf.h5"
    assert (project / "data" / weights).read_bytes() == (REPO / "data" / weights).read_bytes()
    scaffold = yaml.safe_load((project / "site_config.yaml").read_text())
    assert scaffold == yaml.safe_load((REPO / "site_config.yaml").read_text())
    config = load_config(project / "site_config.yaml")
    assert config.dataset.images == project / "data" / "oxford-pets" / "images"


def test_the_workflow_installs_atlas_instead_of_the_checkout(tmp_path):
    new_project(tmp_path / "proj")
    workflow = (tmp_path / "proj" / ".github" / "workflows" / "pages.yml").read_text()
    steps = yaml.safe_load(workflow)["jobs"]["build"]["steps"]
    runs = [step["run"] for step in steps if "run" in step]
    assert runs[0].startswith('pip install "keras-atlas==') or runs[0].startswith(
        "pip install keras-atlas"
    )
    assert "atlas build -c site_config.yaml" in runs
    assert not any("tests/" in run for run in runs)  # a project has no tests/sitecheck.py
    assert [s.get("uses") for s in steps] == [
        s.get("uses")
        for s in yaml.safe_load((REPO / "docs" / "github-pages.yml").read_text())["jobs"]["build"][
            "steps"
        ]
        if "tests/" not in s.get("run", "")
    ]


def test_a_non_empty_folder_is_refused_without_force(tmp_path, capsys):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "mine.txt").write_text("mine")
    assert main(["new", str(project)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{project} is not empty" in err and "--force" in err
    assert [p.name for p in project.iterdir()] == ["mine.txt"]


def test_force_adds_files_and_never_overwrites_one(tmp_path, capsys):
    project = tmp_path / "proj"
    (project / "notes").mkdir(parents=True)
    (project / "site_config.yaml").write_text("my: config\n")
    (project / "notes" / "intro.md").write_text("my intro")
    assert main(["new", str(project), "--force"]) == 0
    out = capsys.readouterr().out
    assert f"kept {project / 'site_config.yaml'} (it exists)" in out
    assert (project / "site_config.yaml").read_text() == "my: config\n"
    assert (project / "notes" / "intro.md").read_text() == "my intro"
    assert (project / ".gitignore").is_file() and (project / "notes" / "mobilenet.md").is_file()


def test_a_file_as_the_folder_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["new", str(tmp_path / "file"), "--force"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("atlas:../pyproject.toml", "atlas: paths name a file inside atlas's default site"),
        ("atlas:/etc/passwd", "atlas: paths name a file inside atlas's default site"),
        ("atlas:data/no-such.json", "file not found: atlas:data/no-such.json"),
    ],
)
def test_bad_atlas_paths_are_config_errors(tmp_path, value, fragment):
    new_project(tmp_path / "proj")
    config = tmp_path / "proj" / "site_config.yaml"
    config.write_text(config.read_text().replace("atlas:data/breeds.json", value))
    with pytest.raises(ConfigError, match=r"dataset\.breeds \(line \d+\)") as error:
        load_config(config)
    assert fragment in str(error.value)
