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

from atlas.render._tensorflow import keras, tf
from atlas.render.cams import SCORE_BATCH, ScoreCam, gradient_cams
from atlas.render.device import forward_batch

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
        self._step = tf.function(
            self._pass if gradcam else self._features_pass, reduce_retracing=True
        )
        self._score = None
        if gradcam and score_channels > 0:
            inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
            classify = keras.Model(inputs, model.outputs[-1])
            size = int(classify.input_shape[1] or 224)
            batch = forward_batch(classify, size, SCORE_BATCH)
            if probabilities is None:
                raise ValueError("Score-CAM needs the model's probabilities function")
            self._score = ScoreCam(classify, score_channels, batch, probabilities)

    def _features_pass(self, images: tf.Tensor, second: tf.Tensor):
        """Activations and statistics only: a model without classes has no CAMs."""
        outputs = self.model(self.preprocess(images), training=False)
        features = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
        kept = [f[..., : self.keep_channels] for f in features]
        maxima = [tf.reduce_max(f, axis=(1, 2)) for f in features]
        means = [tf.reduce_mean(f, axis=(1, 2)) for f in features]
        empty = tf.zeros((tf.shape(images)[0], 0))
        none = tf.fill([tf.shape(images)[0]], -1)
        return empty, kept, maxima, means, {"gradcam": []}, none, none, empty, []

    def _pass(self, images: tf.Tensor, second: tf.Tensor):
        inputs = self.preprocess(images)
        with tf.GradientTape(persistent=True) as tape:
            outputs = self.model(inputs, training=False)
            features, logits = list(outputs[:-1]), outputs[-1]
            top1 = tf.argmax(logits, axis=-1, output_type=tf.int32)
            # -1 means "no second class": reuse the top-1 so the pass stays uniform
            second = tf.where(second < 0, top1, second)
            top_score = tf.reduce_sum(tf.gather(logits, top1, batch_dims=1))
            second_score = tf.reduce_sum(tf.gather(logits, second, batch_dims=1))
        # cams[method][slot][layer]: every gradient method from one backward pass per slot
        cams = {}
        for score in (top_score, second_score):
            gradients = tape.gradient(score, features)
            per_layer = [gradient_cams(f, g) for f, g in zip(features, gradients, strict=True)]
            for method in per_layer[0] if per_layer else ():
                cams.setdefault(method, []).append([maps[method] for maps in per_layer])
        del tape
        kept = [f[..., : self.keep_channels] for f in features]
        maxima = [tf.reduce_max(f, axis=(1, 2)) for f in features]
        means = [tf.reduce_mean(f, axis=(1, 2)) for f in features]
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
        logits, kept, maxima, means, cams, top1, second_used, inputs, full = self._step(
            tf.constant(images, tf.float32), tf.constant(second)
        )
        logits = logits.numpy()
        kept = [k.numpy() for k in kept]
        maxima = [m.numpy() for m in maxima]
        means = [m.numpy() for m in means]
        cams = {m: [[c.numpy() for c in slot] for slot in slots] for m, slots in cams.items()}
        top1, second_used = top1.numpy(), second_used.numpy()
        if self._score is not None:
            classes = np.stack([top1, second_used], axis=1)
            per_layer = self._score.run(inputs.numpy(), [f.numpy() for f in full], classes)
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
    forward = tf.function(lambda x: model(preprocess(x), training=False), reduce_retracing=True)
    features = [
        forward(tf.constant(images[start : start + 64], tf.float32)).numpy()
        for start in range(0, len(images), 64)
    ]
    if not features or not pairs:
        return np.zeros((0, 1, 1), np.float32)
    stacked = np.concatenate(features)
    return np.stack([stacked[index, :, :, channel] for index, channel in pairs])
