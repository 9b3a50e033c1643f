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

from atlas.render.engine import B, ops

log = logging.getLogger(__name__)


def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def gram_cosines(activations):
    """Pairwise cosine similarity of the pictures' Gram matrices, as in Lucid.

    Args:
        activations: ``(M, H, W, C)``.

    Returns:
        ``(M, M)``: entry ``(i, j)`` is the cosine of the flattened ``C x C`` Gram matrices
        (``F^T F`` of the ``(H*W, C)`` activations) of pictures ``i`` and ``j``.
    """
    activations = ops.cast(activations, "float32")
    count, channels = ops.shape(activations)[0], activations.shape[3]
    flat = ops.reshape(activations, (count, -1, channels))
    grams = ops.reshape(ops.matmul(ops.transpose(flat, (0, 2, 1)), flat), (count, -1))
    # TensorFlow's l2_normalize: x / sqrt(max(|x|^2, 1e-10))
    grams = grams * ops.rsqrt(ops.maximum(ops.sum(ops.square(grams), axis=1, keepdims=True), 1e-10))
    return ops.matmul(grams, ops.transpose(grams))


def _group_penalty(activations, groups, members):
    """Sum over ``members`` (a mask) of their mean Gram cosine with the other members of
    their group."""
    cosines = gram_cosines(activations)
    index = ops.arange(ops.shape(groups)[0])
    same = (
        ops.equal(groups[:, None], groups[None, :])
        & members[:, None]
        & members[None, :]
        & ops.not_equal(index[:, None], index[None, :])
    )
    same = ops.cast(same, "float32")
    others = ops.maximum(ops.sum(same, axis=1), 1.0)
    return ops.sum(ops.sum(cosines * same, axis=1) / others)


def diversity_penalty(outputs, layers, groups):
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
    total = ops.convert_to_tensor(0.0, "float32")
    for index, output in enumerate(_as_list(outputs)):
        members = ops.logical_and(ops.equal(layers, index), groups >= 0)
        if B.FIXED_SHAPES:
            # One shape per compilation: every picture's Gram matrix, the pairs masked,
            # and none where this output has no member (a conditional, not a zero mask).
            total += ops.cond(
                ops.any(members),
                lambda output=output, members=members: _group_penalty(output, groups, members),
                lambda: ops.convert_to_tensor(0.0, "float32"),
            )
        else:
            # The members alone: Gram matrices of the whole batch at every output made the
            # step ~25 % slower on MobileNet (a batch of 64 with 12 members per output).
            chosen = ops.nonzero(members)[0]
            picked = ops.take(groups, chosen, axis=0)
            total += _group_penalty(ops.take(output, chosen, axis=0), picked, picked >= 0)
    return total


def batch_loss(outputs, means, targets: tuple, weight: float):
    """The quantity a step ascends: each picture's signed unit mean, less ``weight`` times
    the diversity term where the batch has diversity groups.

    Args:
        outputs: the feature model's output(s).
        means: ``(batch,)`` each picture's unit mean.
        targets: ``(units, layers, signs, groups)`` per picture.
        weight: the diversity term's weight (lambda); 0 leaves it out of the trace.
    """
    _, layers, signs, groups = targets[:4]
    total = ops.sum(signs * means)
    if not weight:
        return total
    penalty = ops.cond(
        ops.any(groups >= 0),
        lambda: diversity_penalty(outputs, layers, groups),
        lambda: ops.convert_to_tensor(0.0, "float32"),
    )
    return total - weight * penalty


def direction_scores(outputs, directions, power: float):
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
    output = ops.cast(_as_list(outputs)[0], "float32")
    shape = ops.shape(output)  # sizes unknown while TensorFlow traces a free-size model
    centre = output[:, shape[1] // 2, shape[2] // 2, :]
    dot = ops.sum(centre * directions, axis=1)
    cosine = dot / (ops.norm(centre, axis=1) + 1e-4)
    return dot * ops.maximum(cosine, 0.1) ** power


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

    def targets(self) -> tuple:
        """The tensors a step reads: units, layers, signs, groups (and directions)."""
        targets = (
            ops.convert_to_tensor(np.asarray(self.units, np.int32)),
            ops.convert_to_tensor(np.asarray(self.layers, np.int32)),
            ops.convert_to_tensor(np.asarray(self.signs, np.float32)),
            ops.convert_to_tensor(np.asarray(self.groups, np.int32)),
        )
        if not self.directions:
            return targets
        return (*targets, ops.convert_to_tensor(np.stack(self.directions).astype(np.float32)))

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
