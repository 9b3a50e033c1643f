"""Shared fixtures: tiny Keras models, a tiny dataset folder and a config factory.

Nothing here is imported by the tests; pytest provides the fixtures. TensorFlow is
imported lazily inside the model fixtures so that tests which never touch a model (config,
cache, CLI) do not pay for it.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

# The Ctrl-C tests send SIGINT to atlas processes. A suite started as a background job of a
# non-interactive shell inherits SIGINT ignored, and its children would too, so those tests
# would fail for the runner's sake: restore Python's handler here (an exec'd child gets
# the default action back, and Python's own handler with it).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
PETS = DATA / "oxford-pets" / "images"
MOBILENET_WEIGHTS = DATA / "models" / "mobilenet_2_5_128_tf.h5"
MOBILENET_SHA256 = "fe295db7f78635f1403127e3ba8cdc6237f83262bdb745063a67c1d81190c7f8"
# A few real photos: two cats and two dogs, each breed with an ImageNet class.
SAMPLE_IMAGES = (
    "Abyssinian_101.jpg",
    "Persian_140.jpg",
    "beagle_111.jpg",
    "pug_112.jpg",
)
TINY_CLASSES = 1000  # Grad-CAM of a breed's ImageNet class needs all 1000 outputs


def _existing_samples(count: int) -> list[Path]:
    """``count`` sample photos: the preferred ones where present, else the first others."""
    preferred = [PETS / name for name in SAMPLE_IMAGES if (PETS / name).is_file()]
    others = [p for p in sorted(PETS.glob("*.jpg")) if p not in preferred]
    return (preferred + others)[:count]


def tiny_conv_model(size: int = 32, classes: int = TINY_CLASSES, seed: int = 0):
    """Conv2D -> DepthwiseConv2D -> SeparableConv2D -> pool -> Dense softmax."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)
    x = keras.layers.DepthwiseConv2D(
        3, strides=2, padding="same", activation="relu", name="depthwise"
    )(x)
    x = keras.layers.SeparableConv2D(6, 3, padding="same", activation="relu", name="separable")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.fixture(scope="session")
def tiny_keras_file(tmp_path_factory) -> Path:
    """A tiny conv model saved as a ``.keras`` file (standard layers only)."""
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    tiny_conv_model().save(path)
    return path


@pytest.fixture
def tiny_model():
    """A fresh tiny Functional model (32x32 input, 1000-way softmax)."""
    return tiny_conv_model()


def copy_images(target: Path, count: int = 4) -> Path:
    """A folder with ``count`` real pet photos (copies), created if needed."""
    target.mkdir(parents=True, exist_ok=True)
    for source in _existing_samples(count):
        shutil.copyfile(source, target / source.name)
    return target


@pytest.fixture
def make_dataset(tmp_path) -> Callable[..., Path]:
    """``make_dataset(n, folder="images")``: a folder with ``n`` real pet photos (copies)."""
    return lambda count=4, folder="images": copy_images(tmp_path / folder, count)


def config_dict(project: Path, images: Path, model: dict, **overrides) -> dict:
    """A config mapping with the shipped class index and breed map; ``overrides`` replace
    top-level sections (``site``, ``render``, ``dataset``, ``cache``, ``models``)."""
    config = {
        "site": {"title": "test atlas", "output": "_site"},
        "cache": ".atlas-cache",
        "dataset": {
            "name": "tiny pets",
            "images": os.path.relpath(images, project),
            "class_index": str(DATA / "imagenet_class_index.json"),
            "breeds": str(DATA / "breeds.json"),
            "detailed": "all",
        },
        "render": {"units_per_layer": 2, "best_grid": 1, "activation_channels": 4},
        "models": [model],
    }
    config.update(overrides)
    return config


def model_entry(model: str) -> dict:
    """The config entry of the tiny file model (``tiny.keras`` beside the config) or of the
    real embedded MobileNet."""
    if model == "tiny":
        return {
            "id": "tiny",
            "title": "Tiny CNN",
            "file": "tiny.keras",
            "options": {"preprocess": "none"},
        }
    if model == "mobilenet":
        return {
            "id": "mobilenet",
            "application": "MobileNet",
            "options": {"alpha": 0.25, "input_shape": [128, 128, 3]},
            "weights": str(MOBILENET_WEIGHTS),
            "sha256": MOBILENET_SHA256,
        }
    raise ValueError(f"unknown test model {model!r}")


def write_project(
    root: Path,
    tiny_file: Path,
    model: str = "tiny",
    images: int = 4,
    units_per_layer: int | None = 2,
    **sections,
) -> Path:
    """Write ``root/site_config.yaml`` (and its images folder and tiny.keras); see
    ``small_config``. Returns the config path."""
    root.mkdir(parents=True, exist_ok=True)
    folder = copy_images(root / "images", images)
    if model == "tiny" and not (root / "tiny.keras").exists():
        shutil.copyfile(tiny_file, root / "tiny.keras")
    render = {"units_per_layer": units_per_layer, "best_grid": 1, "activation_channels": 4}
    render.update(sections.pop("render", {}))
    # no deletion/insertion curves unless a test asks (tests/test_scores.py covers them);
    # last, so that the lines of the keys above stay where error tests expect them
    render.setdefault("faithfulness_photos", 0)
    # no negative or diversity pictures unless a test asks (tests/test_unit_views.py)
    render.setdefault("unit_views", {"units": "none"})
    if render["units_per_layer"] is None:
        del render["units_per_layer"]
    # no activation atlases unless a test asks (tests/test_atlas.py): they add seconds per build
    sections.setdefault("atlas", {"layers": "none"})
    data = config_dict(root, folder, model_entry(model), render=render)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = root / "site_config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def small_config(tmp_path, tiny_keras_file) -> Callable[..., Path]:
    """``small_config(model="tiny"|"mobilenet", images=4, units_per_layer=2, **sections)``.

    Writes ``tmp_path/site_config.yaml`` for a tiny dataset and either the tiny ``.keras``
    model (copied beside the config) or the real embedded MobileNet; keyword arguments
    replace top-level sections, or are merged into them when both are mappings
    (``render={...}``, ``site={...}``). Returns the config path.
    """
    return lambda **kwargs: write_project(tmp_path, tiny_keras_file, **kwargs)


@pytest.fixture(scope="session")
def project_factory(tiny_keras_file) -> Callable[..., Path]:
    """``project_factory(root, **kwargs)``: ``small_config`` for any folder (for fixtures
    wider than one test)."""
    return lambda root, **kwargs: write_project(Path(root), tiny_keras_file, **kwargs)


def site_files(site: Path) -> dict[str, bytes]:
    """Every file of a built site by relative path (for byte-for-byte comparisons)."""
    return {
        p.relative_to(site).as_posix(): p.read_bytes()
        for p in sorted(site.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def read_site() -> Callable[[Path], dict[str, bytes]]:
    return site_files
