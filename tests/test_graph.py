"""The flat layer walk (atlas.render.graph) and model loading (atlas.render.load) on small
and real models."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from atlas.config.load import load_config
from atlas.errors import ModelError
from atlas.render.graph import flatten_model

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "data" / "models" / "mobilenet_2_5_128_tf.h5"
CAT_CLASSES = set(range(281, 286))  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat
CATS = ["Abyssinian_101.jpg", "Persian_140.jpg", "Siamese_115.jpg", "Egyptian_Mau_47.jpg"]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def run(model: keras.Model, images: np.ndarray) -> list[np.ndarray]:
    """A model's outputs as a list of arrays (a one-output model returns a bare tensor)."""
    result = model(images, training=False)
    return [np.asarray(t) for t in (result if isinstance(result, list | tuple) else [result])]


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype("float32")


def four_conv_layers():
    """Conv2D, DepthwiseConv2D (stride 2), SeparableConv2D, Conv2DTranspose (stride 2)."""
    return [
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
        keras.layers.DepthwiseConv2D(3, strides=2, padding="same", name="depthwise"),
        keras.layers.SeparableConv2D(5, 3, padding="same", name="separable"),
        keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same", name="transpose"),
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dense(7, activation="softmax", name="predictions"),
    ]


def sequential_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((16, 16, 3)), *four_conv_layers()], name="seq")


def functional_model() -> keras.Model:
    keras.utils.set_random_seed(2)
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for layer in four_conv_layers():
        x = layer(x)
    return keras.Model(inputs, x, name="func")


# name, type, output shape, channels, kernel, strides, receptive field, jump (by hand:
# rf += (k - 1) * jump; jump *= stride; a stride-2 transposed conv halves the jump and
# each output sees ceil(3 / 2) = 2 positions of its input: 9 + (2 - 1) * 2 = 11)
FOUR_CONV_FACTS = [
    ("conv", "Conv2D", (None, 16, 16, 4), 4, (3, 3), (1, 1), 3, 1),
    ("depthwise", "DepthwiseConv2D", (None, 8, 8, 4), 4, (3, 3), (2, 2), 5, 2),
    ("separable", "SeparableConv2D", (None, 8, 8, 5), 5, (3, 3), (1, 1), 9, 2),
    ("transpose", "Conv2DTranspose", (None, 16, 16, 2), 2, (3, 3), (2, 2), 11, 1),
]


@pytest.mark.parametrize("make", [sequential_model, functional_model], ids=["seq", "func"])
def test_all_four_conv_types_found_in_order_with_facts(make):
    model = make()
    images = random_images(3, 16)
    reference = np.asarray(model(images))  # before flattening: it strips the softmax
    graph = flatten_model(model)
    facts = [
        (f.name, f.type, f.output_shape, f.channels, f.kernel, f.strides, f.receptive_field, f.jump)
        for f in graph.conv_layers
    ]
    assert facts == FOUR_CONV_FACTS
    assert all(f.parent is None for f in graph.conv_layers)
    assert [f.name for f in graph.layers][-2:] == ["pool", "predictions"]
    (logits,) = run(graph.submodel([], with_logits=True), images)
    np.testing.assert_allclose(softmax(logits), reference, rtol=1e-5, atol=1e-6)
    assert not np.allclose(logits, reference)  # really logits, not probabilities


@pytest.mark.parametrize(
    ("layers", "receptive_fields", "jumps"),
    [
        ([("conv", 3, 1), ("conv", 3, 1)], [3, 5], [1, 1]),
        ([("conv", 3, 2), ("conv", 3, 1)], [3, 7], [2, 2]),
        ([("conv", 5, 1), ("conv", 3, 2), ("conv", 3, 1)], [5, 7, 11], [1, 2, 2]),
        ([("conv", 3, 1), ("pool", 2, 2), ("conv", 3, 1)], [3, 8], [1, 2]),
        ([("dilated", 3, 1), ("conv", 3, 1)], [5, 7], [1, 1]),
    ],
    ids=["two-3x3", "stride2-then-3x3", "5-3s2-3", "pool", "dilation2"],
)
def test_receptive_field_by_hand(layers, receptive_fields, jumps):
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for index, (kind, size, stride) in enumerate(layers):
        if kind == "pool":
            x = keras.layers.MaxPooling2D(size, stride, name=f"pool{index}")(x)
        else:
            x = keras.layers.Conv2D(
                2,
                size,
                strides=stride,
                padding="same",
                dilation_rate=2 if kind == "dilated" else 1,
                name=f"conv{index}",
            )(x)
    graph = flatten_model(keras.Model(inputs, x))
    assert [f.receptive_field for f in graph.conv_layers] == receptive_fields
    assert [f.jump for f in graph.conv_layers] == jumps


def test_branches_take_the_widest_receptive_field():
    inputs = keras.Input((16, 16, 3))
    narrow = keras.layers.Conv2D(2, 1, name="narrow")(inputs)
    wide = keras.layers.Conv2D(2, 5, padding="same", name="wide")(inputs)
    merged = keras.layers.Add(name="add")([narrow, wide])
    out = keras.layers.Conv2D(2, 3, padding="same", name="after")(merged)
    graph = flatten_model(keras.Model(inputs, out))
    rf = {f.name: f.receptive_field for f in graph.conv_layers}
    assert rf == {"narrow": 1, "wide": 5, "after": 7}


def nested_model() -> tuple[keras.Model, keras.Model]:
    keras.utils.set_random_seed(3)
    backbone_in = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(backbone_in)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="conv2")(x)
    backbone = keras.Model(backbone_in, x, name="backbone")
    inputs = keras.Input((16, 16, 3))
    y = backbone(inputs)
    y = keras.layers.Conv2D(3, 3, padding="same", name="head")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = keras.layers.Dense(5, activation="softmax", name="predictions")(y)
    return keras.Model(inputs, y, name="user"), backbone


def test_nested_functional_backbone_is_inlined():
    model, backbone = nested_model()
    images = random_images(2, 16)
    conv1 = np.asarray(keras.Model(backbone.input, backbone.get_layer("conv1").output)(images))
    probabilities = np.asarray(model(images))
    graph = flatten_model(model)
    assert [(f.name, f.parent, f.receptive_field, f.jump) for f in graph.conv_layers] == [
        ("backbone/conv1", "backbone", 3, 1),
        ("backbone/conv2", "backbone", 5, 2),
        ("head", None, 9, 2),
    ]
    sub = graph.submodel(["backbone/conv1", "head"], with_logits=True)  # no "disconnected"
    got_conv1, head, logits = run(sub, images)
    np.testing.assert_allclose(got_conv1, conv1, rtol=1e-5, atol=1e-6)
    assert head.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(softmax(logits), probabilities, rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError, match="no layer named 'conv1'"):
        graph.submodel(["conv1"])


def test_mobilenet_as_a_nested_backbone():
    keras.utils.set_random_seed(4)
    base = keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=None, input_shape=(96, 96, 3)
    )
    inputs = keras.Input((96, 96, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs))
    outputs = keras.layers.Dense(3, activation="softmax", name="pets")(x)
    model = keras.Model(inputs, outputs)
    images = random_images(2, 96)
    reference = np.asarray(model(images, training=False))
    pw13 = np.asarray(
        keras.Model(base.input, base.get_layer("conv_pw_13_relu").output)(images, training=False)
    )
    graph = flatten_model(model)
    prefix = f"{base.name}/"
    conv = graph.conv_layers
    assert len(conv) == 27  # 14 Conv2D + 13 DepthwiseConv2D
    assert conv[0].name == prefix + "conv1" and conv[0].parent == base.name
    assert conv[-1].name == prefix + "conv_pw_13" and conv[-1].output_shape == (None, 3, 3, 256)
    assert conv[0].receptive_field == 3 and conv[-1].jump == 32
    sub = graph.submodel([prefix + "conv_pw_13_relu"], with_logits=True)
    features, logits = run(sub, images)
    np.testing.assert_allclose(features, pw13, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(softmax(logits), reference, rtol=1e-4, atol=1e-6)


def test_model_without_inputs_is_refused():
    with pytest.raises(ValueError, match="no inputs"):
        flatten_model(keras.Sequential([keras.layers.Conv2D(2, 3)]))


# -- the real embedded MobileNet ---------------------------------------------------------------


def cat_batch(size: int) -> np.ndarray:
    photos = [
        Image.open(REPO / "data" / "oxford-pets" / "images" / name).convert("RGB") for name in CATS
    ]
    return np.stack(
        [np.asarray(p.resize((size, size), Image.BILINEAR), np.float32) for p in photos]
    )


@pytest.fixture(scope="module")
def shipped_model_config():
    return load_config(REPO / "site_config.yaml").models[0]


@pytest.mark.slow
def test_real_mobilenet_layers_and_cat_predictions():
    model = keras.applications.MobileNet(
        alpha=0.25, input_shape=(128, 128, 3), weights=str(WEIGHTS)
    )
    batch = keras.applications.mobilenet.preprocess_input(cat_batch(128))
    probabilities = np.asarray(model(batch, training=False))
    graph = flatten_model(model)
    conv = graph.conv_layers
    types = [f.type for f in conv]
    assert len(conv) == 28
    assert (types.count("Conv2D"), types.count("DepthwiseConv2D")) == (15, 13)
    assert sum(f.channels for f in conv) == 3736
    assert (conv[-1].name, conv[-1].channels, conv[-1].kernel) == ("conv_preds", 1000, (1, 1))
    (logits,) = run(graph.submodel([], with_logits=True), batch)
    np.testing.assert_allclose(softmax(logits), probabilities, rtol=1e-4, atol=1e-6)
    for row in probabilities:
        assert set(np.argsort(-row)[:5].tolist()) & CAT_CLASSES


@pytest.mark.slow
def test_atlas_loads_the_shipped_model_and_it_sees_cats(shipped_model_config):
    from atlas.render.load import load_model

    loaded = load_model(shipped_model_config)
    assert loaded.input_size == (128, 128) and loaded.random_weights is False
    assert len(loaded.conv_layers()) == 28
    batch = loaded.preprocess(cat_batch(128))
    logits = np.asarray(loaded.keras_model(batch, training=False))
    for row in softmax(logits):
        assert set(np.argsort(-row)[:5].tolist()) & CAT_CLASSES


def test_damaged_weights_file_fails_the_sha256_check(shipped_model_config, tmp_path):
    from atlas.render.load import load_model

    damaged = tmp_path / WEIGHTS.name
    shutil.copyfile(WEIGHTS, damaged)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    config = dataclasses.replace(shipped_model_config, weights=damaged)
    with pytest.raises(ModelError, match="sha256") as caught:
        load_model(config)
    assert shipped_model_config.sha256 in str(caught.value)


def test_truncated_weights_without_checksum_is_a_model_error(shipped_model_config, tmp_path):
    from atlas.render.load import load_model

    truncated = tmp_path / WEIGHTS.name
    truncated.write_bytes(WEIGHTS.read_bytes()[:4096])
    config = dataclasses.replace(shipped_model_config, weights=truncated, sha256=None)
    with pytest.raises(ModelError, match="cannot build MobileNet"):
        load_model(config)


@pytest.mark.slow
def test_weights_none_gives_random_weights(shipped_model_config):
    from atlas.render.load import load_model

    config = dataclasses.replace(shipped_model_config, weights="none", sha256=None)
    loaded = load_model(config)
    assert loaded.random_weights is True
    assert len(loaded.graph.conv_layers) == 28


def file_model_config(shipped, path: Path, preprocess: str = "none"):
    return dataclasses.replace(
        shipped,
        id="tiny",
        application=None,
        file=path,
        options={"preprocess": preprocess},
        weights="none",
        sha256=None,
    )


def test_keras_file_loads_in_safe_mode(shipped_model_config, tiny_keras_file, tiny_model):
    from atlas.render.load import load_model

    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    reference = np.asarray(tiny_model(images))  # same seed, same weights as the saved file
    loaded = load_model(file_model_config(shipped_model_config, tiny_keras_file))
    assert loaded.input_size == (32, 32)
    assert [f.name for f in loaded.conv_layers()] == ["conv", "depthwise", "separable"]
    assert loaded.random_weights is False  # a .keras file's own weights are trained weights
    logits = np.asarray(loaded.logits_model()(loaded.preprocess(images)))
    np.testing.assert_allclose(softmax(logits), reference, rtol=1e-5, atol=1e-7)
    # the user's model itself still ends in its softmax: atlas took the head off in its
    # own graph, not on the model
    own = np.asarray(loaded.keras_model(loaded.preprocess(images)))
    np.testing.assert_allclose(own, reference, rtol=1e-5, atol=1e-7)


def test_keras_file_preprocess_mode_is_applied(shipped_model_config, tiny_keras_file):
    from atlas.render.load import load_model

    loaded = load_model(file_model_config(shipped_model_config, tiny_keras_file, "tf"))
    pixels = np.array([[[[0.0, 127.5, 255.0]]]], np.float32)
    np.testing.assert_allclose(np.asarray(loaded.preprocess(pixels)), [[[[-1.0, 0.0, 1.0]]]])


def test_keras_file_with_unregistered_custom_layer(shipped_model_config, tmp_path):
    from atlas.render.load import load_model

    @keras.saving.register_keras_serializable(package="atlas_test")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return 2 * x

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="conv")(Doubler(name="double")(inputs))
    path = tmp_path / "custom.keras"
    keras.Model(inputs, x).save(path)
    # The class was registered only while saving: a later process does not know it.
    del keras.saving.get_custom_objects()["atlas_test>Doubler"]
    with pytest.raises(ModelError, match="custom") as caught:
        load_model(file_model_config(shipped_model_config, path))
    assert "custom.keras" in str(caught.value) and "standard Keras layers" in str(caught.value)


def test_garbage_keras_file_is_a_model_error(shipped_model_config, tmp_path):
    from atlas.render.load import load_model

    path = tmp_path / "broken.keras"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(ModelError, match="cannot load"):
        load_model(file_model_config(shipped_model_config, path))
    # a file that exists but is no zip: Keras says "File not found"; atlas says what it is
    path.write_text("not a model")
    with pytest.raises(ModelError, match=r"broken\.keras: not a \.keras file") as caught:
        load_model(file_model_config(shipped_model_config, path))
    assert "not found" not in str(caught.value)
