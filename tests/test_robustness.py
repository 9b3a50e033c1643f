"""Bad input gives one clear line and writes nothing: config and model errors through the CLI,
and property tests that feed random YAML and random image bytes to the readers.

Each table row is (what is changed, expected exit code, expected message fragment); every
row is checked for: the exit code, the fragment on stderr, no traceback, no output folder
and no cache entry (the lock file may exist).
"""

from __future__ import annotations

import copy
import io
import os
import shutil
import string
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from atlas.cache.keys import canonical_json
from atlas.cache.store import Cache
from atlas.cli import main
from atlas.config.load import load_config
from atlas.data.images import open_rgb
from atlas.data.scan import scan_dataset
from atlas.errors import AtlasError, BadImageError, ConfigError

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
PETS = DATA / "oxford-pets" / "images"
MOBILENET_WEIGHTS = DATA / "models" / "mobilenet_2_5_128_tf.h5"
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def run_cli(config: Path, capsys) -> tuple[int, str]:
    code = main(["build", "-c", str(config), "--no-progress", "--max-steps", "1"])
    return code, capsys.readouterr().err


def assert_clean_failure(config: Path, code: int, err: str, expected: int, fragment: str):
    """The shared checks of every table row."""
    assert code == expected, err
    assert err.startswith("error: "), err
    assert fragment in err, err
    assert "Traceback" not in err, err
    assert not (config.parent / "_site").exists()
    assert not list(config.parent.glob("._site.*"))
    cache = config.parent / ".atlas-cache"
    assert Cache(cache).keys() == [], "a cache entry was written"
    assert not list(cache.glob("*/.tmp-*"))


# -- configuration errors: exit 2, before anything starts ---------------------------------


def edit(path: Path, change: Callable[[dict], None]) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def model(data: dict) -> dict:
    return data["models"][0]


CONFIG_ERRORS = [
    pytest.param(
        lambda p: p.write_text(p.read_text() + "models: [\n"),
        "invalid YAML",
        id="yaml-syntax",
    ),
    pytest.param(
        lambda p: p.write_text(p.read_text().replace("title: test atlas", "title: [a, b")),
        "line 3, column 9: invalid YAML: expected ',' or ']'",
        id="yaml-line-column",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: d["site"].update(titel="x")),
        "site.titel (line 4): unknown key (did you mean 'title'?)",
        id="unknown-key",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: d["render"].update(best_grid="four")),
        "render.best_grid (line",
        id="wrong-type",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: d.update(models=[{"id": "m", "application": "MobileNetV9"}])),
        "unknown application 'MobileNetV9' (did you mean",
        id="unknown-application",
    ),
    pytest.param(
        lambda p: edit(
            p,
            lambda d: d.update(
                models=[{"id": "m", "application": "MobileNet", "weights": "missing.h5"}]
            ),
        ),
        "models[0].weights (line",
        id="weights-missing",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: d["models"].append(dict(model(d), title="again"))),
        "duplicate model id 'tiny'",
        id="duplicate-id",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: d["site"].update(output=".")),
        "refusing to use the project folder",
        id="output-is-project",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: d["site"].update(output="~")),
        "refusing to use your home folder",
        id="output-is-home",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: d["site"].update(output="/")),
        "refusing to use the file-system root",
        id="output-is-root",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: d["site"].update(output=".atlas-cache/..")),
        "refusing to use the project folder",
        id="output-dot-dot",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: d.update(cache="_site/cache")),
        "must not contain the cache folder",
        id="output-holds-cache",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: d["render"].update(lucid={"stepz": 3})),
        "render.lucid.stepz (line 19): unknown parameter (did you mean 'steps'?)",
        id="lucid-unknown-param",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: model(d).update(render={"classic": {"size": 3}})),
        "models[0].render.classic.size",
        id="classic-param-of-lucid",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: d["render"].update(lucid={"steps": 2.5})),
        "render.lucid.steps (line 19): expected an integer of at least 1, got 2.5",
        id="lucid-param-type",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: d["render"].update(lucid={"scales": 1.1})),
        "expected a list of numbers",
        id="lucid-param-list",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: d["site"].update(notes="notes\x00.md")),
        "site.notes (line 4): not a usable path",
        id="path-with-nul",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: d.update(cache="~no_such_user_atlas/cache")),
        "cannot expand '~no_such_user_atlas/cache': no such user",
        id="path-unknown-user",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: d["dataset"].update(images="x" * 300)),
        "dataset.images (line",
        id="path-too-long",
    ),
    pytest.param(
        lambda p: p.write_text(p.read_text().replace("title: test atlas", "title: 2024-13-45")),
        "invalid YAML value",
        id="impossible-date",
    ),
    pytest.param(
        lambda p: edit(p, lambda d: model(d).update(options={1: 2, "preprocess": "none"})),
        "models[0].options",
        id="options-non-string-key",
    ),
]


@pytest.mark.parametrize(("change", "fragment"), CONFIG_ERRORS)
def test_config_error_is_one_line_exit_2_and_writes_nothing(small_config, capsys, change, fragment):
    config = small_config(images=1, units_per_layer=1)
    change(config)
    code, err = run_cli(config, capsys)
    assert_clean_failure(config, code, err, 2, fragment)
    assert not (config.parent / ".atlas-cache").exists()  # not even the lock: nothing began


def test_every_default_method_parameter_passes_validation(small_config):
    import dataclasses

    from atlas.config.methods import ClassicParams, LucidParams

    def plain(value):
        return list(value) if isinstance(value, tuple) else value

    overrides = {
        method: {f.name: plain(getattr(params(), f.name)) for f in dataclasses.fields(params)}
        for method, params in (("classic", ClassicParams), ("lucid", LucidParams))
    }
    config = load_config(small_config(render=overrides))
    assert set(config.models[0].render.lucid) == set(overrides["lucid"])
    assert set(config.models[0].render.classic) == set(overrides["classic"])


# -- model errors: exit 1, before any rendering -------------------------------------------


def mobilenet(**changes) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        entry = {
            "id": "mobilenet",
            "application": "MobileNet",
            "options": {"alpha": 0.25, "input_shape": [128, 128, 3]},
            "weights": str(MOBILENET_WEIGHTS),
        }
        entry.update(changes)
        edit(path, lambda d: d.update(models=[entry]))

    return change


def with_file(name: str, write: Callable[[Path], None], **changes) -> Callable[[Path], None]:
    """Write a file beside the config, then use it: ``file=name`` makes it the model file,
    anything else changes the MobileNet entry."""

    def change(path: Path) -> None:
        write(path.parent / name)
        if "file" in changes:
            entry = {"id": "own", "options": {"preprocess": "none"}, **changes}
            edit(path, lambda d: d.update(models=[entry]))
        else:
            mobilenet(**changes)(path)

    return change


def truncated_weights(target: Path) -> None:
    target.write_bytes(MOBILENET_WEIGHTS.read_bytes()[:50_000])


def tiny_weights(target: Path) -> None:
    import keras

    keras.saving.load_model(target.parent / "tiny.keras").save_weights(target)


def lambda_model(target: Path) -> None:
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t * 2)(inputs)
    keras.Model(inputs, keras.layers.Conv2D(2, 3)(x)).save(target)


def custom_layer_model(target: Path) -> None:
    import keras

    @keras.saving.register_keras_serializable(package="atlas_test_custom")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2

    inputs = keras.Input((32, 32, 3))
    keras.Model(inputs, keras.layers.Conv2D(2, 3)(Doubler()(inputs))).save(target)
    del keras.saving.get_custom_objects()["atlas_test_custom>Doubler"]


MODEL_ERRORS = [
    pytest.param(
        with_file("cut.h5", truncated_weights, weights="cut.h5"),
        "model 'mobilenet': cannot build MobileNet with weights",
        id="weights-truncated",
    ),
    pytest.param(
        with_file("tiny.weights.h5", tiny_weights, weights="tiny.weights.h5"),
        "made for this architecture",
        id="weights-other-architecture",
    ),
    pytest.param(
        mobilenet(options={"alpha": 0.25, "input_shape": [128, 128, 1]}),
        "Shape mismatch",
        id="input-shape-channels",
    ),
    pytest.param(
        mobilenet(options={"alpha": 0.25, "input_shape": [16, 16, 3]}),
        "at least 32x32",
        id="input-shape-too-small",
    ),
    pytest.param(
        mobilenet(options={"alpha": 0.3, "input_shape": [128, 128, 3]}),
        "Shape mismatch",
        id="option-weights-cannot-take",
    ),
    pytest.param(
        mobilenet(sha256="0" * 64),
        "the file is damaged or not the one configured",
        id="sha256-mismatch",
    ),
    pytest.param(
        with_file("lambda.keras", lambda_model, file="lambda.keras"),
        "uses custom objects atlas cannot load safely",
        id="keras-lambda",
    ),
    pytest.param(
        with_file("custom.keras", custom_layer_model, file="custom.keras"),
        "uses custom objects atlas cannot load safely",
        id="keras-custom-layer",
    ),
]


@pytest.mark.parametrize(("change", "fragment"), MODEL_ERRORS)
def test_model_error_is_one_line_exit_1_and_renders_nothing(small_config, capsys, change, fragment):
    config = small_config(images=1, units_per_layer=1)
    change(config)
    code, err = run_cli(config, capsys)
    assert_clean_failure(config, code, err, 1, fragment)


# -- property tests: random YAML to load_config ---------------------------------------------

KNOWN_KEYS = sorted(
    {
        "site",
        "cache",
        "dataset",
        "render",
        "models",
        "title",
        "output",
        "base_path",
        "notes",
        "templates",
        "timestamp",
        "name",
        "images",
        "annotations",
        "class_index",
        "breeds",
        "detailed",
        "fetch_to",
        "per_breed",
        "method",
        "units_per_layer",
        "best_grid",
        "activation_channels",
        "top_k",
        "gradcam_alpha",
        "seed",
        "classic",
        "lucid",
        "id",
        "application",
        "file",
        "options",
        "weights",
        "sha256",
        "layers",
        "input_shape",
        "alpha",
        "preprocess",
        "steps",
        "size",
        "scales",
    }
)
ODD_STRINGS = [
    "",
    ".",
    "..",
    "/",
    "~",
    "~no_such_user_atlas/x",
    "a\x00b",
    "x" * 300,
    "all",
    "none",
    "imagenet",
    "lucid",
    "classic",
    "MobileNet",
    "*",
    "_site",
    "../..",
    "../../escape",
    "/etc/passwd",
    "2024-13-45",
    "<script>",
    "tiny.keras",
    "data",
    "ü" * 200,
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(ODD_STRINGS)
)
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=8) | st.integers(-3, 3) | st.none()
documents = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=6),
    max_leaves=30,
)
yaml_text = st.text(alphabet=string.printable + "ü\x00", max_size=120) | st.lists(
    st.sampled_from(
        [
            "site:",
            "  output: x",
            "models:",
            "- id: a",
            "  ",
            ": ",
            "[",
            "]",
            "{",
            "&a",
            "*a",
            "!!binary x",
            "!!python/object:os.system",
            "? ",
            "---",
            "\t",
            "'",
            '"',
            "%YAML 1.1",
        ]
    ),
    max_size=12,
).map("\n".join)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sandbox")


class NothingWrittenElsewhere:
    """Snapshots of the folders a stray write would land in: the sandbox's parent, a fresh
    working folder and a fresh home folder."""

    def __init__(self, sandbox: Path, monkeypatch):
        self.places = [sandbox.parent, sandbox / "cwd", sandbox / "home"]
        for place in self.places[1:]:
            place.mkdir(exist_ok=True)
        monkeypatch.chdir(sandbox / "cwd")
        monkeypatch.setenv("HOME", str(sandbox / "home"))
        self.before = self.listing()

    def listing(self) -> dict[Path, list[str]]:
        return {place: sorted(os.listdir(place)) for place in self.places}

    def check(self) -> None:
        assert self.listing() == self.before


def assert_config_result(path: Path) -> None:
    """load_config either works (and its values have one JSON text) or raises ConfigError."""
    try:
        config = load_config(path)
    except ConfigError as error:
        assert str(error) and error.problems
        return
    for model_config in config.models:
        canonical_json(model_config.options)
        canonical_json(model_config.render.key_dict())
        sorted(model_config.options.items())  # the model identity sorts them


@PROPERTY
@given(document=documents)
def test_random_yaml_documents_give_config_errors_only(sandbox, monkeypatch, document):
    guard = NothingWrittenElsewhere(sandbox, monkeypatch)
    folder = Path(tempfile.mkdtemp(dir=sandbox))
    path = folder / "site_config.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    assert_config_result(path)
    assert sorted(os.listdir(folder)) == ["site_config.yaml"]
    shutil.rmtree(folder)
    guard.check()


@PROPERTY
@given(text=yaml_text)
def test_random_yaml_text_gives_config_errors_only(sandbox, monkeypatch, text):
    guard = NothingWrittenElsewhere(sandbox, monkeypatch)
    folder = Path(tempfile.mkdtemp(dir=sandbox))
    path = folder / "site_config.yaml"
    path.write_text(text, encoding="utf-8")
    assert_config_result(path)
    shutil.rmtree(folder)
    guard.check()


def shipped_config() -> dict:
    """The shipped site_config.yaml with its paths made absolute (the copy lives elsewhere)."""
    data = yaml.safe_load((REPO / "site_config.yaml").read_text(encoding="utf-8"))
    for section, keys_ in (
        ("site", ("notes",)),
        ("dataset", ("images", "annotations", "class_index", "breeds")),
    ):
        for key in keys_:
            if isinstance(data[section].get(key), str):
                data[section][key] = str(REPO / data[section][key])
    for entry in data["models"]:
        for key in ("weights", "notes", "file"):
            if isinstance(entry.get(key), str) and entry[key] not in ("imagenet", "none"):
                entry[key] = str(REPO / entry[key])
    data["site"]["output"] = "_site"
    return data


def key_paths(value, prefix=()) -> list[tuple]:
    paths = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            paths += key_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += key_paths(child, (*prefix, index))
    return paths


def mutate(data: dict, draw) -> dict:
    data = copy.deepcopy(data)
    for _ in range(draw(st.integers(1, 4))):
        paths = key_paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "add", "list", "mapping"]))
        last = path[-1]
        if action == "replace":
            parent[last] = draw(scalars)
        elif action == "delete":
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(keys)] = draw(documents)
        elif action == "list":
            parent[last] = [parent[last], draw(scalars)]
        else:
            parent[last] = {draw(keys): parent[last]}
    return data


@PROPERTY
@given(data=st.data())
def test_mutated_shipped_config_gives_config_errors_only(sandbox, monkeypatch, data):
    base = shipped_config()
    guard = NothingWrittenElsewhere(sandbox, monkeypatch)
    folder = Path(tempfile.mkdtemp(dir=sandbox))
    path = folder / "site_config.yaml"
    path.write_text(yaml.safe_dump(mutate(base, data.draw), allow_unicode=True), "utf-8")
    assert_config_result(path)
    shutil.rmtree(folder)
    guard.check()


def test_the_unmutated_shipped_config_loads(sandbox):
    folder = Path(tempfile.mkdtemp(dir=sandbox))
    (folder / "site_config.yaml").write_text(yaml.safe_dump(shipped_config()), "utf-8")
    assert load_config(folder / "site_config.yaml").models[0].id == "mobilenet"


def test_a_yaml_alias_bomb_is_quick(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = tmp_path / "site_config.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(path)  # walking every alias path would take 10**9 steps


# -- property tests: random bytes as images ------------------------------------------------


def sample_bytes(fmt: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (20, 14), 90).save(buffer, format=fmt)
    return buffer.getvalue()


SAMPLES = [
    sample_bytes("JPEG"),
    sample_bytes("PNG"),
    sample_bytes("PNG", "I;16"),
    sample_bytes("GIF"),
    sample_bytes("BMP"),
    sample_bytes("WEBP"),
    sample_bytes("TIFF"),
    sample_bytes("JPEG", "CMYK"),
    sample_bytes("PNG", "RGBA"),
    sample_bytes("PNG", "P"),
    sample_bytes("TIFF", "F"),
]
MAGIC = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"BM",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"II*\x00",
    b"MM\x00*",
    b"\x00\x00\x01\x00",
    b"P6\n",
]


@st.composite
def image_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["random", "magic", "damaged"]))
    if kind == "random":
        return draw(st.binary(max_size=600))
    if kind == "magic":
        return draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=400))
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@PROPERTY
@given(data=image_bytes())
def test_random_bytes_decode_to_rgb_or_bad_image_error(sandbox, data):
    path = Path(tempfile.mkdtemp(dir=sandbox)) / "Abyssinian_1.jpg"
    path.write_bytes(data)
    try:
        image = open_rgb(path)
    except BadImageError as error:
        assert error.reason and error.path == str(path)
    else:
        assert image.mode == "RGB" and image.width > 0 and image.height > 0
    shutil.rmtree(path.parent)


stems = st.text(
    alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=30,
).filter(lambda s: s not in (".", "..")) | st.sampled_from(
    ["Abyssinian_1", "abyssinian_1", "beagle_2", "x?y_4", "x*y_4", "a..b_5", "_3", "1_1"]
)
files = st.lists(
    st.tuples(
        stems,
        st.sampled_from([".jpg", ".JPG", ".png", ".jpeg", ".txt", ".gif", ""]),
        image_bytes() | st.sampled_from(SAMPLES),
    ),
    max_size=8,
)


@PROPERTY
@given(entries=files, bad_name=st.booleans())
def test_random_image_folders_scan_without_crashing(sandbox, monkeypatch, entries, bad_name):
    guard = NothingWrittenElsewhere(sandbox, monkeypatch)
    folder = Path(tempfile.mkdtemp(dir=sandbox))
    written = set()
    for stem, suffix, data in entries:
        name = stem + suffix
        if len(name.encode()) > 200 or name.casefold() in written:
            continue
        written.add(name.casefold())
        (folder / name).write_bytes(data)
    if bad_name:  # a name that is not valid UTF-8
        with open(os.path.join(os.fsencode(folder), b"bad\xff_9.jpg"), "wb") as handle:
            handle.write(SAMPLES[0])
    before = sorted(os.listdir(folder))
    try:
        scan = scan_dataset(folder, None, workers=2)
    except AtlasError as error:  # pragma: no cover - no folder-level problem is generated
        pytest.fail(f"unexpected {error}")
    names = [image.name for image in scan.images]
    assert len(names) == len({n.casefold() for n in names})
    assert len(scan.images) + len(scan.skipped) <= len(before)
    for image in scan.images:
        assert open_rgb(image.path).size == (image.width, image.height)
    assert sorted(os.listdir(folder)) == before
    shutil.rmtree(folder)
    guard.check()
