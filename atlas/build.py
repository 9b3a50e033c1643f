"""``atlas build``: load_config -> plan jobs -> render through the cache -> pages -> write.

Everything is planned before anything is rendered: each job has a key, the cache says
what is missing, and TensorFlow is imported only if something is. The site is written to
a temporary folder beside the output and swapped in at the end, so a failed or
interrupted build leaves the previous site as it was.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from atlas import checks, plan, resources
from atlas.breeds import BreedMap, load_breeds, load_class_index
from atlas.cache import Cache, make_key, open_cache
from atlas.config import Config, ModelConfig, load_config
from atlas.dataset import DatasetImage, DatasetScan, scan_dataset
from atlas.errors import AtlasError, ConfigError, ModelError
from atlas.labels import LabelSpace, count_problem, label_space
from atlas.plan import Job

log = logging.getLogger(__name__)

SCAN_MEMO = "scan-memo.json"
EXEMPLAR_MEMO = "exemplar-memo.json"


MAX_LOADED = 3  # models kept loaded at once (see _Models)


@dataclass(frozen=True)
class BuildOptions:
    force: bool = False
    prune: bool = False
    progress: bool = True
    wait: float = 0.0
    max_steps: int | None = None  # caps optimisation steps (tests)
    shard: tuple[int, int] | None = None  # (I, N): render shard I's share, write no site
    scheduler: str | None = None  # a Dask scheduler address: render on its workers
    serial: bool = False  # unit pictures not beside the other stages (benchmarks)


@dataclass
class StageTimer:
    """Wall-clock and CPU seconds per stage; a stage inside another (in the same thread)
    counts only towards itself. Thread-safe: unit pictures render in a thread of their
    own beside the other stages, so stages in different threads overlap and their sum can
    exceed the build's time. CPU is the whole process's (TensorFlow's threads included),
    so a stage that overlapped another has no CPU figure of its own (None)."""

    seconds: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float | None] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    started_cpu: float = field(default_factory=time.process_time)
    _local: threading.local = field(default_factory=threading.local)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _busy: set[int] = field(default_factory=set)  # threads inside a stage
    _overlaps: int = 0  # times a thread entered a stage while another was inside one

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        nested = self._local.__dict__.setdefault("nested", [])
        me = threading.get_ident()
        with self._lock:
            if not nested:
                self._overlaps += bool(self._busy)
                self._busy.add(me)
            overlaps = self._overlaps
            alone = self._busy == {me}
        start, start_cpu = time.perf_counter(), time.process_time()
        nested.append((0.0, 0.0))
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            used = time.process_time() - start_cpu
            inner, inner_cpu = nested.pop()
            with self._lock:
                alone = alone and overlaps == self._overlaps
                self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - inner
                before = self.cpu.get(name, 0.0)
                self.cpu[name] = (
                    before + used - inner_cpu if alone and before is not None else None
                )
                if not nested:
                    self._busy.discard(me)
            if nested:
                outer, outer_cpu = nested[-1]
                nested[-1] = (outer + elapsed, outer_cpu + used)


@dataclass
class ModelPlan:
    """One model's jobs and what the cache says of them."""

    config: ModelConfig
    identity: dict
    facts: dict
    layers: list[dict]  # the selected conv layers' facts
    params: object = None  # the filter-visualization method's parameters
    predict: list[Job] = field(default_factory=list)
    images: list[Job] = field(default_factory=list)
    units: dict[str, list[Job]] = field(default_factory=dict)
    views: dict[str, list[Job]] = field(default_factory=dict)  # negative, diversity jobs
    grids: dict[str, Job] = field(default_factory=dict)
    exemplars: dict[str, Job] = field(default_factory=dict)
    scores: list[Job] = field(default_factory=list)  # CAM scores per image (atlas.scores)
    space: LabelSpace | None = None  # the model's classes; None: a feature extractor

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.facts["input_size"])

    @property
    def evaluation(self) -> str:
        """Which photos the accuracy is computed on."""
        trained = self.config.trained_on
        return "all photos" if trained == "none" else f"photos outside the {trained} split"


@dataclass
class BuildContext:
    """What the page stage needs: config, dataset, plans, cache."""

    config: Config
    scan: DatasetScan
    detailed: list[DatasetImage]
    breeds: BreedMap
    models: list[ModelPlan]
    cache: Cache
    timer: StageTimer
    rendered: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)


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


class _Models:
    """Loads models only when something must be rendered, and keeps the
    :data:`MAX_LOADED` most recently used: a build of many models (a zoo of applications)
    would otherwise hold every model and its traced renderers to the end (12 GB for 20
    models). A released model is loaded again if a later task needs it; a task that is
    using it keeps its own reference meanwhile."""

    def __init__(self, timer: StageTimer, max_loaded: int = MAX_LOADED) -> None:
        self._loaded: dict[str, object] = {}  # least recently used first
        self._timer = timer
        self._max = max_loaded
        self._lock = threading.Lock()  # the unit pictures' thread loads models too

    def get(self, config: ModelConfig):
        with self._lock:
            loaded = self._loaded.pop(config.id, None)
            if loaded is None:
                loaded = self._load(config)
            self._loaded[config.id] = loaded
            released = False
            while len(self._loaded) > self._max:
                oldest = next(iter(self._loaded))
                log.debug("releasing model %s", oldest)
                del self._loaded[oldest]
                released = True
        if released:
            gc.collect()  # traced functions hold reference cycles
        return loaded

    def _load(self, config: ModelConfig):
        with self._timer.stage("load models"):
            from atlas.models import load_model

            log.info("loading model %s", config.id)
            return load_model(config)


def build(config_path: Path | str, options: BuildOptions = BuildOptions()) -> BuildReport:
    """Build the site described by a config file. See the module docstring.

    With ``options.shard`` (I, N), render only shard I's share of the missing assets of
    phase one into the cache and write no site (see :mod:`atlas.distribute`).

    Raises:
        ConfigError: invalid config (exit 2), before anything is written.
        AtlasError: a model, the cache or the output cannot be used, or the projected
            site exceeds ``site.max_size`` (before anything is rendered).
        KeyboardInterrupt: after keeping every finished asset.
    """
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


def prepare(config: Config, cache: Cache, options: BuildOptions, timer: StageTimer
            ) -> tuple[BuildContext, _Models]:
    """Scan the dataset and plan every model's jobs (model facts rendered if missing)."""
    with timer.stage("scan"):
        scan = _scan(config, cache)
        class_index = load_class_index(config.dataset.class_index)
        breeds = load_breeds(config.dataset.breeds, class_index)
        detailed = plan.choose_detailed(scan.images, config.dataset.detailed,
                                        config.dataset.per_breed,
                                        config.dataset.detailed_names)
        # Names in the config checked against the dataset, before any rendering.
        checks.report(checks.before_render(config, scan, breeds, detailed), config.path)
    models = _Models(timer)
    context = BuildContext(config=config, scan=scan, detailed=detailed, breeds=breeds,
                           models=[], cache=cache, timer=timer)
    with timer.stage("plan"):
        for model in config.models:
            context.models.append(_plan_model(config, model, context, models, options))
    return context, models


def _build(config: Config, cache: Cache, options: BuildOptions, timer: StageTimer
           ) -> BuildReport:
    from atlas import distribute, estimate, plan_report
    from atlas.site import write_site

    context, models = prepare(config, cache, options, timer)
    with timer.stage("cache checks"):
        current = _current_site(context, options)
    if current is not None:  # nothing to render, project or write
        with timer.stage("pages"):
            written = write_site(context, current, checked=True)
        return _report(written.output, written.pages, written.size, context, timer)
    throughput = estimate.Throughput.from_json(cache.read_aux(estimate.THROUGHPUT))
    with timer.stage("plan"):
        table = plan_report.rows(context, throughput, options.max_steps, options.force)
        plan_report.check_budget(config, table, plan_report.widest_layer(context))

    def missing(jobs: list[Job]) -> list[Job]:
        todo = _missing(jobs, cache, options.force)
        if jobs:
            _count(context, jobs[0].kind, False, len(jobs) - len(todo))
        return todo

    measured = estimate.Throughput({})
    run = _executor(context, models, options, measured)
    # Time not taken by a render stage within is spent reading and checking the cache.
    try:
        with timer.stage("cache checks"):
            tasks = distribute.phase_one_tasks(context, missing, options.max_steps)
            if options.shard is not None:
                index, count = options.shard
                tasks = distribute.shard_share(context, tasks, index, count, throughput)
                log.info("shard %d/%d: %d of the missing tasks", index, count, len(tasks))
            run(tasks)  # locally, the unit pictures go on beside what follows
            if options.shard is None:
                images = {image.name: image for image in context.scan.images}
                for model_plan in context.models:  # from the image statistics alone
                    jobs = _exemplar_jobs(model_plan, context, missing)
                    run(distribute.exemplar_tasks(model_plan, jobs, images))
            run.wait()
            if options.shard is None:
                for model_plan in context.models:
                    with timer.stage("render grids"):
                        _render_grids(model_plan, context, options)
    finally:
        run.close()
    if measured.kinds:  # a build that rendered nothing measured nothing
        _save_throughput(cache, throughput.updated(measured))
    if options.shard is not None:
        return _report(None, 0, 0, context, timer)
    with timer.stage("pages"):
        from atlas.manifest import inputs_digest

        written = write_site(context, inputs_digest(context, resources.templates()))
    if options.prune:
        keep = _referenced_keys(context)
        removed, freed = cache.prune(keep)
        log.info("pruned %d cache entries (%.1f MB)", removed, freed / 1e6)
    return _report(written.output, written.pages, written.size, context, timer,
                   written.pages_written)


def _current_site(context: BuildContext, options: BuildOptions) -> str | None:
    """The inputs digest, when the site in the output folder was built from exactly these
    inputs, every entry it reads is present, and the site is untouched since; else None.

    Then the build has nothing to render and its budget held when the site was written:
    the no-op rebuild skips the plan's projection (a stamp per entry, ~0.5 s on the
    default site) and the per-job checks, and every planned job counts as reused.
    """
    from atlas import manifest

    if options.force or options.prune or options.shard is not None:
        return None
    for model_plan in context.models:  # the exemplar jobs from the memoised image stats
        _exemplar_jobs(model_plan, context)
    keys = manifest.entry_keys(context)
    output = context.config.site.output
    previous = manifest.read(context.cache, output)
    if previous is None or any(context.cache.stamp(key) is None for key in keys):
        return None
    inputs = manifest.inputs_digest(context, resources.templates())
    if not manifest.up_to_date(output, inputs, previous):
        return None
    for job in _planned_jobs(context):
        _count(context, job.kind, False)
    return inputs


def _planned_jobs(context: BuildContext) -> list[Job]:
    """Every job of the build but the models' facts, a photo once however many models
    read it."""
    jobs = [plan.photo_job(image) for image in context.scan.images]
    for model_plan in context.models:  # the facts were counted when planned
        jobs += model_plan.predict + model_plan.images + model_plan.scores
        jobs += [job for layer in model_plan.units.values() for job in layer]
        jobs += [job for layer in model_plan.views.values() for job in layer]
        jobs += list(model_plan.grids.values()) + list(model_plan.exemplars.values())
    return jobs


def _report(output: Path | None, pages: int, size: int, context: BuildContext,
            timer: StageTimer, pages_written: int = 0) -> BuildReport:
    return BuildReport(output=output, pages=pages, site_bytes=size, rendered=context.rendered,
                       reused=context.reused, seconds=dict(timer.seconds),
                       cpu_seconds=dict(timer.cpu),
                       wall_seconds=time.perf_counter() - timer.started,
                       cpu_total=time.process_time() - timer.started_cpu,
                       skipped=len(context.scan.skipped),
                       tensorflow_loaded="tensorflow" in sys.modules,
                       pages_written=pages_written, peak_rss_bytes=peak_rss())


def peak_rss() -> int:
    """This process's peak resident memory so far, in bytes (0 where unknown)."""
    try:
        import resource
    except ImportError:  # not on this system
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux counts kilobytes


def _executor(context: BuildContext, models: _Models, options: BuildOptions, measured):
    """Runs tasks here, or on the Dask scheduler of ``--scheduler``; has ``close()``."""
    from atlas import distribute

    def count(kind: str, n: int) -> None:
        _count(context, kind, True, n)

    if options.scheduler:
        from atlas.dask_executor import DaskExecutor

        def record(task, seconds: float) -> None:
            for name in [task.kind] + ([f"{task.kind}:{task.model.id}"] if task.model else []):
                measured.record(name, seconds, task.gflop, len(task.jobs))

        return DaskExecutor(options.scheduler, context.config.cache, count, options.progress,
                            context.timer, record)
    runner = distribute.LocalRun(cache=context.cache, get_model=models.get,
                                 timer=context.timer, count=count,
                                 progress=options.progress, throughput=measured)
    return distribute.LocalExecutor(runner, beside=not options.serial)


def _save_throughput(cache: Cache, throughput) -> None:
    from atlas.estimate import THROUGHPUT

    try:
        cache.write_aux(THROUGHPUT, throughput.to_json().encode())
    except AtlasError as error:  # only for estimates
        log.warning("could not record the throughput: %s", error)


def _scan(config: Config, cache: Cache) -> DatasetScan:
    memo = cache.read_memo(SCAN_MEMO)
    before = len(memo)
    scan = scan_dataset(config.dataset.images, config.dataset.annotations, known=memo)
    if len(memo) != before:
        cache.write_memo(SCAN_MEMO, memo)
    if not scan.images:
        raise AtlasError(f"{config.dataset.images}: no usable images "
                         f"({len(scan.skipped)} skipped)")
    return scan


def _count(context: BuildContext, kind: str, rendered: bool, n: int = 1) -> None:
    target = context.rendered if rendered else context.reused
    target[kind] = target.get(kind, 0) + n


def _plan_model(config: Config, model: ModelConfig, context: BuildContext, models: _Models,
                options: BuildOptions) -> ModelPlan:
    """One model's jobs: its facts (cached or from the loaded model), the checks that need
    them (layer patterns, classes), then every job with its key."""
    index = config.models.index(model)
    identity = plan.model_identity(model)
    facts, cached = _model_facts(model, identity, context, models, options)
    conv = [layer for layer in facts["layers"] if layer["is_conv"]]
    names = [layer["name"] for layer in conv]
    checks.report(checks.layer_patterns(f"models[{index}]", model, names), config.path)
    selected = set(plan.select_layers(names, model.layers))
    chosen = [layer for layer in conv if layer["name"] in selected]
    space = _label_space(config, index, model, facts, context, cached)
    size = tuple(facts["input_size"])
    result = ModelPlan(config=model, identity=identity, facts=facts, layers=chosen, space=space)
    if space is not None:
        result.predict = [plan.predict_job(model, identity, image, size)
                          for image in context.scan.images]
    layer_names = [layer["name"] for layer in chosen]
    for image in context.detailed:
        second = space.true_class(image.breed, image.species) if space is not None else -1
        result.images.append(plan.image_job(model, identity, image, layer_names, second, size,
                                            gradcam=space is not None))
    if space is not None:
        result.scores = _score_jobs(config, model, result.images, context)
    limit = model.render.units_per_layer
    result.params = plan.unit_params(model, index, size)
    for layer in chosen:
        count = layer["channels"] if limit is None else min(limit, layer["channels"])
        result.units[layer["name"]] = [
            plan.unit_job(model, layer, unit, result.params) for unit in range(count)]
        result.grids[layer["name"]] = plan.grid_job(
            model, layer["name"], [job.key for job in result.units[layer["name"]]])
        result.views[layer["name"]] = _view_jobs(model, layer, count, result.params)
    return result


def _view_jobs(model: ModelConfig, layer: dict, count: int, params: object) -> list[Job]:
    """The costly unit views (negative, diversity) of a layer's chosen units."""
    from atlas.unit_views import COSTLY, costly_units

    settings = model.render.unit_views
    views = [view for view in COSTLY if settings.has(view)]
    return [plan.view_job(model, layer, unit, params, view)
            for unit in costly_units(count, settings.units) for view in views]


def _score_jobs(config: Config, model: ModelConfig, image_jobs: list[Job],
                context: BuildContext) -> list[Job]:
    """A scores job for each detailed photo with a trimap or chosen for faithfulness."""
    from atlas.trimaps import STEPS, find_trimaps

    names = [job.image for job in image_jobs]
    trimaps = find_trimaps(config.dataset.annotations, names)
    detailed = [image for image in context.detailed if image.name in set(names)]
    faithful = set(plan.faithfulness_images(detailed, trimaps,
                                            model.render.faithfulness_photos))
    return [plan.scores_job(model, job, trimaps.get(job.image), job.image in faithful, STEPS)
            for job in image_jobs if job.image in trimaps or job.image in faithful]


def _model_facts(model: ModelConfig, identity: dict, context: BuildContext, models: _Models,
                 options: BuildOptions) -> tuple[dict, bool]:
    """The model's facts and whether they came from the cache (no model was loaded)."""
    job = plan.facts_job(model, identity)
    entry = None if options.force else context.cache.get(job.key)
    if entry is not None:
        _count(context, "facts", False)
        return entry.meta, True
    from atlas.render.run import model_facts

    entry = context.cache.put(job.key, model_facts(models.get(model)))
    _count(context, "facts", True)
    return entry.meta, False


def _label_space(config: Config, index: int, model: ModelConfig, facts: dict,
                 context: BuildContext, cached: bool) -> LabelSpace | None:
    """The model's label space, checked against its outputs before anything is rendered.

    Raises:
        ConfigError: (exit 2) the labels do not fit, known from the config and cached facts.
        ModelError: (exit 1) the same, found only by loading the model.
    """
    key = f"models[{index}].classes"
    try:
        space = label_space(model.classes, facts["classes"], context.breeds,
                            config.dataset.annotations)
    except AtlasError as error:
        raise ConfigError([(key, str(error))], source=str(config.path)) from None
    problem = count_problem(model.id, model.classes, facts["classes"], space)
    if problem is None:
        return space
    if cached:
        raise ConfigError([(key, problem)], source=str(config.path))
    raise ModelError(f"{config.path.name}: {key}: {problem}")


def _missing(jobs: list[Job], cache: Cache, force: bool) -> list[Job]:
    return list(jobs) if force else [job for job in jobs if not cache.has(job.key)]


def _exemplar_choices(model_plan: ModelPlan, cache: Cache) -> dict[str, dict] | None:
    """Per layer, each unit's strongest images (None before any image stats exist).

    Reading 111 images' stats costs more than the rest of a warm build's checks, so the
    answer is memoised under a key of the image entries' keys and stamps."""
    layers = [(layer["name"], len(model_plan.units[layer["name"]]))
              for layer in model_plan.layers]
    from atlas.unit_views import LEAST, MOST, most_and_least

    images = [(job.image, job.key, cache.stamp(job.key)) for job in model_plan.images]
    key = make_key({"images": images, "layers": layers, "most": MOST, "least": LEAST,
                    "by": "channel_mean"})
    memo = cache.read_memo(EXEMPLAR_MEMO)
    remembered = memo.get(model_plan.config.id, {})
    if remembered.get("key") == key:
        return {layer: {int(unit): names for unit, names in choices.items()}
                for layer, choices in remembered["choices"].items()}
    stats = {job.image: cache.get(job.key) for job in model_plan.images}
    stats = {name: entry for name, entry in stats.items() if entry is not None}
    if not stats:
        return None
    result = {}
    for index, (name, units) in enumerate(layers):
        per_image = {image: entry.meta["channel_mean"][index] for image, entry in stats.items()}
        result[name] = most_and_least(per_image, units)
    memo[model_plan.config.id] = {"key": key, "choices": result}
    cache.write_memo(EXEMPLAR_MEMO, memo)
    return result


def _exemplar_jobs(model_plan: ModelPlan, context: BuildContext,
                   missing: Callable[[list[Job]], list[Job]] | None = None) -> list[Job]:
    """Second phase: which photos excite each unit most is known only from the image
    stats. Sets ``model_plan.exemplars``; returns the jobs ``missing`` keeps (all if None),
    or none while any image's stats are missing."""
    if not model_plan.config.render.unit_views.has("dataset"):
        return []
    choices = _exemplar_choices(model_plan, context.cache)
    if choices is None:
        return []
    digests = {image.name: image.digest for image in context.scan.images}
    jobs = []
    for layer in model_plan.layers:
        job = plan.exemplars_job(model_plan.config, layer, model_plan.input_size,
                                 choices[layer["name"]], digests)
        model_plan.exemplars[layer["name"]] = job
        jobs.append(job)
    return missing(jobs) if missing is not None else jobs


def _render_grids(model_plan: ModelPlan, context: BuildContext, options: BuildOptions) -> None:
    cache = context.cache
    for layer, job in model_plan.grids.items():
        if not options.force and cache.has(job.key):
            _count(context, "grid", False)
            continue
        entries = [cache.get(unit.key) for unit in model_plan.units[layer]]
        if any(entry is None for entry in entries):
            continue  # an interrupted or partial build: no grid yet
        from atlas.render_assets import stitch_grids  # numpy and Pillow: only to render

        files = stitch_grids([e.read("unit.webp") for e in entries],
                             [e.meta.get("objective") for e in entries],
                             model_plan.config.render.best_grid)
        cache.put(job.key, {"units": len(entries)}, files)
        _count(context, "grid", True)


def _referenced_keys(context: BuildContext) -> set[str]:
    """Every cache key the build uses: its planned jobs' and the models' facts."""
    keys = {job.key for job in _planned_jobs(context)}
    keys.update(plan.facts_job(m.config, m.identity).key for m in context.models)
    return keys
