"""``atlas plan`` and the site budget: per model and kind, jobs, cached, compute, site size.

Reads the planned build (:func:`atlas.build.prepare`) and the cache; renders nothing. The
estimates themselves are in :mod:`atlas.estimate`.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from atlas import estimate, plan
from atlas.errors import AtlasError
from atlas.estimate import Row, Throughput
from atlas.unit_views import LEAST, MOST

log = logging.getLogger(__name__)

SITE = "(site)"
PHOTOS = "(photos)"


def _cached_bytes(cache, jobs, force: bool) -> list[int | None]:
    """Each job's cached site bytes, None where the cache lacks it. With ``force`` the
    cache is not read for rendering, but its sizes are still the best projection."""
    # The sizes come from the entries' stamps (what estimate.entry_bytes sums from their
    # meta.json): reading every entry would cost a no-op build more than a second.
    return [cache.files_bytes(job.key) for job in jobs]


def rows(
    context, throughput: Throughput, max_steps: int | None = None, force: bool = False
) -> list[Row]:
    """One row per model and kind of asset, then the photos and the HTML pages."""
    from atlas.build import _exemplar_jobs

    cache = context.cache
    result: list[Row] = []
    planned: set[str] = set()  # keys of earlier rows: a frozen backbone's units are shared

    def add(model: str, kind: str, jobs, nominal, gflop_each) -> None:
        own = [i for i, job in enumerate(jobs) if job.key not in planned]
        planned.update(job.key for job in jobs)
        shared = len(jobs) - len(own)
        jobs = [jobs[i] for i in own]
        nominal, gflop_each = [nominal[i] for i in own], [gflop_each[i] for i in own]
        have = _cached_bytes(cache, jobs, force)
        missing_gflop = sum(g for b, g in zip(have, gflop_each, strict=True) if b is None or force)
        row = estimate.make_row(model, kind, have, nominal, missing_gflop, throughput)
        row.shared = shared
        if force:  # everything is rendered again; sizes still come from the cache
            row.cached = 0
            row.seconds, row.measured = throughput.seconds(kind, missing_gflop, row.jobs, model)
        result.append(row)

    units_total = layers_total = detailed_layers = 0
    for model_plan in context.models:
        facts, params, model_id = model_plan.facts, model_plan.params, model_plan.config.id
        prefix = estimate.prefix_flops(facts)
        layers = model_plan.layers
        steps = estimate.unit_steps(params, max_steps)
        add(
            model_id,
            "predict",
            model_plan.predict,
            [0.0] * len(model_plan.predict),
            [estimate.job_gflop("predict", facts, prefix)] * len(model_plan.predict),
        )
        image_nominal = [
            estimate.nominal_bytes(
                "image",
                facts,
                layers,
                params,
                cam_slots=1.7 if j.extra["second_class"] >= 0 else 1.0,
            )
            for j in model_plan.images
        ]
        add(
            model_id,
            "image",
            model_plan.images,
            image_nominal,
            [estimate.job_gflop("image", facts, prefix)] * len(model_plan.images),
        )
        units = [job for jobs in model_plan.units.values() for job in jobs]
        add(
            model_id,
            "unit",
            units,
            [estimate.nominal_bytes("unit", facts, layers, params)] * len(units),
            [estimate.job_gflop("unit", facts, prefix, layer=j.layer, steps=steps) for j in units],
        )
        for view in ("negative", "diversity"):  # the costly unit views (atlas.unit_views)
            jobs = [job for jobs in model_plan.views.values() for job in jobs if job.kind == view]
            if jobs:
                add(model_id, view, jobs,
                    [estimate.nominal_bytes(view, facts, layers, params)] * len(jobs),
                    [estimate.job_gflop(view, facts, prefix, layer=j.layer, steps=steps)
                     for j in jobs])
        grids = list(model_plan.grids.values())
        add(
            model_id,
            "grid",
            grids,
            [
                estimate.nominal_bytes(
                    "grid", facts, layers, params, units=len(model_plan.units[j.layer])
                )
                for j in grids
            ],
            [0.0] * len(grids),
        )
        result.append(
            _exemplar_row(
                model_plan,
                context,
                prefix,
                throughput,
                force,
                _exemplar_jobs(model_plan, context),
                planned,
            )
        )
        units_total += len(units)
        layers_total += len(layers)
        detailed_layers += len(model_plan.images) * len(layers)
    photos = [plan.photo_job(image) for image in context.scan.images]
    add(PHOTOS, "photo", photos, [estimate.PHOTO_BYTES] * len(photos), [0.0] * len(photos))
    html = estimate.html_bytes(
        units_total,
        layers_total,
        sum(len(m.images) for m in context.models),
        len(context.scan.images),
        len(context.models),
        detailed_layers,
    )
    result.append(Row(SITE, "html", 0, 0, 0.0, 0.0, True, html))
    return result


def _exemplar_row(
    model_plan, context, prefix, throughput: Throughput, force: bool, jobs, planned: set[str]
) -> Row:
    """Exemplars are keyed from the image stats: before those exist, one job per layer
    with nominal sizes. A layer whose units an earlier model has (same address) is
    counted there."""
    facts = model_plan.facts
    wanted = model_plan.images and model_plan.config.render.unit_views.has("dataset")
    images = len(context.scan.images) if wanted else 0
    complete = jobs and len(jobs) == len(model_plan.layers)
    by_layer = {job.layer: job for job in jobs} if complete else {}
    nominal, gflop, have = [], [], []
    shared = 0
    for layer in model_plan.layers:
        mark = f"exemplars:{layer['address']}"
        if mark in planned:
            shared += 1
            continue
        planned.add(mark)
        units = len(model_plan.units[layer["name"]])
        shown = min(images, (MOST + LEAST) * units)
        nominal.append(
            estimate.nominal_bytes(
                "exemplars", facts, model_plan.layers, None, units=units, layer=layer["name"]
            )
            if images
            else 0.0
        )
        gflop.append(
            estimate.job_gflop("exemplars", facts, prefix, layer=layer["name"], images=shown)
        )
        job = by_layer.get(layer["name"])
        have.append(_cached_bytes(context.cache, [job], force)[0] if job is not None else None)
    missing = sum(g for b, g in zip(have, gflop, strict=True) if b is None or force)
    row = estimate.make_row(model_plan.config.id, "exemplars", have, nominal, missing, throughput)
    row.shared = shared
    if not images:
        row.jobs = 0
    return row


def total_bytes(table: list[Row]) -> float:
    return sum(row.site_bytes for row in table)


def widest_layer(context) -> int:
    """The most units planned for one layer (what ``units_per_layer`` caps)."""
    return max((len(jobs) for m in context.models for jobs in m.units.values()), default=1)


def check_budget(config, table: list[Row], widest: int) -> None:
    """Stop a build whose projected site exceeds ``site.max_size``, saying what to cut.

    Raises:
        AtlasError: the projection is over the budget (exit 1), before any rendering.
    """
    limit = config.site.max_size
    total = total_bytes(table)
    if total <= limit:
        return
    by_kind: dict[str, float] = {}
    for row in table:
        by_kind[row.kind] = by_kind.get(row.kind, 0.0) + row.site_bytes
    parts = ", ".join(
        f"{kind} {estimate.format_bytes(size)}"
        for kind, size in sorted(by_kind.items(), key=lambda item: -item[1])
        if size > 0
    )
    raise AtlasError(
        f"{config.path}: the projected site is {estimate.format_bytes(total)}, over "
        f"site.max_size ({estimate.format_bytes(limit)}): {parts}. Cut "
        + _advice(table, total - limit, widest)
        + "; `atlas plan` shows the projection per model (nothing was rendered)"
    )


def _advice(table: list[Row], excess: float, widest: int) -> str:
    """What to cut: a units_per_layer that fits, fewer detailed images, the encodings."""
    per_unit = sum(r.site_bytes for r in table if r.kind in ("unit", "grid", "exemplars"))
    units = sum(r.jobs for r in table if r.kind == "unit")
    per_unit += estimate.HTML_UNIT_PAGE * units
    tips = []
    if units and per_unit > excess:
        fraction = 1 - excess / per_unit
        tips.append(f"render.units_per_layer (to about {max(1, math.floor(widest * fraction))})")
    else:
        tips.append("render.units_per_layer")
    image = sum(r.site_bytes for r in table if r.kind == "image")
    detailed = sum(r.jobs for r in table if r.kind == "image")
    if detailed:
        tips.append(
            f"dataset.detailed ({detailed:,} image pages, "
            f"{estimate.format_bytes(image)}: e.g. {{per_breed: 1}} or none)"
        )
    encodings = ", ".join(
        f"{kind} {values}"
        for kind, values in plan.ENCODING.items()
        if values and kind in ("unit", "image")
    )
    tips.append(f"or the encodings ({encodings} in atlas/plan.py ENCODING)")
    return ", ".join(tips)


def run_plan(config_path: Path | str, as_json: bool = False) -> str:
    """The text (or JSON) ``atlas plan`` prints. Renders nothing; model facts are
    computed (with TensorFlow) only when the cache lacks them."""
    from atlas.build import BuildOptions, StageTimer, prepare
    from atlas.cache import open_cache
    from atlas.config import load_config

    config = load_config(config_path)
    cache = open_cache(config.cache)
    context, _ = prepare(config, cache, BuildOptions(progress=False), StageTimer())
    throughput = Throughput.from_json(cache.read_aux(estimate.THROUGHPUT))
    table = rows(context, throughput)
    total = total_bytes(table)
    if as_json:
        return json.dumps(
            {
                "rows": [row.as_dict() for row in table],
                "site_bytes": round(total),
                "max_size": config.site.max_size,
                "fits": total <= config.site.max_size,
                "seconds": sum(r.seconds for r in table),
                "gflop": sum(r.gflop for r in table),
            },
            indent=1,
        )
    return format_table(table, config.site.max_size)


def format_table(table: list[Row], limit: int) -> str:
    header = ("model", "kind", "jobs", "cached", "shared", "GFLOP to do", "time to do", "site size")
    lines = [
        [
            row.model,
            row.kind,
            f"{row.jobs:,}",
            f"{row.cached:,}",
            f"{row.shared:,}" if row.shared else "-",
            f"{row.gflop:,.1f}" if row.gflop else "-",
            estimate.format_seconds(row.seconds) + ("" if row.measured else "*")
            if row.jobs - row.cached
            else "-",
            estimate.format_bytes(row.site_bytes),
        ]
        for row in table
    ]
    total = total_bytes(table)
    seconds = sum(r.seconds for r in table if r.jobs - r.cached)
    lines.append(
        [
            "total",
            "",
            f"{sum(r.jobs for r in table):,}",
            f"{sum(r.cached for r in table):,}",
            f"{sum(r.shared for r in table):,}",
            f"{sum(r.gflop for r in table):,.1f}",
            estimate.format_seconds(seconds),
            estimate.format_bytes(total),
        ]
    )
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    text = [
        "  ".join(
            str(x).ljust(w) if i < 2 else str(x).rjust(w)
            for i, (x, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in [header, *lines]
    ]
    verdict = "fits" if total <= limit else "DOES NOT FIT"
    text.append(
        f"projected site {estimate.format_bytes(total)}: {verdict} in site.max_size "
        f"{estimate.format_bytes(limit)}"
    )
    if any(r.shared for r in table):
        text.append(
            "shared: jobs an earlier model of this build also has (the same units or maps, "
            "e.g. a frozen backbone): rendered and published once, counted there"
        )
    if any(not r.measured and r.jobs - r.cached for r in table):
        text.append("* nominal rates (no build has recorded its throughput in this cache yet)")
    return "\n".join(text)
