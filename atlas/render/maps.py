"""Activations and Grad-CAM for every selected layer from ONE pass per batch of images.

The classic scripts build one model per layer and run a forward and a backward pass per
layer per image. Here a single multi-output model (every selected layer plus the logits)
runs forward once per batch, and one backward pass per class slot (the top-1 class, and
optionally a second class such as the true breed) yields every layer's gradients at once.
Grad-CAM is taken from the pre-softmax logits; the class index is the one predicted or
asked for (never the layer's channel count, a known bug of the classic heat-map code).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from atlas.render.cams import SCORE_BATCH, ScoreCam, gradient_cams
from atlas.render.device import BatchShapes, forward_batch
from atlas.render.engine import B, keras, ops

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageMaps:
    """What one image looks like to every selected layer.

    Attributes:
        logits: (classes,) pre-softmax scores.
        activations: per layer (height, width, kept channels) feature maps.
        channel_max, channel_mean: per layer (channels,) spatial max / mean of every channel.
        cams: per class slot, per layer (height, width) Grad-CAM maps (ReLU'd, unscaled).
        cam_classes: the class index of each slot.
        method_cams: per CAM method (``cams.METHODS``), the same slots x layers of maps;
            "gradcam" is ``cams`` itself.
    """

    logits: np.ndarray
    activations: list[np.ndarray]
    channel_max: list[np.ndarray]
    channel_mean: list[np.ndarray]
    cams: list[list[np.ndarray]]
    cam_classes: list[int]
    method_cams: dict[str, list[list[np.ndarray]]] = field(default_factory=dict)


class MapRenderer:
    """Runs the multi-output model; build once per model, call per batch.

    Args:
        model: inputs -> [each selected layer's output..., logits].
        preprocess: raw RGB pixels in [0, 255] -> the model's input.
        keep_channels: how many channels of each layer's maps to return.
        score_channels: Score-CAM's ``k`` (Faster Score-CAM's channels per layer and
            image); 0 leaves Score-CAM out.
        probabilities: logits -> class probabilities, as the model's head computes them
            (:meth:`atlas.render.graph.FlatGraph.probabilities`): Score-CAM's weights.
    """

    def __init__(
        self,
        model: keras.Model,
        preprocess: Callable,
        keep_channels: int,
        gradcam: bool = True,
        score_channels: int = 0,
        probabilities: Callable | None = None,
    ):
        self.model = model
        self.preprocess = preprocess
        self.keep_channels = keep_channels
        self.gradcam = gradcam
        self._step = B.compile(self._pass if gradcam else self._features_pass)
        self._shapes = BatchShapes()
        self._score = None
        if gradcam and score_channels > 0:
            inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
            classify = keras.Model(inputs, model.outputs[-1])
            size = int(classify.input_shape[1] or 224)
            batch = forward_batch(classify, size, SCORE_BATCH)
            if probabilities is None:
                raise ValueError("Score-CAM needs the model's probabilities function")
            self._score = ScoreCam(classify, score_channels, batch, probabilities)

    def _statistics(self, features: list) -> tuple[list, list, list]:
        kept = [f[..., : self.keep_channels] for f in features]
        maxima = [ops.max(f, axis=(1, 2)) for f in features]
        means = [ops.mean(f, axis=(1, 2)) for f in features]
        return kept, maxima, means

    def _features_pass(self, images, second):
        """Activations and statistics only: a model without classes has no CAMs."""
        outputs = self.model(self.preprocess(images), training=False)
        features = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
        kept, maxima, means = self._statistics(features)
        count = ops.shape(images)[0]
        empty = ops.zeros((count, 0))
        none = ops.full((count,), -1, dtype="int32")
        return empty, kept, maxima, means, {"gradcam": []}, none, none, empty, []

    def _pass(self, images, asked):
        inputs = self.preprocess(images)

        def classes(logits):
            # -1 asks for no second class: reuse the top-1 so the pass stays uniform
            top1 = ops.cast(ops.argmax(logits, axis=-1), "int32")
            return top1, ops.where(asked < 0, top1, asked)

        def cotangents(logits):
            """One-hot rows of each slot's class: their gradient is the class score's."""
            return [ops.one_hot(c, logits.shape[-1], dtype=logits.dtype) for c in classes(logits)]

        features, logits, grads = B.feature_vjp(self.model, inputs, cotangents)
        top1, second = classes(logits)
        # cams[method][slot][layer]: every gradient method from one backward pass per slot
        cams = {}
        for gradients in grads:
            per_layer = [gradient_cams(f, g) for f, g in zip(features, gradients, strict=True)]
            for method in per_layer[0] if per_layer else ():
                cams.setdefault(method, []).append([maps[method] for maps in per_layer])
        kept, maxima, means = self._statistics(features)
        full = features if self._score is not None else []
        return logits, kept, maxima, means, cams, top1, second, inputs, full

    def run(
        self, images: np.ndarray, second_classes: Sequence[int] | None = None
    ) -> list[ImageMaps]:
        """Analyse a batch of uint8 images (n, height, width, 3) at the model's input size.

        Args:
            images: the batch, already resized.
            second_classes: per image a class for a second Grad-CAM, or -1 for none.
        """
        count = images.shape[0]
        second = (
            np.full(count, -1, np.int32)
            if second_classes is None
            else np.asarray(second_classes, np.int32)
        )
        outputs = self._step(
            ops.convert_to_tensor(self._shapes.pad(images), "float32"),
            ops.convert_to_tensor(self._shapes.pad(second)),
        )
        # back on the host, the padded rows dropped
        logits, kept, maxima, means, cams, top1, second_used, inputs, full = (
            keras.tree.map_structure(lambda tensor: ops.convert_to_numpy(tensor)[:count], outputs)
        )
        if self._score is not None:
            classes = np.stack([top1, second_used], axis=1)
            per_layer = self._score.run(inputs, full, classes)
            cams["scorecam"] = [[layer[slot] for layer in per_layer] for slot in (0, 1)]
        return [
            ImageMaps(
                logits=logits[i],
                activations=[k[i] for k in kept],
                channel_max=[m[i] for m in maxima],
                channel_mean=[m[i] for m in means],
                cams=[[c[i] for c in slot] for slot in cams["gradcam"]],
                cam_classes=[int(top1[i]), int(second_used[i])] if self.gradcam else [],
                method_cams={
                    m: [[c[i] for c in slot] for slot in slots] for m, slots in cams.items()
                },
            )
            for i in range(count)
        ]


def unit_maps(
    model: keras.Model, preprocess: Callable, images: np.ndarray, pairs: Sequence[tuple[int, int]]
) -> np.ndarray:
    """One layer's maps for chosen (image index, channel) pairs: (pairs, height, width).

    Each image goes through the model once, however many of its channels are wanted.

    Args:
        model: inputs -> that layer's output.
        images: (n, height, width, 3) uint8 batch of the distinct images.
        pairs: (index into ``images``, channel) for each map wanted.
    """
    forward = B.compile(lambda x: model(preprocess(x), training=False))
    shapes = BatchShapes()
    features = []
    for start in range(0, len(images), 64):
        batch = images[start : start + 64]
        pixels = ops.convert_to_tensor(shapes.pad(batch), "float32")
        features.append(ops.convert_to_numpy(forward(pixels))[: len(batch)])
    if not features or not pairs:
        return np.zeros((0, 1, 1), np.float32)
    stacked = np.concatenate(features)
    return np.stack([stacked[index, :, :, channel] for index, channel in pairs])
