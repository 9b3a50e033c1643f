"""``models[].classes``, ``trained_on`` and ``read_at`` in configs and builds: config
errors, outputs that do not fit the labels (exit 1 cold, exit 2 once the facts are
cached, before anything is rendered) and accuracy on the split a model was not trained on.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import keras
import numpy as np
import own_models
import pytest
from conftest import DATA, PETS

from atlas.build import BuildOptions, build
from atlas.cli import main
from atlas.config.load import load_config
from atlas.errors import ConfigError

LIST = DATA / "oxford-pets" / "annotations" / "list.txt"


def with_model(small_config, tmp_path: Path, model: dict, **sections) -> Path:
    """A small project whose one model is ``model`` (a file relative to the config)."""
    return small_config(models=[{"id": "m", "file": "m.keras", **model}], **sections)


@pytest.fixture
def project(small_config, tmp_path):
    """``project(model_entry, keras_model=None, **sections)``: the config path."""

    def make(entry: dict, keras_model=None, **sections) -> Path:
        if keras_model is not None:
            own_models.save(keras_model, tmp_path, "m")
        else:
            (tmp_path / "m.keras").write_bytes(b"")  # config checks only: never loaded
        return with_model(small_config, tmp_path, entry, **sections)

    return make


# -- config errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "key", "needle"),
    [
        ({"classes": "breed"}, "classes", "did you mean 'breeds'?"),
        ({"classes": "ImageNet"}, "classes", "did you mean 'imagenet'?"),
        ({"classes": "specie"}, "classes", "did you mean 'species'?"),
        ({"classes": "labels.txt"}, "classes", "'labels.txt' is neither"),
        ({"classes": "images"}, "classes", "'images' is neither"),  # a folder
        ({"classes": 37}, "classes", "expected a string, got a number 37"),
        ({"classes": ["pug", "beagle"]}, "classes", "expected a string"),
        ({"trained_on": "trainvall"}, "trained_on", "did you mean 'trainval'?"),
        ({"trained_on": "trainval.txt"}, "trained_on", "did you mean 'trainval'?"),
        (
            {"trained_on": "all"},
            "trained_on",
            "expected one of: train, val, validation, test, trainval, none; got 'all'",
        ),
        ({"trained_on": True}, "trained_on", "got True"),
        ({"read_at": "activations"}, "read_at", "did you mean 'activation'?"),
        ({"read_at": "Conv"}, "read_at", "did you mean 'conv'?"),
        ({"read_at": "bn"}, "read_at", "expected one of: activation, conv; got 'bn'"),
    ],
)
def test_config_errors(project, entry, key, needle):
    with pytest.raises(ConfigError) as caught:
        load_config(project(entry))
    message = str(caught.value)
    assert f"models[0].{key}" in message and needle in message
    assert "\n" not in message


def test_every_bad_value_is_reported_at_once(project):
    with pytest.raises(ConfigError, match="3 problems") as caught:
        load_config(project({"classes": "bread", "trained_on": "tset", "read_at": "relu"}))
    assert [key.split()[0] for key, _ in caught.value.problems] == [
        "models[0].classes",
        "models[0].trained_on",
        "models[0].read_at",
    ]


def test_good_values_are_read(project, tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "pets.txt").write_text("cat\ndog\n")
    model = load_config(
        project({"classes": "labels/pets.txt", "trained_on": "test", "read_at": "conv"})
    ).models[0]
    assert (model.classes, model.trained_on, model.read_at) == (
        tmp_path / "labels" / "pets.txt",
        "test",
        "conv",
    )
    defaults = load_config(project({})).models[0]
    assert (defaults.classes, defaults.trained_on, defaults.read_at) == (None, "none", "activation")


# -- outputs that do not fit the labels ---------------------------------------------------------


def build_exit(config: Path, capsys) -> tuple[int, str]:
    code = main(["build", "--no-progress", "--max-steps", "2", "-c", str(config)])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    ("outputs", "classes", "needles"),
    [
        (2, "breeds", ["has 2 outputs", "gives 37 labels"]),
        (37, "species", ["has 37 outputs", "gives 2 labels"]),
        (1000, "breeds", ["has 1000 outputs", "gives 37 labels"]),
        (37, None, ["has 37 outputs, as many as the dataset has classes", "classes: dataset"]),
        (2, "three.txt", ["has 2 outputs", "gives 3 labels"]),
        (None, "species", ["no classification head", "remove classes"]),
    ],
    ids=["2-breeds", "37-species", "1000-breeds", "37-unset", "2-file-of-3", "features-species"],
)
def test_labels_that_do_not_fit_stop_the_build_before_rendering(
    project, tmp_path, capsys, outputs, classes, needles
):
    (tmp_path / "three.txt").write_text("pug\nbeagle\nboxer\n")
    model = (
        own_models.feature_extractor() if outputs is None else own_models.rescaling_logits(outputs)
    )
    entry = {} if classes is None else {"classes": classes}
    config = project(entry, model, dataset={"annotations": str(LIST)})
    cold, cold_message = build_exit(config, capsys)
    warm, warm_message = build_exit(config, capsys)  # the facts are in the cache now
    assert (cold, warm) == (1, 2)
    for output in (cold_message, warm_message):
        assert "Traceback" not in output
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, output
        assert "models[0].classes" in errors[0] and "model 'm'" in errors[0]
        for needle in needles:
            assert needle in errors[0]
    cache = tmp_path / ".atlas-cache"
    entries = [meta for meta in cache.glob("*/*/meta.json")]
    assert len(entries) == 1 and '"layers"' in entries[0].read_text()  # the facts only
    assert not (tmp_path / "_site").exists()


# -- accuracy on the split the model was not trained on ------------------------------------------

# list.txt splits: test, test, test, trainval, trainval
PHOTOS = ("boxer_26", "Birman_199", "chihuahua_47", "boxer_157", "Abyssinian_101")


def always_boxer(order: list[str]) -> keras.Model:
    """A breed classifier whose answer is boxer whatever the photo (a zero kernel)."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input((own_models.SIZE, own_models.SIZE, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(
        keras.layers.Rescaling(1 / 255.0)(inputs)
    )
    dense = keras.layers.Dense(37, activation="softmax", name="breeds")
    y = dense(keras.layers.GlobalAveragePooling2D()(x))
    bias = np.zeros(37, "float32")
    bias[order.index("boxer")] = 5.0
    dense.set_weights([np.zeros((4, 37), "float32"), bias])
    return keras.Model(inputs, y)


@pytest.mark.slow
def test_trained_on_trainval_measures_accuracy_on_the_test_split(small_config, tmp_path):
    from atlas.data.breeds import load_breeds, load_class_index
    from atlas.model.labels import breed_order

    breeds = load_breeds(DATA / "breeds.json", load_class_index(DATA / "imagenet_class_index.json"))
    own_models.save(always_boxer(breed_order(LIST, breeds)), tmp_path, "m")
    images = tmp_path / "photos"
    images.mkdir()
    for name in PHOTOS:
        shutil.copyfile(PETS / f"{name}.jpg", images / f"{name}.jpg")
    config = with_model(
        small_config,
        tmp_path,
        {"classes": "breeds", "trained_on": "trainval"},
        dataset={"images": "photos", "annotations": str(LIST), "detailed": "none"},
        render={"units_per_layer": 1},
    )
    report = build(config, BuildOptions(max_steps=2, progress=False))
    page = (report.output / "models" / "m" / "accuracy.html").read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", "", page)
    # Test split: boxer_26 right; Birman_199 wrong (a cat); chihuahua_47 wrong (a dog).
    assert "Measured on 3 photos (photos outside the trainval split)" in text
    assert re.search(r"33\.3 %\s*breed top-1", text)  # 2 / 5 = 40 % over all photos
    assert re.search(r"66\.7 %\s*species", text)  # 3 / 5 = 60 % over all photos
    predictions = (report.output / "models" / "m" / "predictions.html").read_text()
    assert predictions.count('<span class="tag">train</span>') == 2


def test_a_labels_file_with_a_blank_line_is_a_config_error_at_build(project, tmp_path, capsys):
    (tmp_path / "labels.txt").write_text("pug\n\nbeagle\n")
    config = project({"classes": "labels.txt"}, own_models.rescaling_logits(3))
    code, output = build_exit(config, capsys)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1
    assert "models[0].classes" in errors[0] and "line 2 is blank" in errors[0]
