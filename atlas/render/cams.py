"""Class activation maps: Grad-CAM, Grad-CAM++, LayerCAM and (Faster) Score-CAM.

The three gradient methods share one backward pass: each is a different weighting of the
same feature maps ``A`` (n, h, w, c) and gradients ``g = dS/dA`` of a class score ``S``
(the pre-softmax logit). The formulas follow tf-keras-vis (``gradcam.py``,
``gradcam_plus_plus.py``, ``layercam.py``), which the tests compare against:

- Grad-CAM (Selvaraju et al. 2017): ``relu(sum_c mean_hw(g_c) A_c)``;
- Grad-CAM++ (Chattopadhay et al. 2018) with the exponential-score closed form:
  ``alpha = g^2 / (2 g^2 + g^3 sum_hw(A))``, normalised to sum 1 over space per channel
  (as tf-keras-vis does), ``w_c = sum_hw(alpha relu(g))``, ``relu(sum_c w_c A_c)``; the
  factor ``exp(S)`` of the closed form scales a whole map and is left out (maps are shown
  scaled to their peak, and ``exp`` of a logit overflows);
- LayerCAM (Jiang et al. 2021): ``relu(sum_c relu(g_c) * A_c)``, weights per position.

Score-CAM (Wang et al. 2020) needs no gradient but a forward pass per channel: each
channel, upsampled to the input and scaled to [0, 1], masks the (preprocessed) input, and
its weight is the class probability of the masked input. Faster Score-CAM keeps only the
``k`` channels whose maps vary most (standard deviation over space), which is how atlas
caps its cost; the page says so with ``k``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from atlas.plan.jobs import CAM_METHODS
from atlas.render.engine import B, ops

log = logging.getLogger(__name__)

METHODS = CAM_METHODS
GRADIENT_METHODS = METHODS[:3]
# Masked inputs per forward pass of Score-CAM and of the deletion/insertion curves, at
# most (fewer for a large model: render.device.forward_batch).
SCORE_BATCH = 256
DEFAULT_CHANNELS = 6  # render.scorecam_channels; see BENCHMARKS.md for its cost


def gradient_cams(feature, gradient) -> dict:
    """Grad-CAM, Grad-CAM++ and LayerCAM of one layer: (n, h, w) each, ReLU'd, unscaled.

    Args:
        feature: the layer's output ``A``, (n, h, w, c).
        gradient: ``dS/dA`` of each image's class score, same shape.
    """
    weights = ops.mean(gradient, axis=(1, 2))
    gradcam = ops.relu(ops.einsum("nhwc,nc->nhw", feature, weights))
    squared = ops.square(gradient)
    cubed = squared * gradient
    total = ops.sum(feature, axis=(1, 2), keepdims=True)
    denominator = 2.0 * squared + cubed * total
    # alpha = 0 where g = 0, and where 2 g^2 + g^3 sum(A) happens to vanish (g sum(A) = -2)
    alphas = ops.divide_no_nan(squared, denominator)
    norm = ops.sum(alphas, axis=(1, 2), keepdims=True)
    alphas /= norm + ops.cast(norm == 0.0, norm.dtype)
    plus_weights = ops.sum(alphas * ops.relu(gradient), axis=(1, 2))
    gradcampp = ops.relu(ops.einsum("nhwc,nc->nhw", feature, plus_weights))
    layercam = ops.relu(ops.sum(feature * ops.relu(gradient), axis=-1))
    return {"gradcam": gradcam, "gradcampp": gradcampp, "layercam": layercam}


def top_variance_channels(feature: np.ndarray, k: int) -> np.ndarray:
    """Per image, the ``k`` channels whose maps have the largest standard deviation
    (Faster Score-CAM), highest first: (n, k) indices. Ties go to the lower channel."""
    spread = feature.reshape(feature.shape[0], -1, feature.shape[-1]).std(axis=1)
    k = min(k, feature.shape[-1])
    return np.argsort(-spread, axis=1, kind="stable")[:, :k]


def upsample_masks(maps, size: tuple[int, int]):
    """Channel maps (n, h, w, k) -> masks (n, H, W, k) in [0, 1]: bilinear with aligned
    corners (as scipy's ``zoom(order=1)`` in tf-keras-vis; ``keras.ops.image.resize``
    centres pixels instead, hence :func:`B.resize_bilinear`), then min-max per channel."""
    resized = B.resize_bilinear(maps, tuple(size))
    low = ops.min(resized, axis=(1, 2), keepdims=True)
    high = ops.max(resized, axis=(1, 2), keepdims=True)
    return (resized - low) / (high - low + 1e-7)


class ScoreCam:
    """Faster Score-CAM for every layer of a batch: the masked inputs of all layers and
    images go through the classifier in fixed-size batches (traced once).

    Args:
        classify: preprocessed input -> logits (a Keras model or any callable).
        probabilities: logits -> class probabilities (:meth:`FlatGraph.probabilities`).
        channels: ``k``, the channels kept per image and layer.
        batch: masked inputs per forward pass (at most :data:`SCORE_BATCH`).
    """

    def __init__(
        self,
        classify: Callable,
        channels: int,
        batch: int,
        probabilities: Callable,
    ):
        self.channels = channels
        self.batch = batch
        self._forward = B.compile(lambda x: probabilities(classify(x, training=False)))

    def run(
        self, inputs: np.ndarray, features: Sequence[np.ndarray], classes: np.ndarray
    ) -> list[np.ndarray]:
        """Score-CAM maps, (slots, n, h, w) per layer, ReLU'd and unscaled.

        Args:
            inputs: the preprocessed batch (n, H, W, 3) the model was given.
            features: per layer, that layer's output (n, h, w, c).
            classes: (n, slots) the class index each map slot explains.
        """
        count, size = inputs.shape[0], inputs.shape[1:3]
        pixels = ops.convert_to_tensor(inputs, "float32")[:, None]  # (n, 1, H, W, 3)
        feed = Feed(self._forward, self.batch)
        plan = []
        for feature in features:
            chosen = top_variance_channels(feature, self.channels)
            maps = np.take_along_axis(feature, chosen[:, None, None, :], axis=-1)
            masks = upsample_masks(ops.convert_to_tensor(maps, "float32"), size)  # (n, H, W, k)
            # (n, k, H, W, 1) * (n, 1, H, W, 3): one masked copy per image and channel
            masked = ops.transpose(masks, (0, 3, 1, 2))[..., None] * pixels
            feed.add(ops.reshape(masked, (-1, *inputs.shape[1:])))
            plan.append((maps, chosen.shape[1]))
        probabilities = feed.finish()
        results, offset = [], 0
        for maps, k in plan:
            block = probabilities[offset : offset + count * k].reshape(count, k, -1)
            offset += count * k
            # weights (n, k, slots): each masked input's probability of each slot's class
            weights = np.take_along_axis(block, classes[:, None, :], axis=-1)
            cams = np.maximum(np.einsum("nhwk,nks->snhw", maps, weights, optimize=True), 0.0)
            results.append(cams.astype(np.float32))
        return results


class Feed:
    """Masked inputs in, class probabilities out, through full batches of ``batch`` (at
    most SCORE_BATCH) so that memory stays bounded; the last one is padded to the next
    power of two (a few masks of one photo through a large model cost a few forward
    passes, not a full batch), so the function is traced for a handful of batch sizes."""

    def __init__(self, forward: Callable, batch: int = SCORE_BATCH):
        self._forward = forward
        self._batch = batch
        self._pending: list = []
        self._outputs: list[np.ndarray] = []

    def add(self, batch) -> None:
        self._pending.append(batch)
        while sum(int(p.shape[0]) for p in self._pending) >= self._batch:
            joined = ops.concatenate(self._pending, axis=0)
            self._run(joined[: self._batch])
            self._pending = [joined[self._batch :]]

    def finish(self) -> np.ndarray:
        rest = ops.concatenate(self._pending, axis=0) if self._pending else None
        if rest is not None and rest.shape[0]:
            filled = int(rest.shape[0])
            size = min(self._batch, 1 << (filled - 1).bit_length())
            padding = ops.zeros((size - filled, *rest.shape[1:]), rest.dtype)
            self._run(ops.concatenate([rest, padding], axis=0), keep=filled)
        return np.concatenate(self._outputs) if self._outputs else np.zeros((0, 0), np.float32)

    def _run(self, batch, keep: int | None = None) -> None:
        self._outputs.append(ops.convert_to_numpy(self._forward(batch))[: keep or self._batch])
