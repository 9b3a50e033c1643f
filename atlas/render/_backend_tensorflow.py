"""What ``keras.ops`` lacks, on TensorFlow (see :mod:`atlas.render.engine`).

Each function here has its twin, with the same arguments and results, in
:mod:`atlas.render._backend_jax`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from atlas.render._tensorflow import keras, tf

NAME = "tensorflow"
VERSION = tf.__version__
# Whether a compiled function is traced again for each new batch size: TensorFlow's
# ``reduce_retracing`` serves every later shape from one trace with unknown dimensions.
FIXED_SHAPES = False


class _ExpectedRetracing(logging.Filter):
    """Each layer gets its own feature model, hence its own trace: expected, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


tf.get_logger().addFilter(_ExpectedRetracing())


def compile(fn: Callable, xla: bool = False) -> Callable:  # noqa: A001 - the backend's verb
    """``fn`` as one graph: a trace with unknown sizes after the second shape."""
    if xla:
        return tf.function(fn, jit_compile=True, reduce_retracing=True, autograph=False)
    return tf.function(fn, reduce_retracing=True, autograph=False)


def value_and_grad(fn: Callable) -> Callable:
    """``fn(x, *args) -> (value, aux)`` -> ``g(x, *args) -> (d value / d x, aux)``."""

    def gradient(x, *args):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value, aux = fn(x, *args)
        return tape.gradient(value, x), aux

    return gradient


def feature_vjp(model: keras.Model, inputs, cotangents: Callable) -> tuple:
    """The outputs of ``model`` (its feature maps, then the logits last) and, for each
    cotangent ``cotangents(logits)`` gives, the gradient of ``<cotangent, logits>`` with
    respect to each feature map (Grad-CAM's gradients: one backward pass per cotangent).

    Returns:
        ``(features, logits, [[d/d feature for each feature] for each cotangent])``.
    """
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        outputs = model(inputs, training=False)
        features, logits = list(outputs[:-1]), outputs[-1]
    grads = [
        tape.gradient(logits, features, output_gradients=cotangent)
        for cotangent in cotangents(logits)
    ]
    del tape
    return features, logits, grads


def logits_jvp(model: keras.Model, inputs, tangent: Callable):
    """``J v``: the change of the logits along ``v = tangent(activations)`` at the one
    inner tensor ``model`` outputs first (``model``: inputs -> [activations, logits]).

    By double backward: the gradient of ``w . logits`` with respect to the activations is
    linear in ``w``; its dot product with ``v``, differentiated by ``w``, is ``J v``.
    """
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(inputs)
            activations, logits = model(inputs, training=False)
            weights = tf.zeros_like(logits)
            outer.watch(weights)
            total = tf.reduce_sum(weights * logits)
        grads = inner.gradient(total, activations)
        along = tf.reduce_sum(grads * tf.stop_gradient(tangent(activations)))
    return outer.gradient(along, weights)


def in_parts(fn: Callable, x, parts: int):
    """``fn`` of ``x`` as ``fn`` of ``parts`` slices of its first axis, concatenated:
    independent ops that TensorFlow runs side by side (its CPU FFT is one thread per op).
    ``fn`` must treat the rows of ``x`` independently."""
    if parts < 2 or (x.shape[0] is not None and x.shape[0] < parts):
        return fn(x)
    count = tf.shape(x)[0]
    sizes = [count // parts] * (parts - 1)
    sizes.append(count - (count // parts) * (parts - 1))
    return tf.concat([fn(part) for part in tf.split(x, tf.stack(sizes), num=parts)], 0)


def irfft2(real, imag, size: int):
    """Inverse real 2-D FFT over the last two axes of a half spectrum, ``size`` square."""
    return tf.signal.irfft2d(tf.complex(real, imag), fft_length=[size, size])


def warp(images, matrices, out_size: int, fill: float):
    """One transform per image (bilinear, ``fill`` outside the picture).

    ``matrices``: ``(batch, 4)`` normalised crop boxes ``(y1, x1, y2, x2)`` or ``(batch,
    8)`` projective matrices (output pixel -> input position), from
    :func:`atlas.render.transforms.batch_transforms`. ``crop_and_resize`` measured about
    4x faster than the projective op for boxes on the 2-core CPU.
    """
    if matrices.shape[-1] == 4:
        return tf.image.crop_and_resize(
            images,
            matrices,
            tf.range(tf.shape(images)[0]),
            (out_size, out_size),
            extrapolation_value=fill,
        )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=matrices,
        output_shape=tf.constant([out_size, out_size], tf.int32),
        fill_value=tf.constant(fill, tf.float32),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def resize_bilinear(images, size: tuple[int, int]):
    """``(n, h, w, c)`` -> ``(n, *size, c)``, bilinear with aligned corners: output pixel
    ``i`` samples input position ``i (h - 1) / (H - 1)`` (corners on corners, as scipy's
    ``zoom(order=1)``; ``keras.ops.image.resize`` centres pixels instead)."""
    return tf.raw_ops.ResizeBilinear(
        images=images, size=list(size), align_corners=True, half_pixel_centers=False
    )


def gpu_memory() -> tuple[int, int | None] | None:
    """(bytes in use, the device's total or None) on the first GPU; None without one."""
    if not tf.config.list_physical_devices("GPU"):
        return None
    return int(tf.config.experimental.get_memory_info("GPU:0")["current"]), None


def device() -> str:
    """The device that renders, in words: the first GPU's name, else the CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    return "GPU " + tf.config.experimental.get_device_details(gpus[0]).get("device_name", "")
