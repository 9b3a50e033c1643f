"""Why a unit's picture did not move: a constant unit, or one the optimiser could not move.

A channel picture whose gradient was zero at every step is retried from another seed and a
bold start (:mod:`atlas.render.pictures`). A unit that moved on neither try is *constant*
when its mean activation is the same, to float tolerance, on both starts and on every
photo the build measured: decided empirically, not from the weights, and the pages say so.
Otherwise it *did not move*: the photos show it can change, the optimiser found no way.
A unit whose picture moved is constant all the same when its picture and every photo give
one mean other than 0: weights of ~1e-13 (a pruned channel) leave a gradient that is not
exactly zero. (A unit at 0 on all of them is closed there, not shown to be constant.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

MOVED, RETRIED, CONSTANT, STUCK = "moved", "retried", "constant", "stuck"
# Relative tolerance of "the same mean": a constant unit's means differ by float noise only
# (float32: ~1e-7 of their size), but the photos' means are stored to 5 significant digits
# (up to 5e-5 of their size off).
TOLERANCE = 1e-4


def is_constant(values: Sequence[float]) -> bool:
    """Whether these means are one value to :data:`TOLERANCE` (at least two of them)."""
    found = np.asarray([v for v in values if v is not None], np.float64)
    if len(found) < 2:
        return False
    return float(np.ptp(found)) <= TOLERANCE * max(1.0, float(np.abs(found).max()))


def unit_state(meta: dict, photo_means: Sequence[float] = ()) -> str:
    """A channel picture's outcome from its cache meta and the unit's mean on each photo.

    Returns:
        :data:`MOVED` (the first try moved), :data:`RETRIED` (the retry moved),
        :data:`CONSTANT` (neither moved, and every start and photo gives one mean; or
        the picture and every photo give one mean other than 0) or
        :data:`STUCK` (neither moved, but the unit is not constant).
    """
    if meta.get("moved", not meta.get("dead", False)):
        # one mean on the moved picture and every photo; not 0, a ReLU closed on all of
        # them, which a picture might yet open (its gradient moved it)
        own = meta.get("own_activation")
        if (
            own is not None
            and len(photo_means) >= 2
            and is_constant([own, *photo_means])
            and abs(own) > TOLERANCE
        ):
            return CONSTANT
        return RETRIED if meta.get("try", 1) > 1 else MOVED
    starts = meta.get("start_values") or [meta.get("objective")]
    return CONSTANT if is_constant([*starts, *photo_means]) else STUCK


def state_words(state: str, photos: int) -> str:
    """The unit page's sentence for a state, empty for a unit that moved at once."""
    seen = f"every picture tried and on all {photos} photos" if photos else "both random starts"
    return {
        MOVED: "",
        RETRIED: "The first start gave no gradient; this picture is the retry's (another "
        "seed, a bolder start).",
        CONSTANT: f"Constant: its mean activation is the same on {seen}, so no picture can "
        "change it (measured, not proven from the weights).",
        STUCK: "Did not move after a retry: the gradient was zero from both starts, yet "
        "the photos show the unit does change. The picture is its start.",
    }[state]


def photo_means(image_entries: Iterable, layer: int) -> np.ndarray:
    """``(photos, units)``: each unit's spatial mean at layer ``layer`` on each photo (the
    ``channel_mean`` of the image entries that are not None); ``(0, 0)`` without photos."""
    rows = [entry.meta["channel_mean"][layer] for entry in image_entries if entry is not None]
    return np.asarray(rows, np.float64) if rows else np.zeros((0, 0))


def state_counts(states: Iterable[str]) -> dict[str, int]:
    """A layer's counts of units that are constant, stuck or moved on the retry."""
    states = list(states)
    return {name: states.count(name) for name in (CONSTANT, STUCK, RETRIED)}
