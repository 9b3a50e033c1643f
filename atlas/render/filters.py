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

import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from atlas.config.methods import (  # noqa: F401  (re-exported for callers of render_units)
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
from atlas.data.images import encode_webp
from atlas.plan.jobs import ENCODING
from atlas.render import ascent
from atlas.render.device import (  # noqa: F401
    MAX_BATCH,
    BatchShapes,
    auto_batch_size,
    with_precision,
)
from atlas.render.engine import B, keras, ops
from atlas.render.objectives import Batch, group_batches

log = logging.getLogger(__name__)


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
        dead: the gradient was exactly zero at every step from this start: a unit that is
            constant, or one this start left with no gradient (a ReLU before it closed
            everywhere); :mod:`atlas.render.pictures` retries the latter.
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


def as_published(picture: np.ndarray) -> np.ndarray:
    """A unit picture as the site shows it: encoded as the site's WebP and decoded (lossy
    WebP moves a unit's activation by up to a third on a two-step picture)."""
    from PIL import Image

    data = encode_webp(picture, quality=ENCODING["unit"]["quality"])
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def fixed_input_size(model: keras.Model) -> int | None:
    """The side of the model's square input, or None if it accepts any size."""
    height, width = model.input_shape[1:3]
    if height is None or width is None:
        return None
    if height != width:
        raise ValueError(f"only square inputs are supported, got {height}x{width}")
    return int(height)


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
        preprocess: Callable,
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
        self._shapes = BatchShapes()  # the batch shapes traced so far
        self.model = feature_model
        self.params = params
        self.model_size = fixed_input_size(feature_model)
        method = ascent.ClassicAscent if isinstance(params, ClassicParams) else ascent.LucidAscent
        self.ascent = method(
            params,
            with_precision(feature_model, precision),
            preprocess,
            self.model_size,
            diversity_weight,
        )
        self.picture_size = self.ascent.schedule()[-1][0]
        self.grey = feature_model.inputs[0].shape[-1] == 1
        size = eval_size or self.model_size or self.picture_size
        self.evaluate = B.compile(
            lambda images, units, layers: ascent.unit_means(
                feature_model(preprocess(ascent.resize_to_model(images, size)), training=False),
                units,
                layers,
            )
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
        directions: Sequence[np.ndarray] | None = None,
        bold_start: bool = False,
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
            directions: per picture, a whitened direction of output 0's channels: the
                picture ascends :func:`atlas.render.objectives.direction_scores` (an
                activation atlas cell; ``units`` are then ignored and ``own_activation``
                is 0) instead of its unit's mean.
            bold_start: start every picture :data:`atlas.render.ascent.BOLD_START` times
                as far from grey (the retry of a unit that did not move).

        Yields:
            one list of :class:`UnitResult` per batch, in the order of ``units``.

        Raises:
            ValueError: the lists differ in length, a unit or layer is out of range, or a
                group is not contiguous or larger than a batch.
        """
        count = len(units)
        batch = Batch(
            [int(u) for u in units],
            [0] * count if layers is None else [int(k) for k in layers],
            [int(s) for s in seeds],
            [1.0] * count if signs is None else [float(x) for x in signs],
            [-1] * count if groups is None else [int(g) for g in groups],
            [] if directions is None else [np.asarray(d, np.float32) for d in directions],
        )
        lengths = {len(values) for values in batch._lists()}
        lengths |= {len(batch.directions)} if directions is not None else set()
        if len(lengths) != 1:
            raise ValueError(
                f"{count} units, {len(seeds)} seeds, {len(batch.layers)} layers, "
                f"{len(batch.signs)} signs, {len(batch.groups)} groups"
            )
        self._check_range(batch)
        batch_size = batch_size or auto_batch_size(self.model, self.model_size or self.picture_size)
        log.debug("rendering %d units, %r, batch %d", count, self.params, batch_size)
        for start, end in group_batches(batch.groups, batch.layers, batch_size):
            yield self._batch(batch.part(start, end), batch_size, count, max_steps, bold_start)

    def _check_range(self, batch: Batch) -> None:
        bad = [
            (k, u)
            for k, u in zip(batch.layers, batch.units, strict=True)
            if not 0 <= k < len(self.channels) or not 0 <= u < self.channels[k]
        ]
        if bad:
            k, _ = bad[0]
            raise ValueError(
                f"units {[u for _, u in bad[:5]]} out of range for "
                f"{self.channels[k] if 0 <= k < len(self.channels) else 0} "
                f"channels (output {k})"
            )

    def _padded_size(self, count: int, batch_size: int, total: int) -> int:
        """The batch size ``count`` pictures run as.

        TensorFlow: ``batch_size`` for a short batch of a longer render or once that size
        was traced, else ``count`` (its trace with unknown sizes serves any batch). JAX
        compiles every step anew for each batch size (:data:`B.FIXED_SHAPES`): the
        smallest size compiled so far that fits, else the next power of two (at most
        ``batch_size``), so one renderer compiles a few sizes at most.
        """
        if count >= batch_size:
            return count
        if not B.FIXED_SHAPES:
            return batch_size if batch_size < total or batch_size in self._shapes.sizes else count
        if batch_size < total:
            return batch_size
        return self._shapes.rows(count, most=batch_size)

    def _batch(
        self, batch: Batch, batch_size: int, total: int, max_steps: int | None, bold: bool
    ) -> list[UnitResult]:
        began = time.perf_counter()
        count = len(batch)
        size = self._padded_size(count, batch_size, total)
        if size > count:
            # A short batch would trace every step function again (seconds each);
            # repeating its last unit to fill the batch is cheaper. The padding is in no
            # diversity group, so it changes no picture; it is dropped below.
            batch = batch.padded(size)
        self._shapes.sizes.add(len(batch))
        pixels, objective, taken, alive = ascent.ascend(self.ascent, batch, max_steps, bold)
        pictures = self.ascent.picture(pixels)
        if self.grey:  # a grey model sees the picture's luma: show that
            luma = np.rint(pictures.astype(np.float32) @ np.float32([0.299, 0.587, 0.114]))
            pictures = np.repeat(luma.astype(np.uint8)[..., None], 3, axis=-1)
        # The ratio the pages show is measured on the picture they show: as published.
        shown = np.stack([as_published(picture) for picture in pictures])
        own = (
            np.zeros(len(batch))
            if batch.directions
            else ops.convert_to_numpy(
                self.evaluate(
                    ops.convert_to_tensor(shown, "float32"),
                    ops.convert_to_tensor(np.asarray(batch.units, np.int32)),
                    ops.convert_to_tensor(np.asarray(batch.layers, np.int32)),
                )
            )
        )
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
    preprocess: Callable,
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
