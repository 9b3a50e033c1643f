"""The plan's stages: their names in a warning and the keys that cut them, the time by
stage, the expected wall time of a build, and the warning before a long one."""

from __future__ import annotations

from atlas.plan import estimate
from atlas.plan.estimate import Row

# What each stage is called in a warning, and the keys that cut it.
STAGES = {
    "predict": ("predictions", "the photos in dataset.images"),
    "image": ("activations + CAMs", "dataset.detailed"),
    "localisation": ("CAM scores (localisation)", "dataset.detailed"),
    "faithfulness": (
        "CAM scores (deletion/insertion)",
        "render.scores.layers or render.faithfulness_photos",
    ),
    "unit": ("unit pictures", "render.units_per_layer, the model's layers or its lucid steps"),
    "negative": ("negative pictures", "render.unit_views"),
    "diversity": ("diversity pictures", "render.unit_views"),
    "grid": ("layer grids", "render.units_per_layer"),
    "exemplars": ("unit exemplars", "render.unit_views or dataset.images"),
    "load": ("model loads", "the number of models"),
    "photo": ("photos", "the photos in dataset.images"),
    "html": ("pages", "render.units_per_layer or dataset.detailed"),
    "atlas_samples": ("atlas samples", "atlas.layers or atlas.samples"),
    "atlas_layout": ("atlas layouts", "atlas.samples or atlas.layers"),
    "atlas_labels": ("atlas labels", "atlas.layers or atlas.grid"),
    "atlas_cell": ("atlas cells", "atlas.grid, atlas.min_count or atlas.layers"),
    "atlas": ("atlas pictures", "atlas.layers"),
}


def long_stages(context, table: list[Row]) -> list[str]:
    """One line for each model's stage estimated to take longer than its
    ``render.warn_after`` minutes (0: never), with the keys that cut it."""
    limits = {m.config.id: m.config.render.warn_after for m in context.models}
    default = context.config.models[0].render.warn_after if context.config.models else 0
    lines = []
    for row in table:
        limit = limits.get(row.model, default)
        if not limit or row.jobs - row.cached <= 0 or row.seconds <= 60 * limit:
            continue
        stage, cut = STAGES.get(row.kind, (row.kind, "the config"))
        owner = "" if row.model.startswith("(") else f"model {row.model}: "
        lines.append(
            f"{owner}{stage} estimated at {estimate.format_seconds(row.seconds)}, over "
            f"render.warn_after ({limit:g} min); {cut} cut(s) it (`atlas plan` shows every stage)"
        )
    return lines


def wall_seconds(table: list[Row]) -> float:
    """The build's expected wall time: the unit pictures render in a thread beside the
    other stages (atlas.execute.local), so the longer of the two streams counts; the
    grids and pages come after both."""
    todo = [row for row in table if row.jobs - row.cached > 0]
    units = sum(r.seconds for r in todo if r.kind in estimate.PICTURES)
    after = sum(r.seconds for r in todo if r.kind in ("grid", "html"))
    rest = sum(r.seconds for r in todo) - units - after
    return max(units, rest) + after


def summary(table: list[Row]) -> list[str]:
    """The plan's lines under its table: the time by stage, largest first, and the
    expected build time."""
    seconds: dict[str, float] = {}
    for row in table:
        if row.jobs - row.cached and row.seconds:
            name = STAGES.get(row.kind, (row.kind,))[0]
            seconds[name] = seconds.get(name, 0.0) + row.seconds
    if not seconds:
        return []
    ranked = sorted(seconds.items(), key=lambda item: -item[1])
    return [
        "time by stage: "
        + ", ".join(f"{name} {estimate.format_seconds(value)}" for name, value in ranked),
        f"expected build time {estimate.format_seconds(wall_seconds(table))} (the unit "
        "pictures render beside the other stages: less than the sum)",
    ]


def quality_costs(context, throughput) -> str | None:
    """What every unit picture of the build would cost at each ``render.quality`` preset,
    from this machine's throughput (a unit shared by two models counted once)."""
    from atlas.config.methods import QUALITY_PRESETS
    from atlas.plan import jobs as plan

    units = [(m, [j for jobs in m.units.values() for j in jobs]) for m in context.models]
    if not any(jobs for _, jobs in units):
        return None
    costs = []
    for quality in QUALITY_PRESETS:
        seconds, seen = 0.0, set()
        for model_plan, jobs in units:
            facts = model_plan.facts
            index = context.config.models.index(model_plan.config)
            params = plan.unit_params(model_plan.config, index, facts["input_size"], quality)
            own = [job for job in jobs if job.key not in seen]
            seen.update(job.key for job in jobs)
            prefix = estimate.prefix_flops(facts)
            gflop = sum(estimate.picture_gflops(facts, prefix, own, params))
            seconds += throughput.seconds("unit", gflop, len(own), model_plan.config.id)[0]
        costs.append(f"{quality} {estimate.format_seconds(seconds)}")
    return "every unit picture at render.quality: " + ", ".join(costs) + " (on this machine)"
