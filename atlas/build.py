"""``atlas build``: load_config -> plan jobs -> render through the cache -> pages -> write.

Everything is planned before anything is rendered: each job has a key, the cache says
what is missing, and TensorFlow is imported only if something is. The site is written to
a temporary folder beside the output and swapped in at the end, so a failed or
interrupted build leaves the previous site as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from atlas import checks, plan
from atlas.breeds import BreedMap, load_breeds, load_class_index
from atlas.cache import Cache
from atlas.config import Config, ModelConfig, load_config
from atlas.dataset import DatasetImage, DatasetScan, scan_dataset
from atlas.plan import Job

log = logging.getLogger(__name__)

SCAN_MEMO = "scan-memo.json"


@dataclass(frozen=True)
class BuildOptions:
    force: bool = False
    prune: bool = False
    progress: bool = True
    wait: float = 0.0
    max_steps: int | None = None  # caps optimisation steps (tests)


@dataclass
class StageTimer:
    """Seconds per stage; a stage inside another counts only towards itself, so the
    stages add up to the build's time."""

    seconds: dict[str, float] = field(default_factory=dict)
    _nested: list[float] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        self._nested.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            inner = self._nested.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - inner
            if self._nested:
                self._nested[-1] += elapsed


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
    grids: dict[str, Job] = field(default_factory=dict)
    exemplars: dict[str, Job] = field(default_factory=dict)

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.facts["input_size"])


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
    output: Path
    pages: int
    site_bytes: int
    rendered: dict[str, int]
    reused: dict[str, int]
    seconds: dict[str, float]
    skipped: int
    tensorflow_loaded: bool


class _Models:
    """Loads each model at most once per build, only when something must be rendered."""

    def __init__(self, timer: StageTimer) -> None:
        self._loaded: dict[str, object] = {}
        self._timer = timer

    def get(self, config: ModelConfig):
        if config.id not in self._loaded:
            with self._timer.stage("load models"):
                from atlas.models import load_model

                log.info("loading model %s", config.id)
                self._loaded[config.id] = load_model(config)
        return self._loaded[config.id]


def build(config_path: Path | str, options: BuildOptions = BuildOptions()) -> BuildReport:
    """Build the site described by a config file. See the module docstring.

    Raises:
        ConfigError: invalid config (exit 2), before anything is written.
        AtlasError: a model, the cache or the output cannot be used.
        KeyboardInterrupt: after keeping every finished asset.
    """
    timer = StageTimer()
    with timer.stage("config"):
        config = load_config(config_path)
    cache = Cache(config.cache)
    cache.lock(options.wait)
    try:
        return _build(config, cache, options, timer)
    except KeyboardInterrupt as interrupt:
        interrupt.kept = cache.written  # for the CLI's "how much was kept" line
        raise
    finally:
        cache.unlock()


def _build(config: Config, cache: Cache, options: BuildOptions, timer: StageTimer
           ) -> BuildReport:
    from atlas.site import write_site

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
            context.models.append(_plan_model(config, model, scan, detailed, breeds, cache,
                                              models, options, context))
    # Time not taken by a render stage within is spent reading and checking the cache.
    with timer.stage("cache checks"):
        with timer.stage("render photos"):
            _render_photos(context, options)
        for model_plan in context.models:
            _render_model(model_plan, context, models, options)
    with timer.stage("pages"):
        output, pages, size = write_site(context)
    if options.prune:
        keep = _referenced_keys(context)
        removed, freed = cache.prune(keep)
        log.info("pruned %d cache entries (%.1f MB)", removed, freed / 1e6)
    return BuildReport(output=output, pages=pages, site_bytes=size, rendered=context.rendered,
                       reused=context.reused, seconds=dict(timer.seconds),
                       skipped=len(scan.skipped),
                       tensorflow_loaded="tensorflow" in sys.modules)


def _scan(config: Config, cache: Cache) -> DatasetScan:
    memo_path = cache.root / SCAN_MEMO
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    before = len(memo)
    scan = scan_dataset(config.dataset.images, config.dataset.annotations, known=memo)
    if len(memo) != before:
        temp = memo_path.with_name(f".{SCAN_MEMO}.{uuid.uuid4().hex}")
        try:
            temp.write_text(json.dumps(memo, sort_keys=True), encoding="utf-8")
            os.replace(temp, memo_path)
        except OSError as error:  # only an optimisation: the next build decodes again
            log.warning("cannot save the scan memo in %s (%s)", cache.root,
                        error.strerror or error)
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
    if not scan.images:
        from atlas.errors import AtlasError

        raise AtlasError(f"{config.dataset.images}: no usable images "
                         f"({len(scan.skipped)} skipped)")
    return scan


def _count(context: BuildContext, kind: str, rendered: bool, n: int = 1) -> None:
    target = context.rendered if rendered else context.reused
    target[kind] = target.get(kind, 0) + n


def _plan_model(config: Config, model: ModelConfig, scan: DatasetScan,
                detailed: list[DatasetImage], breeds: BreedMap, cache: Cache, models: _Models,
                options: BuildOptions, context: BuildContext) -> ModelPlan:
    identity = plan.model_identity(model)
    job = plan.facts_job(model, identity)
    entry = None if options.force else cache.get(job.key)
    if entry is None:
        from atlas.render.run import model_facts

        entry = cache.put(job.key, model_facts(models.get(model)))
        _count(context, "facts", True)
    facts = entry.meta
    conv = [layer for layer in facts["layers"] if layer["is_conv"]]
    names = [layer["name"] for layer in conv]
    key = f"models[{config.models.index(model)}]"
    checks.report(checks.layer_patterns(key, model, names), config.path)
    selected = set(plan.select_layers(names, model.layers))
    chosen = [layer for layer in conv if layer["name"] in selected]
    size = tuple(facts["input_size"])
    result = ModelPlan(config=model, identity=identity, facts=facts, layers=chosen)
    result.predict = [plan.predict_job(model, identity, image, size) for image in scan.images]
    layer_names = [layer["name"] for layer in chosen]
    for image in detailed:
        breed = breeds.breeds.get(image.breed)
        second = breed.class_indices[0] if breed is not None and breed.mapped else -1
        result.images.append(plan.image_job(model, identity, image, layer_names, second, size))
    limit = model.render.units_per_layer
    params = plan.unit_params(model, config.models.index(model), size)
    result.params = params
    for layer in chosen:
        count = layer["channels"] if limit is None else min(limit, layer["channels"])
        result.units[layer["name"]] = [
            plan.unit_job(model, identity, layer["name"], unit, size, params)
            for unit in range(count)]
        result.grids[layer["name"]] = plan.grid_job(
            model, layer["name"], [job.key for job in result.units[layer["name"]]])
    return result


def _missing(jobs: list[Job], cache: Cache, force: bool) -> list[Job]:
    return list(jobs) if force else [job for job in jobs if not cache.has(job.key)]


def _progress(total: int, description: str, enabled: bool) -> tuple[Callable[[int], None],
                                                                      Callable[[], None]]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=description, unit="", disable=not enabled or total == 0,
               file=sys.stderr, dynamic_ncols=True, leave=True)
    return bar.update, bar.close


def _render_photos(context: BuildContext, options: BuildOptions) -> None:
    from atlas.render_assets import render_photo

    wanted = {image.name: image for image in context.scan.images}
    jobs = [plan.photo_job(image) for image in wanted.values()]
    missing = _missing(jobs, context.cache, options.force)
    _count(context, "photo", False, len(jobs) - len(missing))
    update, close = _progress(len(missing), "photos", options.progress)
    try:
        for job in missing:
            render_photo(wanted[job.image], context.cache, job.key, plan.PHOTO_SIDE,
                         plan.THUMB_SIDE)
            update(1)
            _count(context, "photo", True)
    finally:
        close()


def _render_model(model_plan: ModelPlan, context: BuildContext, models: _Models,
                  options: BuildOptions) -> None:
    cache, force = context.cache, options.force
    timer = context.timer
    images = {image.name: image for image in context.scan.images}
    model_id = model_plan.config.id
    stages = [
        ("predict", model_plan.predict, "predictions"),
        ("image", model_plan.images, "activations + Grad-CAM"),
        ("unit", [j for jobs in model_plan.units.values() for j in jobs], "units"),
    ]
    for kind, jobs, label in stages:
        missing = _missing(jobs, cache, force)
        _count(context, kind, False, len(jobs) - len(missing))
        if not missing:
            continue
        from atlas.render import run

        loaded = models.get(model_plan.config)
        update, close = _progress(len(missing), f"{model_id}: {label}", options.progress)

        def counted(n: int, kind: str = kind, update=update) -> None:
            update(n)
            _count(context, kind, True, n)

        try:
            with timer.stage(f"render {label}"):
                if kind == "predict":
                    run.run_predictions(loaded, missing, images, cache, counted)
                elif kind == "image":
                    names = [layer["name"] for layer in model_plan.layers]
                    run.run_images(loaded, missing, images, names, cache, counted)
                else:
                    run.run_units(loaded, missing, model_plan.params, cache, counted,
                                  options.max_steps)
        finally:
            close()
    _plan_and_render_exemplars(model_plan, context, models, options)
    with timer.stage("render grids"):
        _render_grids(model_plan, context, options)


def _plan_and_render_exemplars(model_plan: ModelPlan, context: BuildContext,
                               models: _Models, options: BuildOptions) -> None:
    """Second phase: which images excite each unit most is known only from image stats."""
    cache = context.cache
    stats = {job.image: cache.get(job.key) for job in model_plan.images}
    stats = {name: entry for name, entry in stats.items() if entry is not None}
    if not stats:
        return
    digests = {image.name: image.digest for image in context.scan.images}
    jobs = []
    for index, layer in enumerate(model_plan.layers):
        units = len(model_plan.units[layer["name"]])
        per_image = {name: entry.meta["channel_max"][index] for name, entry in stats.items()}
        choices = plan.strongest_images(per_image, units, plan.EXEMPLARS)
        job = plan.exemplars_job(model_plan.config, model_plan.identity, layer["name"],
                                 model_plan.input_size, choices, digests)
        model_plan.exemplars[layer["name"]] = job
        jobs.append(job)
    missing = _missing(jobs, cache, options.force)
    _count(context, "exemplars", False, len(jobs) - len(missing))
    if not missing:
        return
    from atlas.render import run

    loaded = models.get(model_plan.config)
    update, close = _progress(len(missing), f"{model_plan.config.id}: unit exemplars",
                              options.progress)
    images = {image.name: image for image in context.scan.images}
    try:
        with context.timer.stage("render exemplars"):
            run.run_exemplars(loaded, missing, images, cache,
                              lambda n: (update(n), _count(context, "exemplars", True, n)))
    finally:
        close()


def _render_grids(model_plan: ModelPlan, context: BuildContext, options: BuildOptions) -> None:
    from atlas.render_assets import stitch_grids

    cache = context.cache
    for layer, job in model_plan.grids.items():
        if not options.force and cache.has(job.key):
            _count(context, "grid", False)
            continue
        entries = [cache.get(unit.key) for unit in model_plan.units[layer]]
        if any(entry is None for entry in entries):
            continue  # an interrupted or partial build: no grid yet
        files = stitch_grids([e.read("unit.webp") for e in entries],
                             [e.meta.get("objective") for e in entries],
                             model_plan.config.render.best_grid)
        cache.put(job.key, {"units": len(entries)}, files)
        _count(context, "grid", True)


def _referenced_keys(context: BuildContext) -> set[str]:
    keys = {plan.photo_job(image).key for image in context.scan.images}
    for model_plan in context.models:
        keys.add(plan.facts_job(model_plan.config, model_plan.identity).key)
        keys.update(job.key for job in model_plan.predict + model_plan.images)
        keys.update(job.key for jobs in model_plan.units.values() for job in jobs)
        keys.update(job.key for job in model_plan.grids.values())
        keys.update(job.key for job in model_plan.exemplars.values())
    return keys
