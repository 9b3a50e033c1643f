"""The unit-page views computed from the photos' statistics (NumPy only).

* :func:`most_and_least`: each unit's most and least exciting photos from every photo's
  per-channel means (the image jobs' ``channel_mean``).
* :func:`selectivity`: each unit's mean activation per class, the top classes first.

Which views are rendered, and for which units, is config: :mod:`atlas.config.views`.
"""

from __future__ import annotations

from collections.abc import Sequence

from atlas.config.views import LEAST, MOST, TOP_BREEDS


def nearest(unit: int, chosen: Sequence[int]) -> int | None:
    """The unit of ``chosen`` closest to ``unit`` (the lower one on a tie)."""
    return min(chosen, key=lambda other: (abs(other - unit), other)) if chosen else None


def most_and_least(
    channel_mean: dict[str, list[float]], units: int, most: int = MOST, least: int = LEAST
) -> dict[int, list[str]]:
    """For each unit, its ``most`` most exciting photos (highest spatial-mean activation
    first), then its ``least`` least exciting among the others (lowest first). Ties go to
    the name that sorts first.

    Args:
        channel_mean: photo name -> the layer's per-channel spatial means.
        units: how many units (the first channels).
    """
    import numpy as np

    names = sorted(channel_mean)
    if not names:
        return {unit: [] for unit in range(units)}
    values = np.asarray([channel_mean[name][:units] for name in names], dtype=np.float64)
    high = np.argsort(-values, axis=0, kind="stable")
    low = np.argsort(values, axis=0, kind="stable")
    result = {}
    for unit in range(units):
        top = [int(i) for i in high[:most, unit]]
        bottom = [int(i) for i in low[:, unit] if int(i) not in top][:least]
        result[unit] = [names[i] for i in top + bottom]
    return result


def selectivity(
    channel_mean: dict[str, list[float]], breeds: dict[str, str], units: int, top: int = TOP_BREEDS
) -> dict[int, list[tuple[str, float, int]]]:
    """Class selectivity: per unit, the ``top`` breeds with the highest mean of the unit's
    spatial-mean activation over the breed's photos, highest first (ties: breed name).

    Args:
        channel_mean: photo name -> the layer's per-channel spatial means.
        breeds: photo name -> its breed (photos without one are left out).
        units: how many units (the first channels).

    Returns:
        unit -> [(breed, mean, photos)].
    """
    import numpy as np

    by_breed: dict[str, list[str]] = {}
    for name in sorted(channel_mean):
        if breeds.get(name):
            by_breed.setdefault(breeds[name], []).append(name)
    if not by_breed:
        return {unit: [] for unit in range(units)}
    order = sorted(by_breed)
    means = np.stack(
        [
            np.mean([channel_mean[name][:units] for name in by_breed[breed]], axis=0)
            for breed in order
        ]
    )  # (breeds, units)
    result = {}
    for unit in range(units):
        ranked = sorted(range(len(order)), key=lambda b: (-means[b, unit], order[b]))[:top]
        result[unit] = [(order[b], float(means[b, unit]), len(by_breed[order[b]])) for b in ranked]
    return result
