"""What ``keras.ops`` lacks, on JAX (see :mod:`atlas.render.engine`); the twin of
:mod:`atlas.render._backend_tensorflow`, function for function.

JAX differentiates functions, not tapes: a gradient at an inner tensor (Grad-CAM's, the
atlas labels') is the gradient with respect to a zero "delta" added to that operation's
output while the flat graph runs (:func:`_run_with_deltas`), so the user's model is never
changed and no second model is built.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import keras
import numpy as np
from keras.src.models.functional import operation_fn
from keras.src.utils import module_utils

# JAX looks for a TPU first, on first use, and logs its absence on stderr ("Unable to
# initialize backend 'tpu'"): noise in a CLI whose stderr carries atlas's own lines.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)

NAME = "jax"
VERSION = jax.__version__
# jax.jit traces again for every new shape: callers pad batches to a few sizes.
FIXED_SHAPES = True


def _keep_tensorflow_out() -> None:
    """Keras asks whether TensorFlow is installed (``module_utils.tensorflow.available``,
    which imports it) whenever it serialises a config (any layer's ``get_config``: atlas's
    graph walk reads every layer's) or seeds (``keras.utils.set_random_seed``), only to
    recognise TensorFlow's own objects, which a JAX model does not hold. The answer is "no"
    unless TensorFlow is already loaded: a JAX build never starts it (seconds, and
    hundreds of MB, where it happens to be installed)."""
    if "tensorflow" not in sys.modules:
        module_utils.tensorflow._available = False


_keep_tensorflow_out()


def compile(fn: Callable, xla: bool = False) -> Callable:  # noqa: A001 - the backend's verb
    """``fn`` compiled by XLA (``xla`` changes nothing here: JAX always compiles)."""
    return jax.jit(fn)


def value_and_grad(fn: Callable) -> Callable:
    """``fn(x, *args) -> (value, aux)`` -> ``g(x, *args) -> (d value / d x, aux)``."""
    both = jax.value_and_grad(fn, has_aux=True)

    def gradient(x, *args):
        (_, aux), grad = both(x, *args)
        return grad, aux

    return gradient


def _run_with_deltas(model: keras.Model, inputs, deltas: dict[int, object]):
    """``model``'s outputs with ``deltas[id(op)]`` added to the output of each such op."""

    def wrapped(op):
        call = operation_fn(op, training=False)
        if id(op) not in deltas:
            return call
        return lambda *args, **kwargs: call(*args, **kwargs) + deltas[id(op)]

    return model._run_through_graph(model._standardize_inputs(inputs), operation_fn=wrapped)


def _output_ops(model: keras.Model, count: int) -> list:
    return [tensor._keras_history.operation for tensor in model.outputs[:count]]


def _zeros_like_outputs(model: keras.Model, inputs, count: int) -> list:
    shapes = jax.eval_shape(lambda x: model(x, training=False), inputs)
    return [jnp.zeros(s.shape, s.dtype) for s in list(shapes)[:count]]


def feature_vjp(model: keras.Model, inputs, cotangents: Callable) -> tuple:
    """See :func:`atlas.render._backend_tensorflow.feature_vjp`."""
    count = len(model.outputs) - 1
    ops = _output_ops(model, count)

    def forward(deltas):
        outputs = _run_with_deltas(model, inputs, dict(zip(map(id, ops), deltas, strict=True)))
        return outputs[-1], list(outputs[:-1])

    logits, pullback, features = jax.vjp(
        forward, _zeros_like_outputs(model, inputs, count), has_aux=True
    )
    grads = [pullback(cotangent)[0] for cotangent in cotangents(logits)]
    return features, logits, grads


def logits_jvp(model: keras.Model, inputs, tangent: Callable):
    """See :func:`atlas.render._backend_tensorflow.logits_jvp`."""
    (op,) = _output_ops(model, 1)

    def forward(delta):
        activations, logits = _run_with_deltas(model, inputs, {id(op): delta})
        return activations, logits

    (activations, _), linear = jax.linearize(forward, _zeros_like_outputs(model, inputs, 1)[0])
    return linear(jax.lax.stop_gradient(tangent(activations)))[1]


def in_parts(fn: Callable, x, parts: int):
    """See :func:`atlas.render._backend_tensorflow.in_parts`: ``fn(x)`` whole here (XLA
    schedules one program; the parts would only add copies)."""
    return fn(x)


def irfft2(real, imag, size: int):
    """Inverse real 2-D FFT over the last two axes of a half spectrum, ``size`` square."""
    return jnp.fft.irfft2(jax.lax.complex(real, imag), s=(size, size))


def _boxes_to_matrices(boxes, in_size: int, out_size: int):
    """``crop_and_resize`` boxes as the projective matrices that sample the same points."""
    y1, x1, y2, x2 = (boxes[:, i] for i in range(4))
    span = (in_size - 1) / max(out_size - 1, 1)
    zeros = jnp.zeros_like(y1)
    return jnp.stack(
        [(x2 - x1) * span, zeros, x1 * (in_size - 1), zeros, (y2 - y1) * span,
         y1 * (in_size - 1), zeros, zeros],
        axis=1,
    )  # fmt: skip


def warp(images, matrices, out_size: int, fill: float):
    """See :func:`atlas.render._backend_tensorflow.warp`: boxes become the projective
    matrices that sample the same points, and every output pixel is the bilinear mix of
    its four neighbours in the input, ``fill`` where a neighbour lies outside it (as
    TensorFlow's projective op samples; for boxes, as ``crop_and_resize``: ``fill`` where
    the point itself lies outside, its neighbours clamped to the edge)."""
    batch, height, width, channels = images.shape
    boxes = matrices.shape[-1] == 4
    if boxes:
        matrices = _boxes_to_matrices(matrices, height, out_size)
    grid = jnp.arange(out_size, dtype=jnp.float32)
    u, v = grid[None, None, :], grid[None, :, None]  # output x (columns), y (rows)
    m = [matrices[:, k, None, None] for k in range(8)]
    denominator = m[6] * u + m[7] * v + 1.0
    x = (m[0] * u + m[1] * v + m[2]) / denominator  # (batch, out, out)
    y = (m[3] * u + m[4] * v + m[5]) / denominator
    x0, y0 = jnp.floor(x), jnp.floor(y)
    flat = images.reshape(batch, height * width, channels)
    total = 0.0
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1.0 - jnp.abs(x - xi)) * (1.0 - jnp.abs(y - yi))
            inside = boxes | ((xi >= 0) & (xi <= width - 1) & (yi >= 0) & (yi <= height - 1))
            index = (jnp.clip(yi, 0, height - 1) * width + jnp.clip(xi, 0, width - 1)).astype(
                jnp.int32
            )
            picked = jnp.take_along_axis(flat, index.reshape(batch, -1, 1), axis=1)
            picked = picked.reshape(batch, out_size, out_size, channels)
            total = total + weight[..., None] * jnp.where(inside[..., None], picked, fill)
    if boxes:  # crop_and_resize: a point outside the picture is all fill, else clamped
        outside = (x < 0) | (x > width - 1) | (y < 0) | (y > height - 1)
        total = jnp.where(outside[..., None], fill, total)
    return total


def _aligned_weights(out: int, size: int) -> np.ndarray:
    """``(out, size)``: row ``i`` mixes the two inputs around ``i (size - 1) / (out - 1)``
    (TensorFlow's ``align_corners`` scale; 0 for a single output)."""
    scale = np.float32((size - 1) / (out - 1)) if out > 1 else np.float32(0.0)
    position = np.arange(out, dtype=np.float32) * scale
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    weights = np.zeros((out, size), np.float32)
    np.add.at(weights, (np.arange(out), low), 1.0 - (position - low))
    np.add.at(weights, (np.arange(out), high), position - low)
    return weights


def resize_bilinear(images, size: tuple[int, int]):
    """See :func:`atlas.render._backend_tensorflow.resize_bilinear`: one interpolation
    matrix per axis (exact float32 products, never TF32 on a GPU)."""
    rows = jnp.asarray(_aligned_weights(size[0], images.shape[1]))
    cols = jnp.asarray(_aligned_weights(size[1], images.shape[2]))
    highest = jax.lax.Precision.HIGHEST
    tall = jnp.einsum("Hh,nhwc->nHwc", rows, images, precision=highest)
    return jnp.einsum("Ww,nHwc->nHWc", cols, tall, precision=highest)


def gpu_memory() -> tuple[int, int | None] | None:
    """(bytes in use, the device's total or None) on the first GPU; None without one."""
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        return None
    stats = gpus[0].memory_stats() or {}
    return int(stats.get("bytes_in_use", 0)), stats.get("bytes_limit")


def device() -> str:
    """The device that renders, in words: the first GPU's name, else the CPU."""
    first = jax.devices()[0]
    return "CPU" if first.platform == "cpu" else f"GPU {first.device_kind}"
