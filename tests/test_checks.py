"""Names in the config checked against what exists: (input, expected message) tables.

Every naming key has rows here: ``dataset.detailed`` (names, globs, modes),
``dataset.breeds`` (both directions), ``site.notes``, ``models[].notes``,
``site.templates`` and ``models[].layers``. Each row edits a small config (and, for the
breed rows, the breed mapping or the dataset), runs the checks as the build does and
compares the reported key, YAML line and message.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from atlas.config.load import load_config
from atlas.data.breeds import load_breeds, load_class_index
from atlas.data.oxford import breed_from_filename
from atlas.data.scan import DatasetImage, DatasetScan, Skipped
from atlas.errors import ConfigError
from atlas.plan import checks

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
SAMPLE = DATA / "oxford-pets" / "images"

# Line numbers below refer to this text (line 1 is "site:").
BASE = textwrap.dedent(f"""\
    site:
      output: _site
      notes: notes.md
      templates: mine
    dataset:
      images: images
      class_index: {DATA / "imagenet_class_index.json"}
      breeds: breeds.json
      detailed:
        - Abyssinian_101
        - pug_112
    models:
      - id: tiny
        file: tiny.keras
        notes: notes.md
        layers: [conv, "dense*"]
    """)
CONV_LAYERS = ("conv", "conv_pw_1", "conv_pw_2", "depthwise", "dense_conv")


def edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def sample_scan(drop_breed: str | None = None, extra: tuple[str, ...] = ()) -> DatasetScan:
    """The shipped sample's names, labelled from the file names (no decoding needed)."""
    images = []
    for path in sorted(SAMPLE.iterdir()):
        name = path.stem
        breed, species = breed_from_filename(name)
        if breed != drop_breed:
            images.append(DatasetImage(name, path, "", breed, species, None, False, 1, 1))
    for name in extra:
        breed, species = breed_from_filename(name)
        images.append(
            DatasetImage(name, SAMPLE / f"{name}.jpg", "", breed, species, None, False, 1, 1)
        )
    skipped = (Skipped(SAMPLE / "broken_1.jpg", "truncated image file"),)
    return DatasetScan(images=tuple(images), skipped=skipped)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "tiny.keras").write_bytes(b"not opened")
    (tmp_path / "notes.md").write_text("# notes\n")
    (tmp_path / "breeds.json").write_bytes((DATA / "breeds.json").read_bytes())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "layer.html").write_text('{% extends "base.html" %}\n')
    return tmp_path


def run_checks(project: Path, text: str, scan: DatasetScan, caplog) -> tuple[list, list[str]]:
    """(problems, warning lines) of the build's two check points on this config."""
    path = project / "site_config.yaml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    breeds = load_breeds(config.dataset.breeds, load_class_index(config.dataset.class_index))
    from atlas.plan.select import choose_detailed

    detailed = choose_detailed(
        scan.images,
        config.dataset.detailed,
        config.dataset.per_breed,
        config.dataset.detailed_names,
    )
    findings = checks.before_render(config, scan, breeds, detailed)
    findings += checks.layer_patterns("models[0]", config.models[0], list(CONV_LAYERS))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="atlas.plan.checks"):
        try:
            checks.report(findings, path)
            problems = []
        except ConfigError as error:
            assert error.exit_code == 2
            problems = error.problems
    return problems, [record.getMessage() for record in caplog.records]


def test_base_has_no_findings(project, caplog):
    assert run_checks(project, BASE, sample_scan(), caplog) == ([], [])


def _write(relative: str, content: bytes | str):
    def setup(project: Path) -> None:
        target = project / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")

    return setup


def _breeds(change):
    def setup(project: Path) -> None:
        path = project / "breeds.json"
        data = json.loads(path.read_text())
        change(data["breeds"])
        path.write_text(json.dumps(data))

    return setup


def _rename_breed(old: str, new: str):
    return _breeds(lambda breeds: breeds.__setitem__(new, breeds.pop(old)))


# (config text, setup of the project folder, scan, expected key (line),
#  message fragments, True for a warning)
ROWS = [
    pytest.param(
        edit("- Abyssinian_101", "- Abyssinian_1"),
        None,
        sample_scan(),
        "dataset.detailed[0] (line 10)",
        [
            "no image named 'Abyssinian_1'",
            "did you mean Abyssinian_101, Abyssinian_130 or Abyssinian_135?",
        ],
        False,
        id="detailed-name",
    ),
    pytest.param(
        edit("- pug_112", "- PUG_112"),
        None,
        sample_scan(),
        "dataset.detailed[1] (line 11)",
        ["no image named 'PUG_112'", "did you mean pug_112"],
        False,
        id="detailed-case",
    ),
    pytest.param(
        edit("- pug_112", "- pug_112.jpg"),
        None,
        sample_scan(),
        "dataset.detailed[1] (line 11)",
        ["write 'pug_112'", "without the extension"],
        False,
        id="detailed-extension",
    ),
    pytest.param(
        edit("- pug_112", "- zzzzzz"),
        None,
        sample_scan(),
        "dataset.detailed[1] (line 11)",
        ["no image named 'zzzzzz' in dataset.images"],
        False,
        id="detailed-no-hint",
    ),
    pytest.param(
        edit("- pug_112", "- broken_1"),
        None,
        sample_scan(),
        "dataset.detailed[1] (line 11)",
        ["'broken_1' was skipped", "truncated image file"],
        False,
        id="detailed-skipped",
    ),
    pytest.param(
        edit("- pug_112", "- 'pugg_*'"),
        None,
        sample_scan(),
        "dataset.detailed[1] (line 11)",
        ["'pugg_*' selects no image"],
        True,
        id="detailed-glob",
    ),
    pytest.param(
        edit("    - Abyssinian_101\n    - pug_112", "    test"),
        None,
        sample_scan(),
        "dataset.detailed (line 9)",
        ["'test' selects no image", "test.txt"],
        True,
        id="detailed-split",
    ),
    pytest.param(
        BASE,
        _breeds(lambda breeds: breeds.pop("pug")),
        sample_scan(),
        "dataset.breeds (line 8)",
        [
            "not in the breed mapping",
            "pug (3 photos)",
            "count only toward species",
        ],
        True,
        id="breed-not-mapped",
    ),
    pytest.param(
        BASE,
        None,
        sample_scan(drop_breed="beagle"),
        "dataset.breeds (line 8)",
        ["1 breed(s) of the breed mapping have no photo in dataset.images: beagle"],
        True,
        id="breed-no-photos",
    ),
    pytest.param(
        BASE,
        None,
        sample_scan(extra=("Abysinian_7",)),
        "dataset.breeds (line 8)",
        ["Abysinian (1 photo; did you mean Abyssinian?)"],
        True,
        id="breed-typo-in-dataset",
    ),
    pytest.param(
        edit("  notes: notes.md", "  notes: folder"),
        _write("folder/intro.md", "# x"),
        sample_scan(),
        "site.notes (line 3)",
        ["expected a Markdown file, got a folder", "(it holds intro.md)"],
        False,
        id="site-notes-folder",
    ),
    pytest.param(
        edit("    notes: notes.md", "    notes: latin1.md"),
        _write("latin1.md", b"caf\xe9\n"),
        sample_scan(),
        "models[0].notes (line 15)",
        ["is not UTF-8 text"],
        False,
        id="model-notes-encoding",
    ),
    pytest.param(
        BASE,
        _write("mine/layers.html", "{{ page }}"),
        sample_scan(),
        "site.templates (line 4)",
        ["layers.html replaces no atlas template", "never used", "did you mean layer.html?"],
        True,
        id="template-typo",
    ),
    pytest.param(
        BASE,
        _write("mine/static/atlas.ccs", "body {}"),
        sample_scan(),
        "site.templates (line 4)",
        ["static/atlas.ccs replaces no atlas static file", "did you mean atlas.css?"],
        True,
        id="static-typo",
    ),
    pytest.param(
        BASE,
        _write("mine/unit.html", "{% if x %}\n{{ y }}\n"),
        sample_scan(),
        "site.templates (line 4)",
        ["unit.html, line 2:", "endif"],
        False,
        id="template-syntax",
    ),
    pytest.param(
        edit('[conv, "dense*"]', "[conv, conv_pw_11]"),
        None,
        sample_scan(),
        "models[0].layers[1] (line 16)",
        [
            "'conv_pw_11' matches no convolution layer of tiny",
            "(did you mean conv_pw_1?)",
            "its conv layers are: conv, conv_pw_1",
        ],
        False,
        id="layer-name",
    ),
    pytest.param(
        edit('[conv, "dense*"]', '[conv, "block*"]'),
        None,
        sample_scan(),
        "models[0].layers[1] (line 16)",
        ["'block*' matches no convolution layer of tiny"],
        False,
        id="layer-glob",
    ),
]


@pytest.mark.parametrize(("text", "setup", "scan", "key", "fragments", "warning"), ROWS)
def test_each_naming_key(project, caplog, text, setup, scan, key, fragments, warning):
    if setup is not None:
        setup(project)
    problems, warnings = run_checks(project, text, scan, caplog)
    if warning:
        assert problems == [] and len(warnings) == 1, (problems, warnings)
        found = warnings[0]
        assert f": {key}: " in found, found
    else:
        assert warnings == [] and len(problems) == 1, (problems, warnings)
        assert problems[0][0] == key, problems
        found = problems[0][1]
    for fragment in fragments:
        assert fragment in found, found


def test_all_problems_are_reported_together(project, caplog):
    text = edit("- Abyssinian_101", "- Abyssinian_1").replace("- pug_112", "- pug_1")
    text = text.replace('[conv, "dense*"]', "[convv]")
    problems, _ = run_checks(project, text, sample_scan(), caplog)
    assert [key for key, _ in problems] == [
        "dataset.detailed[0] (line 10)",
        "dataset.detailed[1] (line 11)",
        "models[0].layers[0] (line 16)",
    ]


def test_included_template_and_used_static_file_are_not_flagged(project, caplog):
    (project / "mine" / "base.html").write_text(
        '{% include "_footer.html" %}<img src="static/logo.svg">'
    )
    (project / "mine" / "_footer.html").write_text("<footer></footer>")
    (project / "mine" / "static").mkdir()
    (project / "mine" / "static" / "logo.svg").write_text("<svg/>")
    (project / "mine" / "static" / "atlas.css").write_text("body {}")
    (project / "mine" / "README.txt").write_text("not a template")
    assert run_checks(project, BASE, sample_scan(), caplog) == ([], [])


def test_globs_select_images_and_layers():
    from atlas.plan.select import choose_detailed

    images = sample_scan().images
    chosen = choose_detailed(images, "list", 0, ["pug_*", "Abyssinian_101"])
    assert [image.name for image in chosen] == ["Abyssinian_101"] + sorted(
        path.stem for path in SAMPLE.glob("pug_*")
    )


@pytest.mark.parametrize(
    ("name", "candidates", "expected"),
    [
        (
            "Abyssinian_1",
            ["Abyssinian_135", "Abyssinian_130", "Abyssinian_101"],
            ["Abyssinian_101", "Abyssinian_130", "Abyssinian_135"],
        ),
        ("BEAGLE", ["beagle", "boxer"], ["beagle"]),
        ("conv_pw_11", ["conv_pw_1", "conv_pw_12"], ["conv_pw_1", "conv_pw_12"]),
        ("xyz", ["beagle", "pug"], []),
    ],
)
def test_closest_names(name, candidates, expected):
    assert checks.closest(name, candidates) == expected


def test_missing_path_suggests_the_file_beside_it(project):
    text = edit("  notes: notes.md", "  notes: note.md")
    (project / "site_config.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(project / "site_config.yaml")
    assert caught.value.problems == [
        (
            "site.notes (line 3)",
            f"file not found: note.md (looked in {project / 'note.md'}) (did you mean notes.md?)",
        )
    ]


def test_unknown_image_on_the_default_config_fails_before_tensorflow(tmp_path):
    """Done-when of the issue: the shipped config with ``detailed: [Abyssinian_1]`` exits 2
    with one line naming the key, its line and the closest name, without rendering."""
    original = (REPO / "site_config.yaml").read_text(encoding="utf-8")
    lines = original.splitlines()
    (line,) = [n for n, text in enumerate(lines, 1) if text.strip().startswith("detailed:")]
    text = (
        original.replace("detailed: all ", "detailed: [Abyssinian_1] ", 1)
        .replace(": data/", f": {REPO}/data/")
        .replace(": notes/", f": {REPO}/notes/")
        .replace("output: _site", f"output: {tmp_path / 'site'}")
        .replace("cache: .atlas-cache", f"cache: {tmp_path / 'cache'}")
    )
    relative = original.count(": data/") + original.count(": notes/")
    assert relative >= 7 and text.count(str(REPO)) == relative, text  # every path moved
    config = tmp_path / "site_config.yaml"
    config.write_text(text, encoding="utf-8")
    code = (
        "import sys\n"
        "from atlas.cli import main\n"
        f"code = main(['build', '-c', {str(config)!r}, '--no-progress'])\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {config}: dataset.detailed[0] (line {line}): no image named 'Abyssinian_1' "
        "in dataset.images (did you mean Abyssinian_101, Abyssinian_130 or Abyssinian_135?)"
    ]
    assert not (tmp_path / "site").exists()


def test_misspelt_breed_warns_in_both_directions(project, caplog):
    _rename_breed("pug", "pugg")(project)
    problems, warnings = run_checks(project, BASE, sample_scan(), caplog)
    assert problems == []
    assert [w.split("dataset.breeds (line 8): ")[1] for w in warnings] == [
        "1 breed(s) of the dataset are not in the breed mapping, so their photos count only "
        "toward species: pug (3 photos; did you mean pugg?)",
        "1 breed(s) of the breed mapping have no photo in dataset.images: pugg (did you mean pug?)",
    ]
