"""Deletion and insertion on a model that only looks at the left half of its input."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from atlas.render.cams import Feed  # noqa: E402
from atlas.render.faith import curve_inputs, faithfulness  # noqa: E402

SIZE = 16


def left_eye_model() -> keras.Model:
    """Class 0's logit grows with the texture (horizontal differences of the red channel,
    which a blur wipes out) in the left half of the input; class 1's is fixed."""
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(2, (1, 2), activation="relu", use_bias=False)
    x = keras.layers.Cropping2D(((0, 0), (0, SIZE // 2)))(conv(inputs))
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(x))
    kernel = np.zeros((1, 2, 3, 2), np.float32)
    kernel[0, :, 0, 0] = [1.0, -1.0]
    kernel[0, :, 0, 1] = [-1.0, 1.0]
    conv.set_weights([kernel])
    dense.set_weights([np.array([[0.1, 0.0]] * 2, np.float32), np.array([0.0, 6.0], np.float32)])
    return model


def test_curve_inputs_remove_and_restore_the_most_salient_pixels_first():
    photo = np.full((4, 4, 3), 200, np.uint8)
    blurred = np.full((4, 4, 3), 50, np.uint8)
    saliency = np.arange(16, dtype=np.float32).reshape(4, 4)[::-1]  # top-left most salient
    deletion, insertion = curve_inputs(photo, saliency, blurred, steps=4)
    assert deletion.shape == insertion.shape == (3, 4, 4, 3)
    assert (deletion[0, 0] == 0).all() and (deletion[0, 1:] == 200).all()  # 4 of 16 pixels
    assert (insertion[1, :2] == 200).all() and (insertion[1, 2:] == 50).all()  # 8 of 16


def test_curve_inputs_match_a_pixel_by_pixel_loop_with_ties():
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, (7, 9, 3)).astype(np.float32)
    blurred = rng.integers(0, 256, (7, 9, 3)).astype(np.float32)
    saliency = rng.integers(0, 4, (7, 9)).astype(np.float32)  # many ties: stable order
    steps = 5
    order = np.argsort(-saliency.ravel(), kind="stable")
    for step in range(1, steps):
        chosen = order[: round(step * order.size / steps)]
        deleted, inserted = photo.reshape(-1, 3).copy(), blurred.reshape(-1, 3).copy()
        deleted[chosen] = 0
        inserted[chosen] = photo.reshape(-1, 3)[chosen]
        deletion, insertion = curve_inputs(photo, saliency, blurred, steps)
        np.testing.assert_array_equal(deletion[step - 1], deleted.reshape(photo.shape))
        np.testing.assert_array_equal(insertion[step - 1], inserted.reshape(photo.shape))
    assert deletion.dtype == insertion.dtype == np.float32


def test_a_map_on_what_the_model_sees_deletes_faster_and_inserts_faster():
    model = left_eye_model()
    forward = tf.function(lambda x: tf.nn.softmax(model(x), axis=-1))
    photo = np.full((SIZE, SIZE, 3), 255, np.uint8)
    photo[::2, ::2] = 0  # texture, so that the blurred copy differs from the photo
    left = np.zeros((SIZE, SIZE), np.float32)
    left[:, : SIZE // 2] = np.linspace(1.0, 0.5, SIZE // 2)
    right = left[:, ::-1].copy()
    maps = {"gradcam": [left, right]}
    result = faithfulness(lambda f: f.finish(), Feed(forward), photo, maps, class_index=0)
    deletion, insertion = result["deletion"]["gradcam"], result["insertion"]["gradcam"]
    assert deletion[0] < deletion[1] - 0.05  # deleting what it sees drops the class at once
    assert insertion[0] > insertion[1] + 0.05
    assert all(0.0 <= v <= 1.0 for v in deletion + insertion)
