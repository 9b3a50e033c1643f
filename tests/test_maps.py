"""Activations and Grad-CAM from one pass: known answers on tiny models, and grid shapes."""

from __future__ import annotations

import numpy as np
import pytest

from atlas.render import draw

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from atlas.render.graph import flatten_model  # noqa: E402
from atlas.render.maps import MapRenderer, unit_maps  # noqa: E402

SIZE = 32


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def left_half_model() -> keras.Model:
    """A model that can only see the left half of its input: the right half of the
    feature map `looked` (a 1x1 conv after zeroing) is always zero. Class 0 grows with
    what it sees there, class 1 shrinks."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="see")(inputs)
    x = keras.layers.Cropping2D(((0, 0), (0, SIZE // 2)))(x)
    x = keras.layers.ZeroPadding2D(((0, 0), (0, SIZE // 2)))(x)
    x = keras.layers.Conv2D(4, 1, activation="relu", use_bias=False, name="looked")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="classes")(x)
    model = keras.Model(inputs, outputs)
    see = model.get_layer("see")
    see.set_weights([np.abs(see.get_weights()[0]), np.zeros(4, np.float32)])
    model.get_layer("looked").set_weights([np.full((1, 1, 4, 4), 0.5, np.float32)])
    model.get_layer("classes").set_weights(
        [np.stack([np.ones(4), -np.ones(4)], axis=1).astype(np.float32), np.zeros(2, np.float32)]
    )
    return model


def renderer_for(model: keras.Model, layers: list[str], channels: int = 64) -> MapRenderer:
    graph = flatten_model(model)
    return MapRenderer(graph.submodel(layers, with_logits=True), lambda x: x / 255.0, channels)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (3, SIZE, SIZE, 3)).astype(np.uint8)


def test_grad_cam_heat_lies_where_the_model_looks(images):
    results = renderer_for(left_half_model(), ["see", "looked"]).run(images)
    for maps in results:
        assert maps.cam_classes[0] == 0  # every positive input favours class 0
        cam = maps.cams[0][1]  # layer "looked", the predicted class
        assert cam.shape == (SIZE, SIZE)
        assert cam[:, : SIZE // 2].sum() > 0
        np.testing.assert_array_equal(cam[:, SIZE // 2 :], 0)


def test_grad_cam_uses_the_asked_class_not_the_channel_count(images):
    """Class 1 only loses from what the model sees: its ReLU'd heat map is empty. (The
    classic heat-map bug used the layer's channel count, 4 here, as the class index.)"""
    results = renderer_for(left_half_model(), ["looked"]).run(images, [1, 1, 1])
    for maps in results:
        assert maps.cam_classes == [0, 1]
        assert maps.cams[0][0].max() > 0
        np.testing.assert_array_equal(maps.cams[1][0], 0)


def small_model() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="a")(inputs)
    x = keras.layers.DepthwiseConv2D(3, strides=2, activation="relu", name="b")(x)
    x = keras.layers.SeparableConv2D(5, 3, activation="relu", name="c")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))


def test_one_pass_equals_a_pass_per_layer(images):
    model = small_model()
    names = ["a", "b", "c"]
    results = renderer_for(model, names).run(images)
    logits_model = flatten_model(model)  # strips the softmax: logits out
    for index, name in enumerate(names):
        single = keras.Model(
            logits_model.inputs[0], [logits_model.tensors[name], logits_model.outputs[0]]
        )
        for image, maps in zip(images, results, strict=True):
            x = tf.constant(image[None], tf.float32) / 255.0
            with tf.GradientTape() as tape:
                features, logits = single(x)
                score = logits[0, int(tf.argmax(logits[0]))]
            grads = tape.gradient(score, features)
            weights = tf.reduce_mean(grads, axis=(1, 2))
            expected = tf.nn.relu(tf.einsum("nhwc,nc->nhw", features, weights))[0].numpy()
            np.testing.assert_allclose(maps.cams[0][index], expected, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(
                maps.activations[index], features[0].numpy(), rtol=1e-5, atol=1e-6
            )
            np.testing.assert_allclose(
                maps.channel_max[index], features[0].numpy().max(axis=(0, 1)), rtol=1e-5
            )
            np.testing.assert_allclose(
                maps.channel_mean[index], features[0].numpy().mean(axis=(0, 1)), rtol=1e-5
            )
            np.testing.assert_allclose(softmax(maps.logits), softmax(logits[0].numpy()), rtol=1e-5)


def test_only_the_configured_number_of_channels_is_kept(images):
    results = renderer_for(small_model(), ["a", "c"], channels=4).run(images)
    assert [a.shape for a in results[0].activations] == [(30, 30, 4), (12, 12, 4)]
    assert [m.shape for m in results[0].channel_max] == [(6,), (5,)]  # stats for all


def test_unit_maps_pick_each_pairs_channel(images):
    graph = flatten_model(small_model())
    model = graph.submodel(["b"])
    features = model(tf.constant(images, tf.float32) / 255.0).numpy()
    pairs = [(0, 5), (2, 0), (0, 1)]
    maps = unit_maps(model, lambda x: x / 255.0, images, pairs)
    assert maps.shape == (3, 14, 14)
    for (index, channel), got in zip(pairs, maps, strict=True):
        np.testing.assert_allclose(got, features[index, :, :, channel], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "channels", "side", "grid"),
    [
        ((16, 16, 64), 64, 160, (8 * 16 + 7, 8 * 16 + 7)),  # 19 px cells: 16 px tiles
        ((4, 4, 100), 64, 160, (8 * 16 + 7, 8 * 16 + 7)),  # 4 px maps enlarged x4
        ((64, 64, 8), 64, 160, (3 * 32 + 2, 3 * 32 + 2)),  # 3x3 grid, halved by block means
        ((1, 1, 1000), 64, 160, (8 * 19 + 7, 8 * 19 + 7)),
    ],
)
def test_activation_grid_shapes(shape, channels, side, grid):
    maps = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    picture = draw.activation_grid(maps, channels, max_side=side)
    assert (picture.height, picture.width) == grid
    assert picture.width <= side


def test_standardized_channels_and_viridis():
    maps = np.zeros((4, 4, 2), np.float32)
    maps[..., 1] = np.arange(16).reshape(4, 4)
    scaled = draw.standardize_channels(maps)
    np.testing.assert_allclose(scaled[..., 0], 128 / 255)  # a constant channel: mid-grey
    assert scaled[..., 1].min() < 0.3 < 0.7 < scaled[..., 1].max()
    colours = draw.colorize(np.array([0.0, 1.0]), "viridis")
    np.testing.assert_array_equal(colours, [[68, 1, 84], [253, 231, 37]])  # matplotlib's ends


def test_a_nearly_constant_channel_is_drawn_flat_not_stretched():
    """A channel whose spread is float noise against its layer's is mid-grey: stretched
    to full contrast it would differ between executors (thread counts) by tens of levels."""
    rng = np.random.default_rng(7)
    maps = rng.normal(size=(8, 8, 3)).astype(np.float32)
    maps[..., 1] = 3.0 + rng.normal(scale=1e-6, size=(8, 8))  # constant up to float noise
    scaled = draw.standardize_channels(maps)
    np.testing.assert_allclose(scaled[..., 1], 128 / 255)
    assert scaled[..., 0].std() > 0.1  # the other channels keep their contrast


def test_float_noise_moves_an_activation_grid_by_at_most_two_levels():
    """The guarantee across executors (README): the same maps up to float32 noise give
    grids within 2 grey levels, however flat some channels are."""
    rng = np.random.default_rng(8)
    maps = rng.gamma(1.0, size=(10, 10, 16)).astype(np.float32)
    maps[..., 3] = 50.0 + rng.normal(scale=1e-4, size=(10, 10))  # "constant" after a sum
    maps[..., 9] = 0.0
    # float32 sums in another order (another thread count): a few ulps of 50
    noisy = maps + rng.normal(scale=2e-5, size=maps.shape).astype(np.float32)
    first = np.asarray(draw.activation_grid(maps, 16), np.int16)
    second = np.asarray(draw.activation_grid(noisy, 16), np.int16)
    assert np.abs(first - second).max() <= 2
