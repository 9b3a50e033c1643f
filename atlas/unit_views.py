"""Unit pages like Distill's appendix: which views are rendered, for which units, and the
views computed from the photos' statistics (no TensorFlow here).

* ``render.unit_views`` (:class:`UnitViews`): ``views`` lists what a unit page shows besides
  its channel picture: ``negative`` (a picture that drives the unit's mean down),
  ``diversity`` (4 pictures optimised together with Lucid's diversity term), ``dataset``
  (the photos that excite the unit most and least, by spatial-mean activation, each with
  its map) and ``selectivity`` (the breeds whose photos excite it most on average).
  ``units`` says for which units of each layer the costly picture views (negative,
  diversity) are rendered: N units spread evenly over the layer (:func:`costly_units`),
  ``all`` or ``none``. The photo views cost no optimisation and are for every unit.
* :func:`most_and_least`: each unit's most and least exciting photos from every photo's
  per-channel means (the image jobs' ``channel_mean``).
* :func:`selectivity`: each unit's mean activation per breed, the top breeds first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

VIEWS = ("negative", "diversity", "dataset", "selectivity")
COSTLY = ("negative", "diversity")
MOST = 4  # most exciting photos per unit
LEAST = 4  # least exciting photos per unit (among the others)
TOP_BREEDS = 5  # preferred breeds shown per unit
DEFAULT_UNITS = 4


@dataclass(frozen=True)
class UnitViews:
    """``render.unit_views``: the views shown and the units with costly views.

    Attributes:
        views: a subset of :data:`VIEWS`, in that order.
        units: how many units per layer get the costly views; None: all of them.
    """

    views: tuple[str, ...] = VIEWS
    units: int | None = DEFAULT_UNITS

    def has(self, view: str) -> bool:
        return view in self.views

    def key_dict(self) -> dict[str, Any]:
        return {"views": list(self.views), "units": self.units}


def parse_unit_views(check, data: dict, path: str, base: UnitViews) -> UnitViews:
    """Read ``unit_views`` from a ``render`` block (problems go to ``check``); a model's
    block overrides the keys it sets.

    Args:
        check: the config's :class:`atlas.schema.Checker`.
        data: the ``render`` mapping.
        path: the block's key path (``render`` or ``models[i].render``).
        base: the inherited value.
    """
    where = f"{path}.unit_views"
    value = check.mapping(data.get("unit_views"), where, ("views", "units"))
    views, units = base.views, base.units
    if "views" in value:
        listed = value["views"]
        if not isinstance(listed, list) or not all(isinstance(v, str) for v in listed):
            check.problem(
                f"{where}.views", f"expected a list of views ({', '.join(VIEWS)}), got {listed!r}"
            )
        else:
            unknown = [v for v in listed if v not in VIEWS]
            if unknown:
                check.problem(
                    f"{where}.views",
                    f"unknown view {unknown[0]!r}; expected any of: {', '.join(VIEWS)}",
                )
            else:
                views = tuple(v for v in VIEWS if v in listed)
    if "units" in value:
        raw = value["units"]
        if raw == "all":
            units = None
        elif raw == "none":
            units = 0
        elif isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            units = raw
        else:
            check.problem(
                f"{where}.units",
                f"expected a number of units per layer (0 or more), all or none; got {raw!r}",
            )
    return UnitViews(views=views, units=units)


def costly_units(channels: int, setting: int | None) -> list[int]:
    """The units of a layer of ``channels`` rendered units that get the costly views:
    ``setting`` of them spread evenly (``round(i x channels / setting)``: unit 0 first),
    all of them for None, none for 0."""
    if setting is None or setting >= channels:
        return list(range(channels))
    return sorted({round(i * channels / setting) for i in range(setting)})


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
