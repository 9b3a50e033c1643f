"""Models users bring, walked and loaded: heads, graphs atlas refuses, where units are read,
and content addresses that do not depend on names or on where preprocessing happens."""

from __future__ import annotations

import importlib
from pathlib import Path

import keras
import numpy as np
import own_models
import pytest
from conftest import MOBILENET_WEIGHTS, copy_images

from atlas.cache import open_cache
from atlas.config.load import load_config
from atlas.config.settings import ModelConfig, RenderSettings
from atlas.data.scan import scan_dataset
from atlas.errors import ConfigError, ModelError
from atlas.model.address import preprocess_affine
from atlas.render.graph import flatten_model
from atlas.render.load import MODULE_MODES, load_model

SIZE = own_models.SIZE


def file_config(path: Path, **changes) -> ModelConfig:
    """The config entry of a ``.keras`` file, as load_config makes it."""
    values = dict(
        id="mine",
        title="Mine",
        application=None,
        file=path,
        options={"preprocess": "none"},
        weights="none",
        sha256=None,
        layers=None,
        notes=None,
        render=RenderSettings(),
    )
    values.update(changes)
    return ModelConfig(**values)


def load_file(model: keras.Model, folder: Path, name: str = "mine", **changes):
    return load_model(file_config(own_models.save(model, folder, name), id=name, **changes))


# -- heads ------------------------------------------------------------------------------------


def softmax_head(kind: str, outputs: int = 7) -> tuple[keras.Model, keras.Model]:
    """A tiny classifier ending in a softmax of the given kind, and the model of its
    pooled features (the logits are ``features @ kernel + bias``)."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    dense = keras.layers.Dense(
        outputs, activation="softmax" if kind == "dense" else None, name="classes"
    )
    y = dense(features)
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 40.0, bias])  # a peaked softmax, far from uniform
    if kind == "layer":
        y = keras.layers.Softmax(name="probabilities")(y)
    elif kind == "activation":
        y = keras.layers.Activation("softmax", name="probabilities")(y)
    elif kind == "ops":
        y = keras.ops.softmax(y)
    return keras.Model(inputs, y), keras.Model(inputs, features)


@pytest.mark.parametrize("kind", ["layer", "activation", "dense", "ops"])
def test_a_softmax_head_is_applied_once(kind, tmp_path):
    from atlas.data.batches import iter_batches
    from atlas.plan.jobs import model_identity, predict_job
    from atlas.render.run import run_predictions

    model, features = softmax_head(kind)
    folder = copy_images(tmp_path / "images", 4)
    images = scan_dataset(folder, None).images
    ((_, batch),) = list(iter_batches(images, (SIZE, SIZE)))
    dense = model.get_layer("classes")
    kernel, bias = (np.asarray(w, np.float64) for w in dense.get_weights())
    logits = np.asarray(features(batch), np.float64) @ kernel + bias  # plain Keras, no softmax
    expected = own_models.softmax(logits)
    loaded = load_file(model, tmp_path)
    assert loaded.graph.head == "softmax" and loaded.graph.classes == 7
    cache = open_cache(tmp_path / "cache")
    jobs = [
        predict_job(loaded.config, model_identity(loaded.config), image, (SIZE, SIZE))
        for image in images
    ]
    run_predictions(loaded, jobs, {image.name: image for image in images}, cache, lambda n: None)
    for job, row in zip(jobs, expected, strict=True):
        meta = cache.get(job.key).meta
        assert meta["top"][:5] == np.argsort(-row, kind="stable")[:5].tolist()
        np.testing.assert_allclose(meta["probabilities"], row[meta["top"]], atol=2e-5)
    assert expected.max(axis=1).min() > 0.5  # so a second softmax would show
    assert not np.allclose(own_models.softmax(expected), expected, atol=0.05)


@pytest.mark.parametrize(
    ("make", "head", "classes"),
    [
        (lambda: own_models.rescaling_logits(5), "logits", 5),
        (own_models.feature_extractor, None, None),
        (lambda: own_models.sequential_softmax(3), "softmax", 3),
    ],
    ids=["dense-logits", "features", "sequential-softmax"],
)
def test_heads_are_told_apart(make, head, classes):
    graph = flatten_model(make())
    assert (graph.head, graph.classes) == (head, classes)


def any_head(kind: str) -> keras.Model:
    """A tiny classifier with one of the heads users bring (softmax in its three forms,
    logits, multi-label sigmoid, and the two binary heads)."""
    keras.utils.set_random_seed(11)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    width = 1 if kind.startswith("binary") else 4
    activation = {"dense-softmax": "softmax", "sigmoid": "sigmoid", "binary-sigmoid": "sigmoid"}
    y = keras.layers.Dense(width, activation=activation.get(kind), name="head")(x)
    if kind == "softmax-layer":
        y = keras.layers.Softmax(name="probabilities")(y)
    elif kind == "activation-softmax":
        y = keras.layers.Activation("softmax", name="probabilities")(y)
    return keras.Model(inputs, y, name=kind.replace("-", "_"))


HEAD_KINDS = [
    "softmax-layer",
    "activation-softmax",
    "dense-softmax",
    "logits",
    "sigmoid",
    "binary-sigmoid",
    "binary-logits",
]


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_walking_a_model_leaves_it_unchanged(kind):
    """The head is taken off in atlas's own graph: the user's model and its layers keep
    their config and give the same outputs after the walk (no attribute is set on them)."""
    model = any_head(kind)
    images = np.random.default_rng(3).integers(0, 256, (4, SIZE, SIZE, 3)).astype(np.float32)
    config, before = model.get_config(), np.asarray(model(images))
    activations = {layer.name: getattr(layer, "activation", None) for layer in model.layers}
    graph = flatten_model(model)
    flatten_model(model, free_size=True)
    assert graph.head in ("softmax", "sigmoid", "logits")
    assert model.get_config() == config
    assert {layer.name: getattr(layer, "activation", None) for layer in model.layers} == activations
    np.testing.assert_array_equal(np.asarray(model(images)), before)


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_probabilities_come_from_the_models_own_head(kind):
    """atlas's logits, through its one probability function, give what the model itself
    outputs: a softmax or sigmoid applied once; a binary head's two classes [1 - p, p]."""
    model = any_head(kind)
    images = np.random.default_rng(4).integers(0, 256, (4, SIZE, SIZE, 3)).astype(np.float32)
    own = np.asarray(model(images), np.float64)
    graph = flatten_model(model)
    logits = np.asarray(graph.logits_model()(images))
    probabilities = graph.probabilities(logits)
    if kind == "logits":
        exp = np.exp(own - own.max(axis=1, keepdims=True))
        expected = exp / exp.sum(axis=1, keepdims=True)
    elif kind == "binary-logits":
        p = 1 / (1 + np.exp(-own[:, 0]))
        expected = np.stack([1 - p, p], axis=1)
    elif kind == "binary-sigmoid":
        expected = np.concatenate([1 - own, own], axis=1)
    else:
        expected = own
    assert graph.classes == expected.shape[1]
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    tensor = np.asarray(graph.probabilities(keras.ops.convert_to_tensor(logits)))
    np.testing.assert_allclose(tensor, expected, rtol=1e-4, atol=1e-6)
    if kind.startswith("binary"):  # the first class's score is the negated logit
        np.testing.assert_allclose(logits[:, 0], -logits[:, 1], rtol=1e-6)


def test_a_loaded_file_model_is_unchanged_by_atlas(tmp_path):
    """Loaded from a .keras file and walked by load_model: the model atlas keeps gives
    what Keras alone gives for the same file."""
    model = any_head("dense-softmax")
    path = own_models.save(model, tmp_path, "dense")
    images = np.random.default_rng(5).integers(0, 256, (3, SIZE, SIZE, 3)).astype(np.float32)
    reference = np.asarray(keras.saving.load_model(path, compile=False)(images))
    loaded = load_model(file_config(path, id="dense"))
    np.testing.assert_allclose(np.asarray(loaded.keras_model(images)), reference, rtol=1e-6)
    assert reference.sum(axis=1) == pytest.approx(np.ones(3), abs=1e-5)  # still a softmax


# -- graphs atlas refuses -----------------------------------------------------------------------


def shared_layer() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    shared = keras.layers.Conv2D(3, 3, padding="same", name="shared")
    x = shared(shared(inputs))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="twice")


def two_inputs() -> keras.Model:
    left = keras.Input((SIZE, SIZE, 3), name="left")
    right = keras.Input((SIZE, SIZE, 3), name="right")
    x = keras.layers.Concatenate()([left, right])
    x = keras.layers.Conv2D(2, 3, name="conv")(x)
    return keras.Model([left, right], keras.layers.GlobalAveragePooling2D()(x), name="pair")


def vector_input() -> keras.Model:
    inputs = keras.Input((10,), name="measurements")
    x = keras.layers.Reshape((4, 4, 3))(keras.layers.Dense(48)(inputs))
    x = keras.layers.Conv2D(2, 3, name="conv")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="vector")


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (shared_layer, ["'shared'", "more than once"]),
        (two_inputs, ["2 inputs", "left", "right"]),
        (vector_input, ["'measurements'", "(10,)", "image input"]),
    ],
    ids=["shared-layer", "two-inputs", "vector-input"],
)
def test_graphs_atlas_cannot_walk_are_one_line_model_errors(make, needles, tmp_path):
    with pytest.raises(ModelError) as caught:
        load_file(make(), tmp_path, "odd")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("model 'odd'")
    for needle in needles:
        assert needle in message


def test_a_non_square_keras_file_is_refused_at_load(tmp_path):
    inputs = keras.Input((160, 120, 3))
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(ModelError, match=r"model 'wide': its input is 160x120 pixels.*square"):
        load_file(model, tmp_path, "wide")


def test_a_non_square_application_input_is_a_config_error(small_config):
    path = small_config(
        models=[
            {
                "id": "m",
                "application": "MobileNet",
                "weights": "none",
                "options": {"input_shape": [160, 120, 3]},
            }
        ]
    )
    with pytest.raises(ConfigError, match=r"models\[0\]\.options\.input_shape.*160x120"):
        load_config(path)


# -- where units are read -----------------------------------------------------------------------


def conv_bn_relu() -> keras.Model:
    """conv -> BN (half the channels with a negative scale) -> ReLU -> a 1x1 conv."""
    keras.utils.set_random_seed(6)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    bn = keras.layers.BatchNormalization(name="bn")
    x = keras.layers.ReLU(name="relu")(bn(x))
    x = keras.layers.Conv2D(2, 1, name="top")(x)
    model = keras.Model(inputs, x)
    gamma, beta, mean, variance = bn.get_weights()
    bn.set_weights([np.array([1.5, -1.0, 0.5, -2.0]), beta + 0.1, mean, variance])
    return model


def test_read_at_conv_and_activation_read_different_tensors(tmp_path):
    model = conv_bn_relu()
    path = own_models.save(model, tmp_path, "bn")
    at_relu = load_model(file_config(path))
    at_conv = load_model(file_config(path, read_at="conv"))
    relu, conv = at_relu.graph.conv_layers[0], at_conv.graph.conv_layers[0]
    assert (relu.read_at, relu.read_ops, relu.negative_scale) == (
        "relu",
        ("BatchNormalization", "ReLU"),
        2,
    )
    assert (conv.read_at, conv.read_ops) == ("conv", ())
    assert relu.address != conv.address
    # The last conv has nothing after it: the same tensor, the same address either way.
    assert at_relu.graph.conv_layers[1].address == at_conv.graph.conv_layers[1].address
    pixels = own_models.random_pixels(2)
    after = np.asarray(at_relu.feature_model("conv")(pixels))
    before = np.asarray(at_conv.feature_model("conv")(pixels))
    reference = keras.Model(model.input, model.get_layer("relu").output)(pixels, training=False)
    np.testing.assert_allclose(after, np.asarray(reference), rtol=1e-5, atol=1e-5)
    raw = keras.Model(model.input, model.get_layer("conv").output)(pixels)
    np.testing.assert_allclose(before, np.asarray(raw), rtol=1e-5, atol=1e-5)
    assert after.min() >= 0 > before.min()


# -- content addresses --------------------------------------------------------------------------


@pytest.mark.parametrize("module", sorted(MODULE_MODES))
def test_preprocess_input_is_the_affine_map_of_its_mode(module):
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    expected = importlib.import_module(f"keras.applications.{module}").preprocess_input(
        pixels.copy()
    )
    affine = preprocess_affine(MODULE_MODES[module])
    got = pixels[..., list(affine.perm)] * np.array(affine.scale) + np.array(affine.offset)
    np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-5, atol=1e-4)


def nested_mobilenet(app: keras.Model, preprocessing: str, changed: str | None = None):
    """The application's backbone (its weights, no top) nested in a 37-breed model, with
    ``x / 127.5 - 1`` inside; ``changed``: a conv layer whose kernel is nudged."""
    base = keras.applications.MobileNet(
        alpha=0.25, input_shape=(128, 128, 3), include_top=False, weights=None
    )
    for layer in base.layers:
        if layer.weights:
            layer.set_weights(app.get_layer(layer.name).get_weights())
    if changed:
        kernel, *rest = base.get_layer(changed).get_weights()
        base.get_layer(changed).set_weights([kernel * 1.01, *rest])
    inputs = keras.Input((128, 128, 3))
    if preprocessing == "rescaling":
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    else:
        x = inputs / 127.5 - 1.0
    x = keras.layers.GlobalAveragePooling2D()(base(x, training=False))
    return keras.Model(inputs, keras.layers.Dense(37, activation="softmax")(x))


@pytest.mark.slow
@pytest.mark.parametrize("preprocessing", ["rescaling", "ops"])
def test_a_nested_backbone_shares_the_applications_unit_addresses(preprocessing, tmp_path):
    config = ModelConfig(
        id="mobilenet",
        title="MobileNet",
        application="MobileNet",
        file=None,
        options={"alpha": 0.25, "input_shape": (128, 128, 3)},
        weights=MOBILENET_WEIGHTS,
        sha256=None,
        layers=None,
        notes=None,
        render=RenderSettings(),
    )
    application = load_model(config)
    app = keras.applications.MobileNet(
        alpha=0.25, input_shape=(128, 128, 3), weights=str(MOBILENET_WEIGHTS)
    )
    by_name = {layer.local_name: layer.address for layer in application.graph.conv_layers}
    same = load_file(nested_mobilenet(app, preprocessing), tmp_path, "same")
    nested = same.graph.conv_layers
    assert len(nested) == 27 and nested[0].name.endswith("/conv1")  # all but conv_preds
    assert [layer.address for layer in nested] == [by_name[layer.local_name] for layer in nested]

    changed = load_file(nested_mobilenet(app, preprocessing, "conv_pw_5"), tmp_path, "changed")
    names = [layer.local_name for layer in changed.graph.conv_layers]
    cut = names.index("conv_pw_5")
    kept = [layer.address == by_name[layer.local_name] for layer in changed.graph.conv_layers]
    assert kept == [True] * cut + [False] * (len(names) - cut)


def test_layer_patterns_match_the_qualified_names_of_nested_convs(tmp_path):
    model_path = own_models.save(own_models.ops_nested(), tmp_path, "pets")
    loaded = load_model(file_config(model_path, layers=("backbone/*",)))
    assert [layer.name for layer in loaded.conv_layers()] == [
        "backbone/conv1",
        "backbone/dw",
        "backbone/pw",
    ]


def test_unit_models_of_a_file_with_keras_ops_preprocessing(tmp_path):
    """A loaded file keeps its ops' names (``subtract``): the ops atlas adds for gradient
    ascent must not take the same names (Keras refused the model: "used 2 times")."""
    loaded = load_file(own_models.ops_nested(), tmp_path)
    convs = [layer.name for layer in loaded.graph.conv_layers]
    assert loaded.graph.conv_facts("backbone/conv1").pre_activation is not None
    model = loaded.features_model(convs)
    pixels = own_models.random_pixels(2)
    outputs = model(loaded.preprocess(pixels))
    reference = keras.Model(
        loaded.graph.inputs[0], [loaded.graph.tensors[loaded.graph.unit_tensor(c)] for c in convs]
    )
    for got, expected in zip(outputs, reference(pixels), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)
