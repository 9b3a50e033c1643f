"""Filter (unit) visualization: gradient ascent in input space, one unit per batch image.

Every image of a batch maximises its own unit (the loss is the sum over images of the
spatial mean of ``act[i, :, :, unit_i]``), so one forward/backward pass serves the whole
batch. The feature model may have several outputs (several conv layers of one network):
image ``i`` then maximises unit ``unit_i`` of output ``layer_i``, so one traced step serves
every layer of a model (tracing a MobileNet step cost ~1.3 s per layer) and a batch can
mix layers (small layers no longer run as small batches). Images never interact
(BatchNorm runs in inference mode, gradients are normalised per image, every random number
comes from the image's own seed), so a unit renders the same picture alone or in a batch,
up to float noise from batched BLAS.

Two methods:

* :class:`ClassicParams`: the Keras recipe (``conv_filter_visualization.py`` for VGG16,
  keras.io "Visualizing what convnets learn"): grey noise, gradient normalised by its RMS,
  progressive upscaling, display by standardising the picture's contrast.
* :class:`LucidParams`: regularised, after Lucid's optvis: 1/f Fourier parameterization,
  decorrelated colour, sigmoid, random jitter/scale/rotation every step, Adam.

Pictures are optimised in raw RGB pixel space ([0, 255]); ``preprocess`` runs inside the
gradient, so step sizes and pictures are comparable across models.

Fixed-size models (built with e.g. ``input_shape=(128, 128, 3)``): the picture is always
resampled inside the graph to the model's input size, so the model sees exactly what it
was trained on. The classic schedule is scaled so that its final size is the model size
(earlier, smaller stages are bilinearly upsampled for the model: the gradient reaches the
coarse pixels honestly, no detail is invented); the Lucid picture is rendered at
``LucidParams.size`` and the per-step random transform warps it onto the model grid.
Fully-convolutional models (``input_shape=(None, None, 3)``) are fed the picture as is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from atlas._tensorflow import keras, tf
from atlas.render import objectives, param, transforms
from atlas.render.device import MAX_BATCH, auto_batch_size, with_precision  # noqa: F401
from atlas.render.objectives import Batch, group_batches
from atlas.render.settings import (  # noqa: F401  (re-exported for callers of render_units)
    DEFAULT_CLASSIC,
    DEFAULT_LUCID,
    DEFAULT_METHOD,
    DIVERSITY_WEIGHT,
    LUCID_FULL,
    VGG_CLASSIC,
    ClassicParams,
    LucidParams,
    default_params_for,
)

log = logging.getLogger(__name__)


class _ExpectedRetracing(logging.Filter):
    """Each layer gets its own feature model, hence its own trace: expected, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


tf.get_logger().addFilter(_ExpectedRetracing())

GREY = 127.5
@dataclass(frozen=True)
class UnitResult:
    """One rendered unit.

    Attributes:
        unit: channel index in the layer.
        layer: index of the layer among the feature model's outputs (0 for one output).
        picture: uint8 ``(H, W, 3)`` RGB picture.
        objective: the unit's final spatial-mean activation on what was optimised.
        steps: gradient steps taken.
        seconds: wall time of the batch divided by its size.
        dead: the gradient was exactly zero at every step (e.g. a ReLU that never fires).
        own_activation: the unit's spatial-mean activation on ``picture`` at the model's
            input size (the build divides it by the unit's best dataset activation).
    """

    unit: int
    picture: np.ndarray
    objective: float
    steps: int
    seconds: float
    dead: bool
    own_activation: float
    layer: int = 0


def fixed_input_size(model: keras.Model) -> int | None:
    """The side of the model's square input, or None if it accepts any size."""
    height, width = model.input_shape[1:3]
    if height is None or width is None:
        return None
    if height != width:
        raise ValueError(f"only square inputs are supported, got {height}x{width}")
    return int(height)


def _unit_means(activations, units: tf.Tensor, layers: tf.Tensor) -> tf.Tensor:
    """Spatial mean of channel ``units[i]`` of output ``layers[i]`` for image ``i``.

    Args:
        activations: the feature model's output, or its list of outputs.
        units, layers: ``(batch,)`` int32.

    Returns:
        ``(batch,)``. Every output is computed for every image, but only image ``i``'s
        own channel reaches its objective. Each output is first reduced to its channel
        means, ``(batch, channels)``; the means of all outputs, side by side, are indexed
        once: gathering from the full maps instead (and its scatter in the backward pass)
        cost ~3x the step on MobileNet.
    """
    if not isinstance(activations, list | tuple):
        activations = [activations]
    # the cast is a no-op unless the model computes in mixed precision
    means = [tf.reduce_mean(tf.cast(output, tf.float32), axis=[1, 2]) for output in activations]
    offsets = np.cumsum([0] + [int(m.shape[-1]) for m in means[:-1]]).astype(np.int32)
    columns = tf.gather(tf.constant(offsets), layers) + units
    table = means[0] if len(means) == 1 else tf.concat(means, axis=1)
    return tf.gather(table, columns, axis=1, batch_dims=1)


def _resize(images: tf.Tensor, size: int | None) -> tf.Tensor:
    if size is None or images.shape[1] == size:
        return images
    return tf.image.resize(images, (size, size), method="bilinear", antialias=True)


class _Ascent:
    """What a method supplies to :func:`_ascend`: state, schedule, one step, pictures."""

    def __init__(self, model: keras.Model, preprocess: Callable, model_size: int | None,
                 diversity_weight: float = 0.0):
        self.model, self.preprocess, self.model_size = model, preprocess, model_size
        self.diversity_weight = diversity_weight
        self._steps: dict[int | str, Callable] = {}

    def objective(self, pixels: tf.Tensor, units: tf.Tensor, layers: tf.Tensor) -> tf.Tensor:
        """Forward pass: each image's unit mean, pixels resampled to the model size."""
        model_input = self.preprocess(_resize(pixels, self.model_size))
        return _unit_means(self.model(model_input, training=False), units, layers)

    def step_function(self, size: int) -> Callable:
        """One compiled step per picture size (classic: one for all sizes).

        With ``reduce_retracing`` a second shape gives a trace with unknown dimensions that
        serves every later batch (and, for the classic step, every later size): tracing a
        VGG16 gradient costs about as much as a step at 400 px.
        """
        key = size if isinstance(self, _LucidAscent) else 0
        if key not in self._steps:
            self._steps[key] = tf.function(
                self.make_step(size), reduce_retracing=True, autograph=False
            )
        return self._steps[key]

    def final_objective(self, pixels: tf.Tensor, units: tf.Tensor, layers: tf.Tensor
                        ) -> tf.Tensor:
        """Compiled :meth:`objective` (eager Keras calls cost ~0.3 s on MobileNet)."""
        if "objective" not in self._steps:
            self._steps["objective"] = tf.function(
                self.objective, reduce_retracing=True, autograph=False
            )
        return self._steps["objective"](pixels, units, layers)

    def step_inputs(self, step_index: int) -> tuple:
        """Per-step tensors besides the state (the random transforms)."""
        return ()

    def loss(self, model_input: tf.Tensor, targets: tuple) -> tuple[tf.Tensor, tf.Tensor]:
        """What a step ascends (see :func:`objectives.batch_loss`) and each unit's mean."""
        outputs = self.model(model_input, training=False)
        means = _unit_means(outputs, targets[0], targets[1])
        return objectives.batch_loss(outputs, means, targets, self.diversity_weight), means


class _ClassicAscent(_Ascent):
    def __init__(self, params: ClassicParams, *args):
        super().__init__(*args)
        self.params = params

    def schedule(self) -> list[tuple[int, int]]:
        return [(size, self.params.steps_per_size) for size in self.params.sizes(self.model_size)]

    def start(self, seeds: Sequence[int]) -> tf.Tensor:
        size = self.schedule()[0][0]
        noise = [np.random.default_rng(seed).random((size, size, 3)) for seed in seeds]
        return tf.constant(128.0 + (np.stack(noise) - 0.5) * self.params.noise, tf.float32)

    def resize(self, state: tf.Tensor, size: int) -> tf.Tensor:
        return state if state.shape[1] == size else tf.image.resize(state, (size, size), "bicubic")

    def make_step(self, size: int) -> Callable:
        step_size = self.params.step_size

        def step(images, targets, step_index):
            with tf.GradientTape() as tape:
                tape.watch(images)
                model_input = self.preprocess(_resize(images, self.model_size))
                total, objective = self.loss(model_input, targets)
            grad = tape.gradient(total, images)
            rms = tf.sqrt(tf.reduce_mean(tf.square(grad), axis=[1, 2, 3], keepdims=True))
            moved = tf.reduce_any(grad != 0, axis=[1, 2, 3])
            return images + step_size * grad / (rms + 1e-5), objective, moved

        return step

    def pixels(self, state: tf.Tensor) -> tf.Tensor:
        return state

    def picture(self, pixels: np.ndarray) -> np.ndarray:
        """Display: standardise each picture, then contrast around mid-grey."""
        mean = pixels.mean(axis=(1, 2, 3), keepdims=True)
        std = pixels.std(axis=(1, 2, 3), keepdims=True)
        shown = (pixels - mean) / (std + 1e-5) * self.params.contrast + 0.5
        return (np.clip(shown, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class _LucidAscent(_Ascent):
    BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-8

    def __init__(self, params: LucidParams, *args):
        super().__init__(*args)
        self.params = params
        self.matrices: np.ndarray | None = None

    def schedule(self) -> list[tuple[int, int]]:
        return [(self.params.size, self.params.steps)]

    def start(self, seeds: Sequence[int]) -> tuple[tf.Tensor, ...]:
        p = self.params
        out_size = self.model_size or p.size
        self.matrices = transforms.batch_transforms(
            seeds, p.steps, p.jitter, p.scales, p.angles, p.size, out_size
        )
        variables = tf.constant(param.initial_variables(list(seeds), p.size, p.fft))
        return variables, tf.zeros_like(variables), tf.zeros_like(variables)

    def resize(self, state: tuple, size: int) -> tuple:
        return state

    def make_step(self, size: int) -> Callable:
        p, out_size = self.params, self.model_size or self.params.size
        beta_1, beta_2, epsilon = self.BETA_1, self.BETA_2, self.EPSILON

        def step(state, targets, step_index, matrices):
            variables, first, second = state
            with tf.GradientTape() as tape:
                tape.watch(variables)
                pixels = param.to_pixels(variables, size, p.fft, p.decorrelate)
                warped = transforms.warp(pixels, matrices, out_size, GREY)
                total, objective = self.loss(self.preprocess(warped), targets)
            grad = tape.gradient(total, variables)
            # Adam is elementwise, so each image's update depends on its own gradient only.
            first = beta_1 * first + (1 - beta_1) * grad
            second = beta_2 * second + (1 - beta_2) * tf.square(grad)
            t = tf.cast(step_index, tf.float32) + 1.0
            update = (first / (1 - beta_1**t)) / (tf.sqrt(second / (1 - beta_2**t)) + epsilon)
            moved = tf.reduce_any(tf.reshape(grad != 0, (tf.shape(grad)[0], -1)), axis=1)
            return (variables + p.learning_rate * update, first, second), objective, moved

        return step

    def step_inputs(self, step_index: int) -> tuple:
        return (tf.constant(self.matrices[step_index]),)

    def pixels(self, state: tuple) -> tf.Tensor:
        return param.to_pixels(state[0], self.params.size, self.params.fft, self.params.decorrelate)

    def picture(self, pixels: np.ndarray) -> np.ndarray:
        return (np.clip(pixels, 0.0, 255.0) + 0.5).astype(np.uint8)


def _ascend(
    ascent: _Ascent, batch: Batch, max_steps: int | None
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """The optimisation loop shared by both methods.

    Returns:
        float pixels ``(batch, H, W, 3)``, final objectives (each picture's unit mean),
        steps taken, and whether each image's gradient was ever non-zero.
    """
    targets = batch.targets()
    unit_tensor, layer_tensor = targets[0], targets[1]
    state = ascent.start(batch.seeds)
    alive = tf.zeros(len(batch), tf.bool)
    objective = None
    taken = 0
    for size, steps in ascent.schedule():
        state = ascent.resize(state, size)
        step = ascent.step_function(size)
        for _ in range(steps):
            if max_steps is not None and taken >= max_steps:
                break
            extra = ascent.step_inputs(taken)
            state, objective, moved = step(state, targets, tf.constant(taken), *extra)
            alive = tf.logical_or(alive, moved)  # stays on the device: no sync per step
            taken += 1
    pixels = ascent.pixels(state)
    if objective is None:
        objective = ascent.final_objective(pixels, unit_tensor, layer_tensor)
    # As in the classic script, the final objective is the one the last step measured
    # (before its update): a separate forward pass for it cost ~10 % of a short render.
    return pixels.numpy(), objective.numpy(), taken, alive.numpy()


class UnitRenderer:
    """Renders units of one feature model with one method; keeps its traced functions.

    Build one per model and method and call :meth:`render` for any units of any of its
    outputs: the step is traced once (a MobileNet step costs ~1.3 s to trace), not once
    per layer or per call. Channel, negative and diversity pictures share that step.

    Args:
        feature_model: model from the network input to one or more conv layers' NHWC
            outputs (several: image ``i`` maximises a unit of output ``layers[i]``).
        params: the method and its settings.
        preprocess: raw RGB pixels in [0, 255] (float32 batch) to the model's input.
        eval_size: input size at which ``own_activation`` is measured; defaults to the
            model's fixed input size, else the picture size.
        precision: ``float32`` or ``mixed_bfloat16``: the ascent's model computes in
            bfloat16 (pictures, Adam state, objectives and ``own_activation`` stay float32).
        diversity_weight: lambda of the diversity term of grouped pictures
            (:mod:`atlas.render.objectives`).

    Raises:
        ValueError: an output of the model is not 4-D.
    """

    def __init__(
        self,
        feature_model: keras.Model,
        params: ClassicParams | LucidParams,
        preprocess: Callable[[tf.Tensor], tf.Tensor],
        eval_size: int | None = None,
        precision: str = "float32",
        diversity_weight: float = DIVERSITY_WEIGHT,
    ):
        shapes = feature_model.output_shape
        shapes = shapes if isinstance(shapes, list) else [shapes]
        for shape in shapes:
            if len(shape) != 4:
                raise ValueError(f"feature model output must be 4-D NHWC, got {shape}")
        self.channels = [int(shape[-1]) for shape in shapes]
        self._batch_sizes: set[int] = set()  # the batch shapes traced so far
        self.model = feature_model
        self.params = params
        self.model_size = fixed_input_size(feature_model)
        method = _ClassicAscent if isinstance(params, ClassicParams) else _LucidAscent
        self.ascent = method(params, with_precision(feature_model, precision), preprocess,
                             self.model_size, diversity_weight)
        self.picture_size = self.ascent.schedule()[-1][0]
        size = eval_size or self.model_size or self.picture_size
        self.evaluate = tf.function(
            lambda images, units, layers: _unit_means(
                feature_model(preprocess(_resize(images, size)), training=False), units, layers
            ),
            reduce_retracing=True,
            autograph=False,
        )

    def render(
        self,
        units: Sequence[int],
        seeds: Sequence[int],
        layers: Sequence[int] | None = None,
        *,
        signs: Sequence[float] | None = None,
        groups: Sequence[int] | None = None,
        batch_size: int | None = None,
        max_steps: int | None = None,
    ) -> Iterator[list[UnitResult]]:
        """Render filter visualizations, yielding each finished batch.

        Args:
            units: channel indices to visualise.
            seeds: one seed per unit; all of a unit's randomness comes from it.
            layers: per unit, the index of its output (default: all 0).
            signs: per picture, +1 to drive its unit up (default), -1 to drive it down.
            groups: per picture, its diversity group (-1, the default: none). A group's
                pictures are optimised together (never split across batches) and must be
                contiguous and read one output.
            batch_size: images per batch; None chooses by :func:`auto_batch_size`.
            max_steps: cap on the total gradient steps (tests).

        Yields:
            one list of :class:`UnitResult` per batch, in the order of ``units``.

        Raises:
            ValueError: the lists differ in length, a unit or layer is out of range, or a
                group is not contiguous or larger than a batch.
        """
        count = len(units)
        batch = Batch([int(u) for u in units],
                      [0] * count if layers is None else [int(k) for k in layers],
                      [int(s) for s in seeds],
                      [1.0] * count if signs is None else [float(x) for x in signs],
                      [-1] * count if groups is None else [int(g) for g in groups])
        lengths = {len(values) for values in batch._lists()}
        if len(lengths) != 1:
            raise ValueError(f"{count} units, {len(seeds)} seeds, {len(batch.layers)} layers, "
                             f"{len(batch.signs)} signs, {len(batch.groups)} groups")
        self._check_range(batch)
        batch_size = batch_size or auto_batch_size(self.model, self.model_size or
                                                   self.picture_size)
        log.debug("rendering %d units, %r, batch %d", count, self.params, batch_size)
        for start, end in group_batches(batch.groups, batch.layers, batch_size):
            yield self._batch(batch.part(start, end), batch_size, count, max_steps)

    def _check_range(self, batch: Batch) -> None:
        bad = [(k, u) for k, u in zip(batch.layers, batch.units, strict=True)
               if not 0 <= k < len(self.channels) or not 0 <= u < self.channels[k]]
        if bad:
            k, _ = bad[0]
            raise ValueError(f"units {[u for _, u in bad[:5]]} out of range for "
                             f"{self.channels[k] if 0 <= k < len(self.channels) else 0} "
                             f"channels (output {k})")

    def _batch(self, batch: Batch, batch_size: int, total: int, max_steps: int | None
               ) -> list[UnitResult]:
        began = time.perf_counter()
        count = len(batch)
        if count < batch_size and (batch_size < total or batch_size in self._batch_sizes):
            # A short batch would trace every step function again (seconds each);
            # repeating its last unit to fill the batch is cheaper. The padding is in no
            # diversity group, so it changes no picture; it is dropped below.
            batch = batch.padded(batch_size)
        self._batch_sizes.add(len(batch))
        pixels, objective, taken, alive = _ascend(self.ascent, batch, max_steps)
        pictures = self.ascent.picture(pixels)
        own = self.evaluate(tf.constant(pictures, tf.float32), tf.constant(batch.units),
                            tf.constant(batch.layers)).numpy()
        seconds = (time.perf_counter() - began) / count
        return [
            UnitResult(
                unit=batch.units[i],
                picture=pictures[i],
                objective=float(objective[i]),
                steps=taken,
                seconds=seconds,
                dead=bool(taken > 0 and not alive[i]),
                own_activation=float(own[i]),
                layer=batch.layers[i],
            )
            for i in range(count)
        ]


def render_units(
    feature_model: keras.Model,
    units: Sequence[int],
    seeds: Sequence[int],
    params: ClassicParams | LucidParams,
    preprocess: Callable[[tf.Tensor], tf.Tensor],
    *,
    batch_size: int | None = None,
    max_steps: int | None = None,
    eval_size: int | None = None,
    layers: Sequence[int] | None = None,
    precision: str = "float32",
) -> Iterator[list[UnitResult]]:
    """Render filter visualizations with a fresh :class:`UnitRenderer` (traced anew).

    See :class:`UnitRenderer` and :meth:`UnitRenderer.render` for the arguments.
    """
    renderer = UnitRenderer(feature_model, params, preprocess, eval_size, precision)
    yield from renderer.render(units, seeds, layers, batch_size=batch_size, max_steps=max_steps)
