"""The unit page's views beyond the channel picture, from cached entries (no TensorFlow):
the negative and diversity pictures (or the nearest unit that has them), the most and
least exciting photos, and the breeds the unit prefers (see :mod:`atlas.analysis.unit_views`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from atlas.analysis.unit_views import nearest, selectivity
from atlas.config.views import COSTLY, MOST

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnitExtras:
    """What a unit page shows besides the channel picture and its numbers.

    Attributes:
        views: the configured views (``render.unit_views.views``).
        negative: ``{"picture", "activation"}`` or None.
        diversity: ``({"picture", "activation"}, ...)``.
        views_at: where the costly views are when this unit has none: ``{"index",
            "path"}`` of the nearest unit with them, or None.
        least: the least exciting photos (the most exciting are ``exemplars``).
        breeds: ``({"breed", "mean", "photos"}, ...)``, the preferred breeds, top first.
        diversity_weight: lambda of the diversity term, for the page to state.
    """

    views: tuple[str, ...] = ()
    negative: dict | None = None
    diversity: tuple[dict, ...] = ()
    views_at: dict | None = None
    least: tuple[dict, ...] = ()
    breeds: tuple[dict, ...] = ()
    diversity_weight: float = 0.0  # lambda of the diversity term, for the page to state

    @property
    def costly(self) -> tuple[str, ...]:
        """The costly views configured (negative, diversity)."""
        return tuple(view for view in self.views if view in COSTLY)


def layer_selectivity(
    image_entries: dict, breeds: dict[str, str], index: int, units: int
) -> dict[int, list[tuple[str, float, int]]]:
    """Each unit's preferred breeds from every photo's ``channel_mean`` of layer ``index``."""
    means = {
        name: entry.meta["channel_mean"][index]
        for name, entry in image_entries.items()
        if entry is not None
    }
    return selectivity(means, breeds, units)


def _pictures(entry, assets, names: list[str]) -> tuple[dict, ...]:
    if entry is None:
        return ()
    activations = entry.meta.get("activations") or []
    found = []
    for i, name in enumerate(names):
        picture = assets.publish(entry, name)
        if picture:
            found.append(
                {"picture": picture, "activation": activations[i] if i < len(activations) else None}
            )
    return tuple(found)


def layer_extras(
    model_plan,
    name: str,
    cache,
    assets,
    unit_path,
    image_entries: dict,
    breeds: dict[str, str],
    index: int,
) -> dict[int, UnitExtras]:
    """Per unit of a layer, its :class:`UnitExtras` (``unit_path(unit)``: a unit's page)."""
    from atlas.config.methods import DIVERSITY_PICTURES, DIVERSITY_WEIGHT

    settings = model_plan.config.render.unit_views
    units = [job.unit for job in model_plan.units[name]]
    jobs: dict[int, dict[str, object]] = {}
    for job in model_plan.views.get(name, []):
        jobs.setdefault(job.unit, {})[job.kind] = job
    chosen = sorted(jobs)
    preferred = (
        layer_selectivity(image_entries, breeds, index, len(units))
        if settings.has("selectivity")
        else {}
    )
    result = {}
    for unit in units:
        own = jobs.get(unit, {})
        negative = (
            _pictures(cache.get(own["negative"].key), assets, ["negative.webp"])
            if "negative" in own
            else ()
        )
        diversity = (
            _pictures(
                cache.get(own["diversity"].key),
                assets,
                [f"diversity_{i}.webp" for i in range(DIVERSITY_PICTURES)],
            )
            if "diversity" in own
            else ()
        )
        other = nearest(unit, chosen) if not own else None
        result[unit] = UnitExtras(
            views=settings.views,
            negative=negative[0] if negative else None,
            diversity=diversity,
            views_at={"index": other, "path": unit_path(other)} if other is not None else None,
            breeds=tuple(
                {"breed": breed, "mean": mean, "photos": photos}
                for breed, mean, photos in preferred.get(unit, [])
            ),
            diversity_weight=DIVERSITY_WEIGHT,
        )
    return result


def split_exemplars(found: tuple[dict, ...]) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
    """(most exciting, least exciting) of a unit's exemplars (the first MOST are the most)."""
    return found[:MOST], found[MOST:]
