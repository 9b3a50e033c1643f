"""Shared work is shared: a fine-tuned model with a frozen backbone renders only what its
training changed, and its page says which layers are the same as in the other model."""

from __future__ import annotations

import re

import yaml

from atlas.build import BuildOptions, build


def _models(tmp_path, changed: bool):
    """A small 'application' (external tf preprocessing) and a fine-tune of it: the same
    backbone nested, preprocessing in the graph, a new 37-way head; ``changed`` perturbs
    the last conv's weights (a fine-tune that trained it)."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="c1_bn")(x)
    x = keras.layers.ReLU(name="c1_relu")(x)
    x = keras.layers.Conv2D(6, 3, strides=2, name="c2")(x)
    x = keras.layers.Activation("relu", name="c2_relu")(x)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    base = keras.Model(
        inputs, keras.layers.Dense(1000, activation="softmax")(features), name="base"
    )
    base.save(tmp_path / "base.keras")
    backbone = keras.Model(inputs, x, name="backbone")
    pixels = keras.Input((32, 32, 3))
    y = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(pixels)
    y = backbone(y, training=False)
    y = keras.layers.GlobalAveragePooling2D()(y)
    tuned = keras.Model(pixels, keras.layers.Dense(37, activation="softmax")(y), name="tuned")
    if changed:
        layer = tuned.get_layer("backbone").get_layer("c2")
        layer.kernel.assign(layer.kernel.numpy() + np.float32(0.5))
    tuned.save(tmp_path / "tuned.keras")


def _config(tmp_path, small_config):
    path = small_config(images=2, units_per_layer=2)
    data = yaml.safe_load(path.read_text())
    data["models"] = [
        {"id": "base", "file": "base.keras", "options": {"preprocess": "tf"}},
        {"id": "tuned", "file": "tuned.keras", "classes": "breeds"},
    ]
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_frozen_backbone_renders_its_units_once(tmp_path, small_config) -> None:
    _models(tmp_path, changed=False)
    report = build(_config(tmp_path, small_config), BuildOptions(progress=False, max_steps=2))
    assert report.rendered["unit"] == 4  # 2 layers x 2 units, for both models
    assert report.reused["unit"] == 4
    page = (report.output / "models/tuned/index.html").read_text()
    assert re.search(r"2 of 2 conv layers have the same units as in\s*<strong>base", page)
    layers = sorted((report.output / "models/tuned/layers").glob("*/index.html"))
    assert len(layers) == 2
    for layer in layers:
        assert "the same units:" in layer.read_text()


def test_a_changed_layer_is_rendered_and_marked_changed(tmp_path, small_config) -> None:
    _models(tmp_path, changed=True)
    report = build(_config(tmp_path, small_config), BuildOptions(progress=False, max_steps=2))
    assert report.rendered["unit"] == 6  # c1 shared; c2 changed: its units twice
    page = (report.output / "models/tuned/index.html").read_text()
    assert re.search(
        r"1 of 2 conv layers have the same units as in\s*<strong>base"
        r"</strong>; 1 changed",
        page,
    )


def test_the_plan_counts_shared_units_once(tmp_path, small_config) -> None:
    """`atlas plan` counts a frozen backbone's units (and their exemplars) in the first
    model that has them, not twice: the compute and site size a build really has."""
    import json

    from atlas.prepare import run_plan

    _models(tmp_path, changed=True)
    table = json.loads(run_plan(_config(tmp_path, small_config), as_json=True))
    rows = {(r["model"], r["kind"]): r for r in table["rows"]}
    assert (rows[("base", "unit")]["jobs"], rows[("base", "unit")]["shared"]) == (4, 0)
    # c1's 2 units are the base model's; c2 was changed by the fine-tune: its own 2 units
    assert (rows[("tuned", "unit")]["jobs"], rows[("tuned", "unit")]["shared"]) == (2, 2)
    assert rows[("tuned", "exemplars")]["shared"] == 1
    assert rows[("tuned", "unit")]["gflop"] < rows[("base", "unit")]["gflop"]
    # the images differ (different heads): nothing shared there
    assert rows[("tuned", "image")]["shared"] == 0
