"""Small models of the kinds users bring, built by tests (seeded, a few thousand weights).

Each builder returns an unsaved ``keras.Model``; ``save(model, folder, name)`` writes it
as ``<name>.keras``. The backbone is a tiny Functional model (conv -> BatchNorm -> ReLU,
a depthwise conv, a pointwise conv) that the classifiers nest, as a pets model nests a
pretrained MobileNet.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

SIZE = 32  # input height and width of every model here


def backbone(seed: int = 0, name: str = "backbone") -> keras.Model:
    """conv (no activation) -> BN -> ReLU -> depthwise (relu) -> pointwise conv."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    x = keras.layers.Conv2D(8, 1, name="pw")(x)
    return keras.Model(inputs, x, name=name)


def head(x, outputs: int, activation: str | None, scale: float = 1.0):
    """Global pooling and a Dense layer whose kernel is multiplied by ``scale`` (a peaked
    softmax is far from a uniform one)."""
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    dense = keras.layers.Dense(outputs, activation=activation, name="classes")
    y = dense(x)
    if scale != 1.0:
        kernel, bias = dense.get_weights()
        dense.set_weights([kernel * scale, bias])
    return y


def ops_nested(outputs: int = 37, seed: int = 0) -> keras.Model:
    """``inputs / 127.5 - 1.0`` (keras.ops nodes), the backbone called with training=False,
    ``Dense(outputs, softmax)``: the usual Keras transfer-learning model."""
    inner = backbone(seed)
    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = inputs / 127.5 - 1.0
    x = inner(x, training=False)
    return keras.Model(inputs, head(x, outputs, "softmax"), name="ops_nested")


def rescaling_logits(outputs: int = 37, seed: int = 1) -> keras.Model:
    """A Rescaling layer, the nested backbone and a Dense head without activation."""
    inner = backbone(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)
    x = inner(x, training=False)
    return keras.Model(inputs, head(x, outputs, None), name="rescaling_logits")


def sequential_softmax(outputs: int = 37, seed: int = 2) -> keras.Model:
    """A Sequential CNN ending in a Softmax layer."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, activation="relu", name="c2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(outputs, name="logits"),
            keras.layers.Softmax(name="probabilities"),
        ],
        name="sequential_softmax",
    )


def feature_extractor(seed: int = 3) -> keras.Model:
    """The backbone and global pooling: no classification head."""
    inner = backbone(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(inner(x))
    return keras.Model(inputs, x, name="features")


def cat_dog(seed: int = 4) -> keras.Model:
    """Rescaling, the nested backbone, Dense(2, softmax): cat or dog."""
    inner = backbone(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inner(keras.layers.Rescaling(1 / 255.0)(inputs))
    return keras.Model(inputs, head(x, 2, "softmax"), name="cat_dog")


def save(model: keras.Model, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.keras"
    model.save(path)
    return path


def random_pixels(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """``n`` images of raw pixels in [0, 255]."""
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
