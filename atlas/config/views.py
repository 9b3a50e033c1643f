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

The views computed from the photos' statistics are in :mod:`atlas.analysis.unit_views`.
"""

from __future__ import annotations

import logging
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
        check: the config's :class:`atlas.config.schema.Checker`.
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
