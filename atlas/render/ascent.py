"""The gradient ascent behind unit pictures: the classic Keras recipe and the Lucid-style
regularised method as two parameterisations of one optimisation loop (:func:`ascend`).

See :mod:`atlas.render.filters` for the renderer that batches units through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from atlas.config.methods import ClassicParams, LucidParams
from atlas.render import objectives, param, transforms
from atlas.render.engine import B, keras, ops
from atlas.render.objectives import Batch

GREY = 127.5
# A retry's start (``bold=True``) is this many times as far from grey as the usual one:
# on the default MobileNet, 92 units of conv_dw_12/13 had no gradient from Lucid's faint
# start (the previous pointwise channel they read was closed everywhere); x5 moved 40 of
# them, x20 moved 87 (x50: the same 87, lower activation ratios).
BOLD_START = 20.0


def unit_means(activations, units, layers):
    """Spatial mean of channel ``units[i]`` of output ``layers[i]`` for image ``i``.

    Args:
        activations: the feature model's output, or its list of outputs.
        units, layers: ``(batch,)`` int32.

    Returns:
        ``(batch,)``. Every output is computed for every image, but only image ``i``'s
        own channel reaches its objective. Each output is first reduced to its channel
        means, ``(batch, channels)``; the means of all outputs, side by side, are picked
        from once: gathering from the full maps instead (and its scatter in the backward
        pass) cost ~3x the step on MobileNet. The pick is a one-hot mask: exact, and the
        same static shape on every backend.
    """
    if not isinstance(activations, list | tuple):
        activations = [activations]
    # the cast is a no-op unless the model computes in mixed precision
    means = [ops.mean(ops.cast(output, "float32"), axis=(1, 2)) for output in activations]
    widths = [int(m.shape[-1]) for m in means]
    offsets = np.cumsum([0] + widths[:-1]).astype(np.int32)
    columns = ops.take(ops.convert_to_tensor(offsets), layers) + units
    table = means[0] if len(means) == 1 else ops.concatenate(means, axis=1)
    picked = ops.equal(columns[:, None], ops.arange(sum(widths), dtype="int32")[None, :])
    return ops.sum(ops.where(picked, table, 0.0), axis=1)


def resize_to_model(images, size: int | None):
    if size is None or images.shape[1] == size:
        return images
    return ops.image.resize(images, (size, size), interpolation="bilinear", antialias=True)


class Ascent:
    """What a method supplies to :func:`_ascend`: state, schedule, one step, pictures."""

    def __init__(
        self,
        model: keras.Model,
        preprocess: Callable,
        model_size: int | None,
        diversity_weight: float = 0.0,
    ):
        self.model, self.preprocess, self.model_size = model, preprocess, model_size
        self.diversity_weight = diversity_weight
        self.cossim_pow = 2.0  # atlas cells' cosine exponent (objectives.direction_scores)
        self._steps: dict[int | str, Callable] = {}

    def objective(self, pixels, units, layers):
        """Forward pass: each image's unit mean, pixels resampled to the model size."""
        model_input = self.preprocess(resize_to_model(pixels, self.model_size))
        return unit_means(self.model(model_input, training=False), units, layers)

    def step_function(self, size: int) -> Callable:
        """One compiled step per picture size (classic: one for all sizes).

        On TensorFlow a second shape gives a trace with unknown dimensions that serves
        every later batch (and, for the classic step, every later size): tracing a VGG16
        gradient costs about as much as a step at 400 px. JAX compiles once per shape
        (:data:`B.FIXED_SHAPES`): the renderer pads batches to a few sizes.
        """
        key = size if isinstance(self, LucidAscent) else 0
        if key not in self._steps:
            self._steps[key] = B.compile(self.make_step(size))
        return self._steps[key]

    def final_objective(self, pixels, units, layers):
        """Compiled :meth:`objective` (eager Keras calls cost ~0.3 s on MobileNet)."""
        if "objective" not in self._steps:
            self._steps["objective"] = B.compile(self.objective)
        return self._steps["objective"](pixels, units, layers)

    def step_inputs(self, step_index: int) -> tuple:
        """Per-step tensors besides the state (the random transforms)."""
        return ()

    def loss(self, model_input, targets: tuple) -> tuple:
        """What a step ascends (see :func:`objectives.batch_loss`) and each unit's mean."""
        outputs = self.model(model_input, training=False)
        if len(targets) > 4:  # atlas cells: whitened directions at the centre
            means = objectives.direction_scores(outputs, targets[4], self.cossim_pow)
        else:
            means = unit_means(outputs, targets[0], targets[1])
        return objectives.batch_loss(outputs, means, targets, self.diversity_weight), means


class ClassicAscent(Ascent):
    def __init__(self, params: ClassicParams, *args):
        super().__init__(*args)
        self.params = params

    def schedule(self) -> list[tuple[int, int]]:
        return [(size, self.params.steps_per_size) for size in self.params.sizes(self.model_size)]

    def start(self, seeds: Sequence[int], bold: bool = False):
        size = self.schedule()[0][0]
        noise = [np.random.default_rng(seed).random((size, size, 3)) for seed in seeds]
        width = min(255.0, self.params.noise * BOLD_START) if bold else self.params.noise
        return ops.convert_to_tensor(128.0 + (np.stack(noise) - 0.5) * width, "float32")

    def resize(self, state, size: int):
        if state.shape[1] == size:
            return state
        return ops.image.resize(state, (size, size), interpolation="bicubic")

    def make_step(self, size: int) -> Callable:
        step_size = self.params.step_size
        gradient = B.value_and_grad(
            lambda images, targets: self.loss(
                self.preprocess(resize_to_model(images, self.model_size)), targets
            )
        )

        def step(images, targets, step_index):
            grad, objective = gradient(images, targets)
            rms = ops.sqrt(ops.mean(ops.square(grad), axis=(1, 2, 3), keepdims=True))
            moved = ops.any(ops.not_equal(grad, 0.0), axis=(1, 2, 3))
            return images + step_size * grad / (rms + 1e-5), objective, moved

        return step

    def pixels(self, state):
        return state

    def picture(self, pixels: np.ndarray) -> np.ndarray:
        """Display: standardise each picture, then contrast around mid-grey."""
        mean = pixels.mean(axis=(1, 2, 3), keepdims=True)
        std = pixels.std(axis=(1, 2, 3), keepdims=True)
        shown = (pixels - mean) / (std + 1e-5) * self.params.contrast + 0.5
        return (np.clip(shown, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class LucidAscent(Ascent):
    BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-8

    def __init__(self, params: LucidParams, *args):
        super().__init__(*args)
        self.params = params
        self.matrices: np.ndarray | None = None

    def schedule(self) -> list[tuple[int, int]]:
        return [(self.params.size, self.params.steps)]

    def start(self, seeds: Sequence[int], bold: bool = False) -> tuple:
        p = self.params
        out_size = self.model_size or p.size
        self.matrices = transforms.batch_transforms(
            seeds, p.steps, p.jitter, p.scales, p.angles, p.size, out_size
        )
        start = param.initial_variables(list(seeds), p.size, p.fft)
        variables = ops.convert_to_tensor(start * np.float32(BOLD_START) if bold else start)
        return variables, ops.zeros_like(variables), ops.zeros_like(variables)

    def resize(self, state: tuple, size: int) -> tuple:
        return state

    def make_step(self, size: int) -> Callable:
        p, out_size = self.params, self.model_size or self.params.size
        beta_1, beta_2, epsilon = self.BETA_1, self.BETA_2, self.EPSILON
        # the small-field recipe (methods.layer_params): no transform, no resampling
        still = not p.jitter and set(p.scales) <= {1.0} and not any(p.angles) and size == out_size

        def total(variables, targets, matrices):
            pixels = param.to_pixels(variables, size, p.fft, p.decorrelate)
            warped = pixels if still else transforms.warp(pixels, matrices, out_size, GREY)
            return self.loss(self.preprocess(warped), targets)

        gradient = B.value_and_grad(total)

        def step(state, targets, step_index, matrices):
            variables, first, second = state
            grad, objective = gradient(variables, targets, matrices)
            # Adam is elementwise, so each image's update depends on its own gradient only.
            first = beta_1 * first + (1 - beta_1) * grad
            second = beta_2 * second + (1 - beta_2) * ops.square(grad)
            t = ops.cast(step_index, "float32") + 1.0
            update = (first / (1 - beta_1**t)) / (ops.sqrt(second / (1 - beta_2**t)) + epsilon)
            moved = ops.any(ops.not_equal(grad, 0.0), axis=tuple(range(1, len(grad.shape))))
            return (variables + p.learning_rate * update, first, second), objective, moved

        return step

    def step_inputs(self, step_index: int) -> tuple:
        return (ops.convert_to_tensor(self.matrices[step_index]),)

    def pixels(self, state: tuple):
        return param.to_pixels(state[0], self.params.size, self.params.fft, self.params.decorrelate)

    def picture(self, pixels: np.ndarray) -> np.ndarray:
        return (np.clip(pixels, 0.0, 255.0) + 0.5).astype(np.uint8)


def ascend(
    ascent: Ascent, batch: Batch, max_steps: int | None, bold: bool = False
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """The optimisation loop shared by both methods; ``bold``: from a start
    :data:`BOLD_START` times as far from grey (a retry of units that did not move).

    Returns:
        float pixels ``(batch, H, W, 3)``, final objectives (each picture's unit mean),
        steps taken, and whether each image's gradient was ever non-zero.
    """
    targets = batch.targets()
    unit_tensor, layer_tensor = targets[0], targets[1]
    state = ascent.start(batch.seeds, bold)
    alive = ops.zeros(len(batch), "bool")
    objective = None
    taken = 0
    for size, steps in ascent.schedule():
        state = ascent.resize(state, size)
        step = ascent.step_function(size)
        for _ in range(steps):
            if max_steps is not None and taken >= max_steps:
                break
            extra = ascent.step_inputs(taken)
            state, objective, moved = step(state, targets, _int32(taken), *extra)
            alive = ops.logical_or(alive, moved)  # stays on the device: no sync per step
            taken += 1
    pixels = ascent.pixels(state)
    if objective is None:
        objective = ascent.final_objective(pixels, unit_tensor, layer_tensor)
    # As in the classic script, the final objective is the one the last step measured
    # (before its update): a separate forward pass for it cost ~10 % of a short render.
    return (
        ops.convert_to_numpy(pixels),
        ops.convert_to_numpy(objective),
        taken,
        ops.convert_to_numpy(alive),
    )


def _int32(value: int):
    """A step index as a tensor: a Python number would be traced anew at every step."""
    return ops.convert_to_tensor(np.int32(value))
