"""What a unit picture optimises: its unit's mean (up or down) and Lucid's diversity term.

Every picture of a batch has its own target: a unit of one of the feature model's
outputs, a sign (+1: drive the unit's mean up, the channel picture; -1: down, the
negative picture) and a diversity group (-1: none). Pictures of one group (the 4 diversity
pictures of a unit) are optimised together with Lucid's ``objectives.diversity``: each
picture's objective is its unit's mean minus ``weight`` times the mean cosine similarity
between the Gram matrix of its layer's activations and those of the other pictures of its
group. All of this is one traced step, so positive, negative and diversity pictures mix in
one batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from atlas.render._tensorflow import tf

log = logging.getLogger(__name__)


def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def gram_cosines(activations: tf.Tensor) -> tf.Tensor:
    """Pairwise cosine similarity of the pictures' Gram matrices, as in Lucid.

    Args:
        activations: ``(M, H, W, C)``.

    Returns:
        ``(M, M)``: entry ``(i, j)`` is the cosine of the flattened ``C x C`` Gram matrices
        (``F^T F`` of the ``(H*W, C)`` activations) of pictures ``i`` and ``j``.
    """
    activations = tf.cast(activations, tf.float32)
    shape = tf.shape(activations)
    flat = tf.reshape(activations, (shape[0], -1, shape[3]))
    grams = tf.matmul(flat, flat, transpose_a=True)
    grams = tf.math.l2_normalize(tf.reshape(grams, (shape[0], -1)), axis=1, epsilon=1e-10)
    return tf.matmul(grams, grams, transpose_b=True)


def _group_penalty(activations: tf.Tensor, groups: tf.Tensor) -> tf.Tensor:
    """Sum over pictures of their mean Gram cosine with the other pictures of their group."""
    cosines = gram_cosines(activations)
    count = tf.shape(groups)[0]
    same = tf.cast(tf.equal(groups[:, None], groups[None, :]), tf.float32)
    same = same * (1.0 - tf.eye(count))
    others = tf.maximum(tf.reduce_sum(same, axis=1), 1.0)
    return tf.reduce_sum(tf.reduce_sum(cosines * same, axis=1) / others)


def diversity_penalty(outputs, layers: tf.Tensor, groups: tf.Tensor) -> tf.Tensor:
    """The diversity term of a batch: for every picture in a group, the mean cosine
    similarity of its Gram matrix with those of its group's other pictures, summed.

    Args:
        outputs: the feature model's output, or its list of outputs.
        layers: ``(batch,)`` int32, each picture's output.
        groups: ``(batch,)`` int32, each picture's group (-1: none). A group's pictures
            read the same output.

    Returns:
        a scalar float32.
    """
    total = tf.constant(0.0)
    for index, output in enumerate(_as_list(outputs)):
        chosen = tf.where(tf.logical_and(tf.equal(layers, index), groups >= 0))[:, 0]
        total += _group_penalty(tf.gather(output, chosen), tf.gather(groups, chosen))
    return total


def batch_loss(outputs, means: tf.Tensor, targets: tuple, weight: float) -> tf.Tensor:
    """The quantity a step ascends: each picture's signed unit mean, less ``weight`` times
    the diversity term where the batch has diversity groups.

    Args:
        outputs: the feature model's output(s).
        means: ``(batch,)`` each picture's unit mean.
        targets: ``(units, layers, signs, groups)`` per picture.
        weight: the diversity term's weight (lambda); 0 leaves it out of the trace.
    """
    _, layers, signs, groups = targets[:4]
    total = tf.reduce_sum(signs * means)
    if not weight:
        return total
    penalty = tf.cond(
        tf.reduce_any(groups >= 0),
        lambda: diversity_penalty(outputs, layers, groups),
        lambda: tf.constant(0.0),
    )
    return total - weight * penalty


def direction_scores(outputs, directions: tf.Tensor, power: float) -> tf.Tensor:
    """The activation atlas' cell objective (Lucid's ``direction_neuron_cossim_S``): at
    the centre position of the (one) output, the activation's dot product with the
    picture's whitened direction times its cosine with it (at least 0.1) to ``power``.

    Args:
        outputs: the feature model's output (or a one-element list).
        directions: ``(batch, C)`` unit-length whitened directions.
        power: the cosine's exponent.

    Returns:
        ``(batch,)``.
    """
    output = tf.cast(_as_list(outputs)[0], tf.float32)
    shape = tf.shape(output)
    centre = output[:, shape[1] // 2, shape[2] // 2, :]
    dot = tf.reduce_sum(centre * directions, axis=1)
    cosine = dot / (tf.norm(centre, axis=1) + 1e-4)
    return dot * tf.maximum(cosine, 0.1) ** power


@dataclass(frozen=True)
class Batch:
    """One batch's pictures: per picture its unit, output, seed, sign (+1 up, -1 down) and
    diversity group (-1: none; a group's pictures are contiguous and never split), and
    for atlas cells (:func:`direction_scores`) its whitened direction (``directions``
    empty: every picture drives a unit's mean)."""

    units: list[int]
    layers: list[int]
    seeds: list[int]
    signs: list[float]
    groups: list[int]
    directions: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.units)

    def part(self, start: int, end: int) -> Batch:
        return Batch(
            *(values[start:end] for values in self._lists()), list(self.directions[start:end])
        )

    def padded(self, size: int) -> Batch:
        """Filled up to ``size`` by repeating the last picture outside any group."""
        pad = size - len(self)
        units, layers, seeds, signs, _ = (values + values[-1:] * pad for values in self._lists())
        directions = list(self.directions) + list(self.directions[-1:]) * pad
        return Batch(units, layers, seeds, signs, self.groups + [-1] * pad, directions)

    def targets(self) -> tuple[tf.Tensor, ...]:
        targets = (
            tf.constant(self.units, tf.int32),
            tf.constant(self.layers, tf.int32),
            tf.constant(self.signs, tf.float32),
            tf.constant(self.groups, tf.int32),
        )
        if not self.directions:
            return targets
        return (*targets, tf.constant(np.stack(self.directions), tf.float32))

    def _lists(self) -> tuple[list, ...]:
        return self.units, self.layers, self.seeds, self.signs, self.groups


def group_batches(
    groups: Sequence[int], layers: Sequence[int], batch_size: int
) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each batch: up to ``batch_size`` pictures, never splitting a
    diversity group (a batch ends before a group that would not fit).

    Raises:
        ValueError: a group is not contiguous, mixes outputs or exceeds ``batch_size``.
    """
    spans: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        if group >= 0:
            spans.setdefault(group, []).append(index)
    for group, where in spans.items():
        if where[-1] - where[0] + 1 != len(where) or len({layers[i] for i in where}) > 1:
            raise ValueError(f"diversity group {group} is not contiguous or mixes outputs")
        if len(where) > batch_size:
            raise ValueError(
                f"diversity group {group} has {len(where)} pictures, more than a "
                f"batch of {batch_size}"
            )
    start, count = 0, len(groups)
    while start < count:
        end = min(start + batch_size, count)
        if end < count and groups[end] >= 0 and groups[end - 1] == groups[end]:
            end = spans[groups[end]][0]  # the group starts after start: it fits whole
        yield start, end
        start = end
