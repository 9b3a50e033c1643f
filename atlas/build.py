"""``atlas build``: load_config -> plan jobs -> render through the cache -> pages -> write.

Everything is planned before anything is rendered: each job has a key, the cache says
what is missing, and TensorFlow is imported only if something is. The site is written to
a temporary folder beside the output and swapped in at the end, so a failed or
interrupted build leaves the previous site as it was.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from atlas.cache import open_cache
from atlas.cache.store import Cache
from atlas.config.load import load_config
from atlas.config.settings import Config
from atlas.errors import AtlasError
from atlas.execute.models import LoadedModels
from atlas.plan import jobs as plan
from atlas.plan.context import BuildContext, ModelPlan, StageTimer, planned_jobs
from atlas.plan.exemplars import exemplar_jobs
from atlas.plan.jobs import Job
from atlas.prepare import BuildOptions, calibrated_throughput, prepare
from atlas.project import resources
from atlas.site.ledger import peak_rss

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildReport:
    output: Path | None  # None for a shard (no site written)
    pages: int
    site_bytes: int
    rendered: dict[str, int]
    reused: dict[str, int]
    seconds: dict[str, float]
    skipped: int
    tensorflow_loaded: bool
    pages_written: int = 0  # 0: the site was up to date and nothing was written
    peak_rss_bytes: int = 0
    cpu_seconds: dict[str, float | None] = field(default_factory=dict)  # per stage, every thread
    wall_seconds: float = 0.0  # the whole build (stages in different threads overlap)
    cpu_total: float = 0.0  # the whole build's CPU seconds, every thread


def build(config_path: Path | str, options: BuildOptions | None = None) -> BuildReport:
    """Build the site described by a config file. See the module docstring.

    With ``options.shard`` (I, N), render only shard I's share of the missing assets of
    phase one into the cache and write no site (see :mod:`atlas.execute.tasks`).

    Raises:
        ConfigError: invalid config (exit 2), before anything is written.
        AtlasError: a model, the cache or the output cannot be used, or the projected
            site exceeds ``site.max_size`` (before anything is rendered).
        KeyboardInterrupt: after keeping every finished asset.
    """
    options = options if options is not None else BuildOptions()
    _share_cores(options)
    timer = StageTimer()
    with timer.stage("config"):
        config = load_config(config_path)
        resources.templates()  # a broken installation fails before anything is rendered
    cache = open_cache(config.cache)
    cache.lock(options.wait, shared=options.shard is not None)
    try:
        return _build(config, cache, options, timer)
    except KeyboardInterrupt as interrupt:
        interrupt.kept = cache.written  # for the CLI's "how much was kept" line
        raise
    finally:
        cache.unlock()


def _share_cores(options: BuildOptions) -> None:
    """A local build runs two streams of TensorFlow ops at once (the unit pictures beside
    the other stages): each op gets half the cores instead of all of them, unless the
    user set ``TF_NUM_INTRAOP_THREADS``. On this 2-core machine a cold default build took
    237 s and 420 CPU-seconds instead of 246-258 s and 447 (four threads on two cores
    wait on each other). Read when TensorFlow starts: no effect once it has."""
    if options.scheduler or options.serial or "tensorflow" in sys.modules:
        return
    try:
        cores = len(os.sched_getaffinity(0))  # a shard pinned to some cores sees those
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, cores // 2)))


def _build(config: Config, cache: Cache, options: BuildOptions, timer: StageTimer) -> BuildReport:
    from atlas.plan import estimate
    from atlas.plan import report as plan_report
    from atlas.plan import stages as plan_stages
    from atlas.site.publish import write_site

    context, models = prepare(config, cache, options, timer)
    with timer.stage("cache checks"):
        current = _current_site(context, options)
    if current is not None:  # nothing to render, project or write
        with timer.stage("pages"):
            written = write_site(context, current, checked=True)
        return _report(written.output, written.pages, written.size, context, timer)
    throughput = calibrated_throughput(cache)
    with timer.stage("plan"):
        table = plan_report.rows(context, throughput, options.max_steps, options.force)
        plan_report.check_budget(config, table, plan_report.widest_layer(context))
        for line in plan_stages.long_stages(context, table):
            log.warning("%s", line)
    measured = estimate.Throughput({})
    _render(context, models, options, throughput, measured)
    for model_id, seconds in models.loads:  # the plan's "load" rows
        for name in ("load", f"load:{model_id}"):
            measured.record(name, seconds, 0.0, 1)
    if options.shard is not None:
        if measured.kinds:  # a build that rendered nothing measured nothing
            _save_throughput(cache, throughput.updated(measured))
        return _report(None, 0, 0, context, timer)
    with timer.stage("pages"):
        from atlas.site.manifest import inputs_digest

        started = time.perf_counter()
        written = write_site(context, inputs_digest(context, resources.templates()))
        measured.record("pages", time.perf_counter() - started, 0.0, written.pages)
    _save_throughput(cache, throughput.updated(measured))
    if options.prune:
        keep = _referenced_keys(context)
        removed, freed = cache.prune(keep)
        log.info("pruned %d cache entries (%.1f MB)", removed, freed / 1e6)
    return _report(
        written.output, written.pages, written.size, context, timer, written.pages_written
    )


def _render(
    context: BuildContext, models: LoadedModels, options: BuildOptions, throughput, measured
) -> None:
    """Render every missing asset into the cache: phase one (photos, predictions, image
    maps, CAM scores, unit pictures), then the exemplars known from the image statistics,
    then the layers' grids. A shard renders its share of phase one only."""
    from atlas.execute import atlases, shards, tasks

    def missing(jobs: list[Job]) -> list[Job]:
        todo = _missing(jobs, context.cache, options.force)
        if jobs:
            context.count(jobs[0].kind, False, len(jobs) - len(todo))
        return todo

    run = _executor(context, models, options, measured)
    # Time not taken by a render stage within is spent reading and checking the cache.
    try:
        with context.timer.stage("cache checks"):
            todo = tasks.phase_one_tasks(context, missing, options.max_steps)
            if options.shard is not None:
                index, count = options.shard
                todo = shards.shard_share(context, todo, index, count, throughput)
                log.info("shard %d/%d: %d of the missing tasks", index, count, len(todo))
            run(todo)  # locally, the unit pictures go on beside what follows
            if options.shard is None:
                images = {image.name: image for image in context.scan.images}
                for model_plan in context.models:  # from the image statistics alone
                    jobs = exemplar_jobs(model_plan, context, missing)
                    run(tasks.exemplar_tasks(model_plan, jobs, images))
                atlases.make_layouts(context, options.force)  # from the samples of phase one
                run(atlases.atlas_tasks(context, missing, options.max_steps))
            run.wait()
            if options.shard is None:
                for model_plan in context.models:
                    with context.timer.stage("render grids"):
                        _render_grids(model_plan, context, options)
                atlases.stitch_atlases(context, options.force)
    finally:
        run.close()


def _current_site(context: BuildContext, options: BuildOptions) -> str | None:
    """The inputs digest, when the site in the output folder was built from exactly these
    inputs, every entry it reads is present, and the site is untouched since; else None.

    Then the build has nothing to render and its budget held when the site was written:
    the no-op rebuild skips the plan's projection (a stamp per entry, ~0.5 s on the
    default site) and the per-job checks, and every planned job counts as reused.
    """
    from atlas.site import manifest

    if options.force or options.prune or options.shard is not None:
        return None
    for model_plan in context.models:  # the exemplar jobs from the memoised image stats
        exemplar_jobs(model_plan, context)
    keys = manifest.entry_keys(context)
    output = context.config.site.output
    previous = manifest.read(context.cache, output)
    if previous is None or any(context.cache.stamp(key) is None for key in keys):
        return None
    inputs = manifest.inputs_digest(context, resources.templates())
    if not manifest.up_to_date(output, inputs, previous):
        return None
    for job in planned_jobs(context):
        context.count(job.kind, False)
    return inputs


def _report(
    output: Path | None,
    pages: int,
    size: int,
    context: BuildContext,
    timer: StageTimer,
    pages_written: int = 0,
) -> BuildReport:
    return BuildReport(
        output=output,
        pages=pages,
        site_bytes=size,
        rendered=context.rendered,
        reused=context.reused,
        seconds=dict(timer.seconds),
        cpu_seconds=dict(timer.cpu),
        wall_seconds=time.perf_counter() - timer.started,
        cpu_total=time.process_time() - timer.started_cpu,
        skipped=len(context.scan.skipped),
        tensorflow_loaded="tensorflow" in sys.modules,
        pages_written=pages_written,
        peak_rss_bytes=peak_rss(),
    )


def _executor(context: BuildContext, models: LoadedModels, options: BuildOptions, measured):
    """Runs tasks here, or on the Dask scheduler of ``--scheduler``; has ``close()``."""
    from atlas.execute import local

    def count(kind: str, n: int) -> None:
        context.count(kind, True, n)

    if options.scheduler:
        from atlas.execute.dask import DaskExecutor

        def record(task, seconds: float) -> None:
            for name in [task.kind] + ([f"{task.kind}:{task.model.id}"] if task.model else []):
                measured.record(name, seconds, task.gflop, len(task.jobs))

        return DaskExecutor(
            options.scheduler, context.config.cache, count, options.progress, context.timer, record
        )
    runner = local.LocalRun(
        cache=context.cache,
        get_model=models.get,
        timer=context.timer,
        count=count,
        progress=options.progress,
        throughput=measured,
        in_use=models.in_use,
    )
    return local.LocalExecutor(runner, beside=not options.serial)


def _save_throughput(cache: Cache, throughput) -> None:
    from atlas.plan.estimate import THROUGHPUT

    try:
        cache.write_aux(THROUGHPUT, throughput.to_json().encode())
    except AtlasError as error:  # only for estimates
        log.warning("could not record the throughput: %s", error)


def _missing(jobs: list[Job], cache: Cache, force: bool) -> list[Job]:
    return list(jobs) if force else [job for job in jobs if not cache.has(job.key)]


def _render_grids(model_plan: ModelPlan, context: BuildContext, options: BuildOptions) -> None:
    cache = context.cache
    for layer, job in model_plan.grids.items():
        if not options.force and cache.has(job.key):
            context.count("grid", False)
            continue
        entries = [cache.get(unit.key) for unit in model_plan.units[layer]]
        if any(entry is None for entry in entries):
            continue  # an interrupted or partial build: no grid yet
        from atlas.render.photos import stitch_grids  # numpy and Pillow: only to render

        files = stitch_grids(
            [e.read("unit.webp") for e in entries],
            [e.meta.get("objective") for e in entries],
            model_plan.config.render.best_grid,
        )
        cache.put(job.key, {"units": len(entries)}, files)
        context.count("grid", True)


def _referenced_keys(context: BuildContext) -> set[str]:
    """Every cache key the build uses: its planned jobs' and the models' facts."""
    keys = {job.key for job in planned_jobs(context)}
    keys.update(plan.facts_job(m.config, m.identity).key for m in context.models)
    return keys
