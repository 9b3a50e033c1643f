"""site_config.yaml validation: every problem named by key path and line, all at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from atlas.cli import main
from atlas.config.load import load_config
from atlas.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"

# Line numbers below refer to this text (line 1 is "site:").
BASE = textwrap.dedent(f"""\
    site:
      title: test atlas
      output: _site
      notes: notes.md
    cache: .atlas-cache
    dataset:
      images: images
      class_index: {DATA / "imagenet_class_index.json"}
      breeds: {DATA / "breeds.json"}
    render:
      units_per_layer: 2
      best_grid: 1
    models:
      - id: tiny
        file: tiny.keras
        options: {{preprocess: none}}
    """)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with the files BASE names (the model file is never opened here)."""
    (tmp_path / "images").mkdir()
    (tmp_path / "tiny.keras").write_bytes(b"not opened by load_config")
    (tmp_path / "weights.h5").write_bytes(b"weights")
    (tmp_path / "notes.md").write_text("# notes\n")
    return tmp_path


def write(project: Path, text: str) -> Path:
    path = project / "site_config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def test_base_config_is_valid(project):
    config = load_config(write(project, BASE))
    assert config.root == project.resolve()
    assert config.site.output == project.resolve() / "_site"
    assert config.cache == project.resolve() / ".atlas-cache"
    assert config.dataset.images == project.resolve() / "images"
    model = config.models[0]
    assert (model.id, model.application, model.file) == ("tiny", None, project / "tiny.keras")
    assert model.weights == "none"  # a file model without weights keeps its own
    assert model.render.units_per_layer == 2 and model.render.best_grid == 1


# (YAML text, expected message fragments: key path with line, then the message)
INVALID = [
    pytest.param(BASE + "models: [\n", ["line 18, column 1", "invalid YAML"], id="yaml-syntax"),
    pytest.param(
        edit("  title: test atlas", "  titel: test atlas"),
        ["site.titel (line 2)", "did you mean 'title'"],
        id="unknown-key",
    ),
    pytest.param(
        edit("render:", "rendr:"),
        ["rendr (line 10)", "did you mean 'render'"],
        id="unknown-top-key",
    ),
    pytest.param(
        edit("  best_grid: 1", "  best_gird: 1"),
        ["render.best_gird (line 12)", "did you mean 'best_grid'"],
        id="unknown-render",
    ),
    pytest.param(
        edit("  best_grid: 1", "  best_grid: 1\n  precision: mixed_bfloat"),
        ["render.precision (line 13)", "float32, mixed_bfloat16", "did you mean 'mixed_bfloat16'"],
        id="precision",
    ),
    pytest.param(
        edit("  title: test atlas", "  title: 3"),
        ["site.title (line 2)", "expected a string, got a number 3"],
        id="type-str",
    ),
    pytest.param(
        edit("  best_grid: 1", "  best_grid: two"),
        ["render.best_grid (line 12)", "expected an integer"],
        id="type-int",
    ),
    pytest.param(
        edit("  best_grid: 1", "  best_grid: true"),
        ["render.best_grid (line 12)", "expected an integer, got True"],
        id="type-bool",
    ),
    pytest.param(
        edit("  output: _site", "  output: _site\n  timestamp: 'yes'"),
        ["site.timestamp (line 4)", "expected true/false"],
        id="type-bool-str",
    ),
    pytest.param(
        BASE.split("models:")[0] + "models:\n  - tiny\n",
        ["models[0]", "expected a mapping"],
        id="model-not-mapping",
    ),
    pytest.param(
        edit(
            "    file: tiny.keras\n    options: {preprocess: none}", "    application: MobileNett"
        ),
        ["models[0].application (line 15)", "did you mean 'MobileNet'"],
        id="unknown-application",
    ),
    pytest.param(
        edit("    file: tiny.keras", "    file: tiny.keras\n    application: MobileNet"),
        ["models[0] (line 14)", "exactly one of application"],
        id="file-and-app",
    ),
    pytest.param(
        edit("    file: tiny.keras\n", ""),
        ["models[0] (line 14)", "exactly one of application"],
        id="neither",
    ),
    pytest.param(
        edit("file: tiny.keras", "file: missing.keras"),
        ["models[0].file (line 15)", "file not found: missing.keras"],
        id="missing-model-file",
    ),
    pytest.param(
        edit("file: tiny.keras", "file: weights.h5"),
        ["models[0].file (line 15)", "expected a .keras model file"],
        id="not-keras",
    ),
    pytest.param(
        edit("file: tiny.keras", "file: tiny.keras\n    weights: nope.h5"),
        ["models[0].weights (line 16)", "weights file not found: nope.h5"],
        id="missing-weights",
    ),
    pytest.param(
        edit("  images: images", "  images: photos"),
        ["dataset.images (line 7)", "file not found: photos"],
        id="missing-images",
    ),
    pytest.param(
        edit("  images: images", "  images: notes.md"),
        ["dataset.images (line 7)", "expected a folder"],
        id="images-not-folder",
    ),
    pytest.param(
        edit("  notes: notes.md", "  notes: intro.md"),
        ["site.notes (line 4)", "file not found: intro.md"],
        id="missing-notes",
    ),
    pytest.param(
        edit("  notes: notes.md", "  templates: nope"),
        ["site.templates (line 4)", "file not found: nope"],
        id="missing-templates",
    ),
    pytest.param(
        BASE + "  - id: tiny\n    file: tiny.keras\n",
        ["models[1].id (line 17)", "duplicate model id 'tiny' (also models[0])"],
        id="duplicate-id",
    ),
    pytest.param(
        edit("id: tiny", "id: 'bad id!'"), ["models[0].id (line 14)", "not a valid id"], id="bad-id"
    ),
    pytest.param(
        edit("  output: _site", "  output: ."),
        ["site.output (line 3)", "refusing to use the project folder"],
        id="output-project",
    ),
    pytest.param(
        edit("  output: _site", "  output: /"),
        ["site.output (line 3)", "refusing to use the file-system root"],
        id="output-root",
    ),
    pytest.param(
        edit("  output: _site", f"  output: {Path.home()}"),
        ["site.output (line 3)", "refusing to use your home folder"],
        id="output-home",
    ),
    pytest.param(
        edit("  output: _site", "  output: '~'"),
        ["site.output (line 3)", "refusing to use your home folder"],
        id="output-home-tilde",
    ),
    pytest.param(
        edit("  output: _site", "  output: notes.md"),
        ["site.output (line 3)", "is not a folder"],
        id="output-file",
    ),
    pytest.param(
        edit("cache: .atlas-cache", "cache: _site/cache"),
        ["site.output", "must not contain the cache"],
        id="output-holds-cache",
    ),
    pytest.param(
        edit(
            "    file: tiny.keras\n    options: {preprocess: none}",
            "    application: MobileNet\n    options: {input_shape: [128, 3]}",
        ),
        ["models[0].options.input_shape (line 16)", "expected [height, width, 3]"],
        id="input-shape-short",
    ),
    pytest.param(
        edit(
            "    file: tiny.keras\n    options: {preprocess: none}",
            "    application: MobileNet\n    options: {input_shape: [128, 128, -3]}",
        ),
        ["models[0].options.input_shape", "got [128, 128, -3]"],
        id="input-shape-neg",
    ),
    pytest.param(
        edit(
            "    file: tiny.keras\n    options: {preprocess: none}",
            "    application: MobileNet\n    options: {weights: imagenet}",
        ),
        ["models[0].options.weights", "use the model's weights key"],
        id="weights-in-options",
    ),
    pytest.param(
        edit("{preprocess: none}", "{preprocess: bogus}"),
        [
            "models[0].options.preprocess (line 16)",
            "expected one of: none, tf, caffe, torch; got 'bogus'",
        ],
        id="preprocess",
    ),
    pytest.param(
        edit("{preprocess: none}", "{alpha: 0.5}"),
        ["models[0].options.alpha (line 16)", "expected only: preprocess"],
        id="file-option",
    ),
    pytest.param(
        edit(
            "    file: tiny.keras\n    options: {preprocess: none}",
            "    application: MobileNet\n    options: {preprocess: tf}",
        ),
        ["models[0].options.preprocess", "only for models from a file"],
        id="app-preprocess",
    ),
    pytest.param(
        edit("  best_grid: 1", "  best_grid: 0"),
        ["render.best_grid (line 12)", "must be at least 1, got 0"],
        id="grid-zero",
    ),
    pytest.param(
        edit("  units_per_layer: 2", "  units_per_layer: -1"),
        ["render.units_per_layer (line 11)", "must be at least 1"],
        id="units-neg",
    ),
    pytest.param(
        edit("  best_grid: 1", "  best_grid: 1\n  method: deepdream"),
        ["render.method (line 13)", "expected one of: lucid, classic"],
        id="method",
    ),
    pytest.param(
        edit("  best_grid: 1", "  best_grid: 1\n  gradcam_alpha: 1.5"),
        ["render.gradcam_alpha (line 13)", "between 0 and 1"],
        id="alpha",
    ),
    pytest.param(
        edit("  best_grid: 1", "  best_grid: 1\n  lucid: {steps: many}"),
        ["render.lucid.steps", "expected an integer"],
        id="lucid-param",
    ),
    pytest.param(
        edit("options: {preprocess: none}", "options: {preprocess: none}\n    render: {top_k: 0}"),
        ["models[0].render.top_k (line 17)", "must be at least 1"],
        id="model-render",
    ),
    pytest.param(
        edit("options: {preprocess: none}", "options: {preprocess: none}\n    layers: conv"),
        ["models[0].layers (line 17)", "expected all or a list"],
        id="layers-type",
    ),
    pytest.param(
        edit("options: {preprocess: none}", "options: {preprocess: none}\n    sha256: ABC"),
        ["models[0].sha256 (line 17)", "64 lower-case hex digits"],
        id="sha256",
    ),
    pytest.param(
        edit("  breeds:", "  detailed: {per_breed: 0}\n  breeds:"),
        ["dataset.detailed (line 9)", "per_breed"],
        id="detailed",
    ),
    pytest.param(
        BASE.split("models:")[0] + "models: []\n", ["models", "non-empty list"], id="no-models"
    ),
    pytest.param("", ["expected a mapping at the top level"], id="empty"),
    pytest.param("- site\n", ["expected a mapping at the top level, got a list"], id="list"),
]


@pytest.mark.parametrize(("text", "fragments"), INVALID)
def test_invalid_config_names_key_and_line(project, text, fragments):
    with pytest.raises(ConfigError) as caught:
        load_config(write(project, text))
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert len(caught.value.problems) == 1, message
    for fragment in fragments:
        assert fragment in message, message
    assert str(project / "site_config.yaml") in message or message.startswith(str(project)), message


def test_several_problems_reported_together(project):
    text = (
        edit("  title: test atlas", "  titel: test atlas")
        .replace("  best_grid: 1", "  best_grid: 0\n  method: fancy")
        .replace("file: tiny.keras", "file: tiny.keras\n    weights: nope.h5")
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(project, text))
    keys = [key for key, _ in caught.value.problems]
    assert len(caught.value.problems) == 4, keys
    assert any(k.startswith("site.titel") for k in keys)
    assert any(k.startswith("render.best_grid") for k in keys)
    assert any(k.startswith("render.method") for k in keys)
    assert any(k.startswith("models[0].weights") for k in keys)
    assert str(caught.value).splitlines()[0].endswith("4 problems:")


def test_top_level_render_problem_is_not_repeated_per_model(project):
    text = BASE.replace("  best_grid: 1", "  best_grid: 0") + "  - id: two\n    file: tiny.keras\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write(project, text))
    assert [key for key, _ in caught.value.problems] == ["render.best_grid (line 12)"]


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_model_render_overrides_inherit_top_level(project):
    text = edit(
        "options: {preprocess: none}",
        "options: {preprocess: tf}\n    render: {method: classic, seed: 7}",
    )
    model = load_config(write(project, text)).models[0]
    assert model.options == {"preprocess": "tf"}
    assert (model.render.method, model.render.seed, model.render.best_grid) == ("classic", 7, 1)


def test_shipped_config_loads_with_paths_relative_to_it(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # paths must not depend on the working folder
    config = load_config(REPO / "site_config.yaml")
    assert config.site.output == REPO / "_site"
    assert config.dataset.images == REPO / "data" / "oxford-pets" / "images"
    model, tuned = config.models
    assert model.application == "MobileNet"
    assert model.options == {"alpha": 0.25, "input_shape": (128, 128, 3)}
    assert model.weights == REPO / "data" / "models" / "mobilenet_2_5_128_tf.h5"
    assert model.weights.is_file() and model.notes.is_file()
    assert model.layers is None and model.classes is None and model.read_at == "activation"
    # the fine-tuned second model: a .keras file with its own classes and training split
    assert tuned.file == REPO / "data" / "models" / "mobilenet_pets.keras"
    assert tuned.file.is_file() and tuned.notes.is_file()
    assert (tuned.classes, tuned.trained_on) == ("breeds", "trainval")


def test_unmatched_layer_pattern_is_a_config_error_at_build(small_config, capsys):
    path = small_config(
        models=[
            {
                "id": "tiny",
                "file": "tiny.keras",
                "options": {"preprocess": "none"},
                "layers": ["conv", "no_such_layer*"],
            }
        ]
    )
    code = main(["build", "-c", str(path), "--no-progress", "--max-steps", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "models[0].layers[1]" in err and "'no_such_layer*' matches no convolution" in err
    assert "conv, depthwise, separable" in err  # the layers it could have meant
    assert not (path.parent / "_site").exists()


def test_help_is_fast_and_does_not_import_tensorflow():
    code = (
        "import sys, contextlib, io\n"
        "from atlas.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert main(['--help']) == 0\n"
        "    assert main(['build', '--help']) == 0\n"
        "assert 'usage: atlas' in out.getvalue(), out.getvalue()\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
    assert time.perf_counter() - start < 5
