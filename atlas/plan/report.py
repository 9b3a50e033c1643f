"""``atlas plan`` and the site budget: per model and kind, jobs, cached, compute, site size.

Reads the planned build (:func:`atlas.prepare.prepare`) and the cache; renders nothing. The
estimates themselves are in :mod:`atlas.plan.estimate`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from atlas.config.views import LEAST, MOST
from atlas.errors import AtlasError
from atlas.plan import atlas as atlas_plan
from atlas.plan import estimate, stages
from atlas.plan import jobs as plan
from atlas.plan.estimate import Row, Throughput

log = logging.getLogger(__name__)

SITE = "(site)"
PHOTOS = "(photos)"


def _cached_bytes(cache, jobs, force: bool) -> list[int | None]:
    """Each job's cached site bytes, None where the cache lacks it. With ``force`` the
    cache is not read for rendering, but its sizes are still the best projection."""
    # The sizes come from the entries' stamps (what estimate.entry_bytes sums from their
    # meta.json): reading every entry would cost a no-op build more than a second.
    return [cache.files_bytes(job.key) for job in jobs]


@dataclass
class _Table:
    """The rows so far, and the keys they hold: a job an earlier row has (a frozen
    backbone's units, shared by two models) is counted there, not again."""

    cache: object
    throughput: Throughput
    force: bool
    rows: list[Row] = field(default_factory=list)
    planned: set[str] = field(default_factory=set)

    def add(
        self,
        model: str,
        kind: str,
        jobs,
        nominal,
        gflop_each,
        once: bool = True,
        published: bool = True,
    ) -> None:
        """A row of these jobs; with ``once``, those an earlier row has are only counted
        as shared (a scores job is in both the localisation and faithfulness rows); an
        unpublished kind (an atlas' samples, say) adds nothing to the site's size."""
        own = [i for i, job in enumerate(jobs) if not once or job.key not in self.planned]
        self.planned.update(job.key for job in jobs)
        shared = len(jobs) - len(own)
        jobs = [jobs[i] for i in own]
        nominal, gflop_each = [nominal[i] for i in own], [gflop_each[i] for i in own]
        have = _cached_bytes(self.cache, jobs, self.force)
        missing_gflop = sum(
            g for b, g in zip(have, gflop_each, strict=True) if b is None or self.force
        )
        row = estimate.make_row(model, kind, have, nominal, missing_gflop, self.throughput)
        row.shared = shared
        row.site_bytes = row.site_bytes if published else 0.0
        if self.force:  # everything is rendered again; sizes still come from the cache
            row.cached = 0
            row.seconds, row.measured = self.throughput.seconds(
                kind, missing_gflop, row.jobs, model
            )
        self.rows.append(row)


def rows(
    context, throughput: Throughput, max_steps: int | None = None, force: bool = False
) -> list[Row]:
    """One row per model and kind of asset, then the photos and the HTML pages."""
    from atlas.plan.exemplars import exemplar_jobs

    table = _Table(context.cache, throughput, force)
    for model_plan in context.models:
        _model_rows(table, model_plan, max_steps)
        prefix = estimate.prefix_flops(model_plan.facts)
        jobs = exemplar_jobs(model_plan, context)
        table.rows.append(
            _exemplar_row(model_plan, context, prefix, throughput, force, jobs, table.planned)
        )
        table.rows.append(_load_row(model_plan, table.rows, throughput, len(context.models)))
    photos = [plan.photo_job(image) for image in context.scan.images]
    table.add(PHOTOS, "photo", photos, [estimate.PHOTO_BYTES] * len(photos), [0.0] * len(photos))
    models = context.models
    units = sum(len(jobs) for m in models for jobs in m.units.values())
    layers = sum(len(m.layers) for m in models)
    detailed = sum(len(m.images) for m in models)
    html = estimate.html_bytes(
        units,
        layers,
        detailed,
        len(context.scan.images),
        len(models),
        sum(len(m.images) * len(m.layers) for m in models),
    )
    atlases = sum(len(m.atlas_plans) for m in models)
    html += atlases * atlas_plan.ATLAS_PAGE_BYTES
    pages = _page_count(units, layers, detailed, len(models)) + atlases
    todo = any(row.jobs - row.cached > 0 for row in table.rows) or force
    seconds, measured = throughput.seconds("pages", 0.0, pages)
    table.rows.append(Row(SITE, "html", pages, 0 if todo else pages, 0.0, seconds, measured, html))
    return table.rows


def _model_rows(table: _Table, model_plan, max_steps: int | None) -> None:
    """A model's rows: predictions, image maps, unit pictures and views, grids."""
    facts, params, model_id = model_plan.facts, model_plan.params, model_plan.config.id
    prefix = estimate.prefix_flops(facts)
    layers = model_plan.layers

    predict = model_plan.predict
    table.add(
        model_id,
        "predict",
        predict,
        [0.0] * len(predict),
        [estimate.job_gflop("predict", facts, prefix)] * len(predict),
    )
    _image_row(table, model_plan, prefix)
    units = [job for jobs in model_plan.units.values() for job in jobs]
    for kind, jobs in (
        ("unit", units),  # then the costly unit views (atlas.config.views)
        *(
            (view, [j for jobs in model_plan.views.values() for j in jobs if j.kind == view])
            for view in ("negative", "diversity")
        ),
    ):
        if jobs or kind == "unit":
            table.add(
                model_id,
                kind,
                jobs,
                [estimate.nominal_bytes(kind, facts, layers, params)] * len(jobs),
                estimate.picture_gflops(facts, prefix, jobs, params, max_steps),
            )
    _score_rows(table, model_plan, prefix)
    for kind, jobs, each, gflops in atlas_plan.cost_rows(model_plan, max_steps):
        if jobs:
            table.add(model_id, kind, jobs, [each] * len(jobs), gflops, published=bool(each))
    grids = list(model_plan.grids.values())
    table.add(
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


def _image_row(table: _Table, model_plan, prefix: dict[str, float]) -> None:
    """The detailed photos' maps: activations, the gradient CAMs and Score-CAM's masked
    copies of the photo (``render.scorecam_channels`` forward passes per layer)."""
    facts, params, model_id = model_plan.facts, model_plan.params, model_plan.config.id
    layers = model_plan.layers
    image_nominal = [
        estimate.nominal_bytes(
            "image", facts, layers, params, cam_slots=1.7 if j.extra["second_class"] >= 0 else 1.0
        )
        for j in model_plan.images
    ]
    table.add(
        model_id,
        "image",
        model_plan.images,
        image_nominal,
        [
            estimate.job_gflop(
                "image",
                facts,
                prefix,
                score_passes=len(layers) * model_plan.config.render.scorecam_channels,
            )
        ]
        * len(model_plan.images),
    )


def _score_rows(table: _Table, model_plan, prefix: dict[str, float]) -> None:
    """The CAM scores: localisation (photos with a mask; no forward pass) and faithfulness
    (the deletion/insertion curves' forward passes), each a row of the same scores jobs."""
    from atlas.data.masks import STEPS

    facts, model_id = model_plan.facts, model_plan.config.id
    located = [job for job in model_plan.scores if job.extra["trimap"] is not None]
    table.add(model_id, "localisation", located, [0.0] * len(located), [0.0] * len(located), False)
    faithful = [job for job in model_plan.scores if job.extra["faithful"]]
    layers = len(model_plan.layers)
    gflop = [
        estimate.job_gflop(
            "faithfulness",
            facts,
            prefix,
            images=estimate.faithfulness_passes(job.extra, layers, STEPS),
        )
        for job in faithful
    ]
    table.add(model_id, "faithfulness", faithful, [0.0] * len(faithful), gflop, False)


def _load_row(model_plan, rows: list[Row], throughput: Throughput, models: int) -> Row:
    """Loading the model: once when anything of it is rendered, twice when the build
    holds more models than it keeps loaded (the exemplars load it again)."""
    model_id = model_plan.config.id
    todo = any(r.model == model_id and r.jobs - r.cached > 0 for r in rows)
    loads = (1 + (models > estimate.MODELS_KEPT_LOADED)) if todo else 0
    seconds, measured = throughput.seconds("load", 0.0, loads, model_id)
    if not measured:
        seconds = loads * _load_seconds(model_plan.facts) * throughput.scale
    return Row(model_id, "load", loads, 0, 0.0, seconds, measured, 0.0)


def _load_seconds(facts: dict) -> float:
    """Nominal seconds to build or read a model, from its weights."""
    weights = sum(int(layer.get("params") or 0) for layer in facts.get("layers", []))
    return estimate.NOMINAL_SECONDS_PER_JOB["load"] + estimate.LOAD_SECONDS_PER_PARAM * weights


def _page_count(units: int, layers: int, detailed: int, models: int) -> int:
    """The site's HTML pages: a page per unit, layer and detailed photo of each model,
    the model's own pages (index, predictions, accuracy, summary...) and the site's."""
    return units + layers + detailed + 6 * models + 4


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
    tips.append(f"or the encodings ({encodings} in atlas/plan/jobs.py ENCODING)")
    return ", ".join(tips)


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
    text += stages.summary(table)
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
        text.append(
            "* nominal rates (no build has recorded this kind's throughput in this cache yet)"
        )
    return "\n".join(text)
