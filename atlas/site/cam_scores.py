"""The model page's CAM-scores table: which layer and method to trust."""

from __future__ import annotations

from atlas.plan.jobs import CAM_METHODS
from atlas.site.views import LayerView


def cam_colours() -> dict[str, str]:
    from atlas.analysis.scores import COLOURS

    return COLOURS


def cam_scores(
    model_plan, context, layers: list[LayerView], image_paths: dict[str, str]
) -> dict | None:
    """The model page's table of CAM scores per layer and method (None before any)."""
    from atlas.analysis.scores import score_view

    entries = {job.image: context.cache.get(job.key) for job in model_plan.scores}
    records = {name: entry.meta for name, entry in entries.items() if entry is not None}
    if not records:
        return None
    methods = [
        m
        for m in CAM_METHODS
        if any(m in r.get("energy", r.get("deletion", {})) for r in records.values())
    ]
    faithful = [(name, image_paths.get(name)) for name, r in records.items() if r.get("deletion")]
    names = [layer.name for layer in layers]
    return score_view(list(records.values()), names, methods, len(model_plan.images), faithful)
