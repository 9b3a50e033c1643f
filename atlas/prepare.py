"""The planning half of a build: scan the dataset, then plan every model's jobs.

Planning needs each model's facts (its layers, shapes, classes): from the cache, or by
loading the model once. Everything after this renders or writes; ``atlas plan`` stops here
and prints what the build would do (:func:`run_plan`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from atlas.cache import open_cache
from atlas.cache.store import Cache
from atlas.config.load import load_config
from atlas.config.names import select_layers
from atlas.config.settings import Config, ModelConfig
from atlas.data.breeds import BreedMap, load_breeds, load_class_index
from atlas.data.classmap import dataset_class_map
from atlas.data.layouts import read_classes_file, read_groups
from atlas.data.scan import DatasetScan, scan_dataset
from atlas.errors import AtlasError, ConfigError, ModelError
from atlas.execute.models import LoadedModels
from atlas.model.labels import LabelSpace, count_problem, label_space
from atlas.plan import atlas as atlas_plan
from atlas.plan import checks, estimate, report, select, stages
from atlas.plan import jobs as plan
from atlas.plan.context import BuildContext, ModelPlan, StageTimer
from atlas.plan.jobs import Job

log = logging.getLogger(__name__)

SCAN_MEMO = "scan-memo.json"


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


def prepare(
    config: Config, cache: Cache, options: BuildOptions, timer: StageTimer
) -> tuple[BuildContext, LoadedModels]:
    """Scan the dataset and plan every model's jobs (model facts rendered if missing)."""
    from atlas.render.backend import choose, renderer

    backend = choose(config.backend)  # before anything loads Keras; children inherit it
    with timer.stage("scan"):
        scan = _scan(config, cache)
        class_index = load_class_index(config.dataset.class_index)
        breeds = _class_map(config, scan, class_index)
        detailed = select.choose_detailed(
            scan.images,
            config.dataset.detailed,
            config.dataset.per_breed,
            config.dataset.detailed_names,
        )
        # Names in the config checked against the dataset, before any rendering.
        checks.report(checks.before_render(config, scan, breeds, detailed), config.path)
    models = LoadedModels(timer)
    context = BuildContext(
        config=config,
        scan=scan,
        detailed=detailed,
        breeds=breeds,
        models=[],
        cache=cache,
        timer=timer,
        backend=renderer(backend),
    )
    with timer.stage("plan"):
        for model in config.models:
            context.models.append(_plan_model(config, model, context, models, options))
    return context, models


def _scan(config: Config, cache: Cache) -> DatasetScan:
    dataset = config.dataset
    memo = cache.read_memo(SCAN_MEMO)
    before = len(memo)
    classes = dataset.classes
    if isinstance(classes, Path):
        classes = read_classes_file(classes)
    scan = scan_dataset(
        dataset.images,
        dataset.annotations,
        known=memo,
        layout=dataset.layout,
        classes=classes,
        groups=read_groups(dataset.groups) if dataset.groups else None,
        # read only when the layout is guessed from file names (no list.txt is given)
        known_breeds=(
            _pet_breeds(dataset.breeds)
            if dataset.layout == "auto" and dataset.annotations is None
            else ()
        ),
    )
    if len(memo) != before:
        cache.write_memo(SCAN_MEMO, memo)
    if not scan.images:
        raise AtlasError(f"{dataset.images}: no usable images ({len(scan.skipped)} skipped)")
    if scan.layout != "oxford":
        log.info("dataset: %s layout, %d photos", scan.layout, len(scan.images))
    used = {image.label for image in scan.images}
    for name in scan.classes:
        if name not in used:
            log.warning("%s: class %r has no usable photo", dataset.images, name)
    return scan


def _pet_breeds(path: Path | None) -> frozenset[str]:
    """The pets' breed keys (to tell Oxford file names from camera names); none if the
    breed map cannot be read (then the Oxford layout is not guessed from names)."""
    try:
        return frozenset(json.loads(Path(path).read_text(encoding="utf-8"))["breeds"])
    except (OSError, ValueError, KeyError, TypeError):
        return frozenset()


def _class_map(config: Config, scan: DatasetScan, class_index) -> BreedMap:
    """The dataset's classes against ImageNet's: the pets' breeds.json for the Oxford
    layout, else built from the dataset's classes (and ``dataset.class_map``)."""
    if scan.layout == "oxford":
        return load_breeds(config.dataset.breeds, class_index)
    return dataset_class_map(scan.classes, scan.groups, class_index, config.dataset.class_map)


def _plan_model(
    config: Config,
    model: ModelConfig,
    context: BuildContext,
    models: LoadedModels,
    options: BuildOptions,
) -> ModelPlan:
    """One model's jobs: its facts (cached or from the loaded model), the checks that need
    them (layer patterns, classes), then every job with its key."""
    index = config.models.index(model)
    identity = plan.model_identity(model)
    facts, cached = _model_facts(model, identity, context, models, options)
    conv = [layer for layer in facts["layers"] if layer["is_conv"]]
    names = [layer["name"] for layer in conv]
    checks.report(checks.layer_patterns(f"models[{index}]", model, names), config.path)
    selected = set(select_layers(names, model.layers))
    chosen = [layer for layer in conv if layer["name"] in selected]
    space = _label_space(config, index, model, facts, context, cached)
    size = tuple(facts["input_size"])
    result = ModelPlan(config=model, identity=identity, facts=facts, layers=chosen, space=space)
    if space is not None:
        result.predict = [
            plan.predict_job(model, identity, image, size) for image in context.scan.images
        ]
    layer_names = [layer["name"] for layer in chosen]
    for image in context.detailed:
        second = space.true_class(image.breed, image.species) if space is not None else -1
        result.images.append(
            plan.image_job(
                model, identity, image, layer_names, second, size, gradcam=space is not None
            )
        )
    if space is not None:
        result.scores = _score_jobs(config, model, result.images, len(chosen), context)
    limit = model.render.units_per_layer
    result.params = plan.unit_params(model, index, size)
    for layer in chosen:
        count = layer["channels"] if limit is None else min(limit, layer["channels"])
        result.units[layer["name"]] = [
            plan.unit_job(model, layer, unit, result.params) for unit in range(count)
        ]
        result.grids[layer["name"]] = plan.grid_job(
            model, layer["name"], [job.key for job in result.units[layer["name"]]]
        )
        result.views[layer["name"]] = _view_jobs(model, layer, count, result.params)
    checks.report(checks.atlas_patterns(f"models[{index}]", model, layer_names), config.path)
    result.atlas_plans = atlas_plan.plan_atlases(
        model, identity, chosen, context.scan.images, size, result.params, space is not None
    )
    atlas_plan.known_cells(result.atlas_plans, model, result.params, context.cache)
    result.atlases = {name: p.atlas for name, p in result.atlas_plans.items()}
    return result


def _view_jobs(model: ModelConfig, layer: dict, count: int, params: object) -> list[Job]:
    """The costly unit views (negative, diversity) of a layer's chosen units."""
    from atlas.config.views import COSTLY, costly_units

    settings = model.render.unit_views
    views = [view for view in COSTLY if settings.has(view)]
    return [
        plan.view_job(model, layer, unit, params, view)
        for unit in costly_units(count, settings.units)
        for view in views
    ]


def _score_jobs(
    config: Config,
    model: ModelConfig,
    image_jobs: list[Job],
    layer_count: int,
    context: BuildContext,
) -> list[Job]:
    """A scores job for each detailed photo with a mask or chosen for faithfulness."""
    from atlas.data.masks import STEPS, find_trimaps

    names = [job.image for job in image_jobs]
    trimaps = find_trimaps(config.dataset.annotations, names)
    if config.dataset.masks is not None:
        trimaps = _usable_masks(config.dataset.masks, names, context)
    detailed = [image for image in context.detailed if image.name in set(names)]
    faithful = set(select.faithfulness_images(detailed, trimaps, model.render.faithfulness_photos))
    layers = select.faithfulness_layers(layer_count, model.render.score_layers)
    return [
        plan.scores_job(model, job, trimaps.get(job.image), job.image in faithful, STEPS, layers)
        for job in image_jobs
        if job.image in trimaps or job.image in faithful
    ]


def _model_facts(
    model: ModelConfig,
    identity: dict,
    context: BuildContext,
    models: LoadedModels,
    options: BuildOptions,
) -> tuple[dict, bool]:
    """The model's facts and whether they came from the cache (no model was loaded)."""
    job = plan.facts_job(model, identity)
    entry = None if options.force else context.cache.get(job.key)
    if entry is not None:
        context.count("facts", False)
        return entry.meta, True
    from atlas.render.run import model_facts

    entry = context.cache.put(job.key, model_facts(models.get(model)))
    context.count("facts", True)
    return entry.meta, False


def _label_space(
    config: Config, index: int, model: ModelConfig, facts: dict, context: BuildContext, cached: bool
) -> LabelSpace | None:
    """The model's label space, checked against its outputs before anything is rendered.

    Raises:
        ConfigError: (exit 2) the labels do not fit, known from the config and cached facts.
        ModelError: (exit 1) the same, found only by loading the model.
    """
    key = f"models[{index}].classes"
    try:
        space = label_space(
            model.classes,
            facts["classes"],
            context.breeds,
            config.dataset.annotations,
            _order_source(config, context.scan),
        )
    except AtlasError as error:
        raise ConfigError([(key, str(error))], source=str(config.path)) from None
    problem = count_problem(
        model.id, model.classes, facts["classes"], space, len(context.breeds.breeds)
    )
    if problem is None:
        return space
    if cached:
        raise ConfigError([(key, problem)], source=str(config.path))
    raise ModelError(f"{config.path.name}: {key}: {problem}")


def _usable_masks(folder: Path, names: list[str], context: BuildContext) -> dict[str, Path]:
    """The masks of ``dataset.masks`` for these photos, less those whose size is not their
    photo's (a warning each: such a mask cannot be laid over its photo)."""
    from atlas.data.masks import find_masks, mask_size

    sizes = {image.name: (image.width, image.height) for image in context.scan.images}
    usable = {}
    for name, path in find_masks(folder, names).items():
        size = mask_size(path)
        if size != sizes.get(name):
            log.warning(
                "%s: mask is %s, its photo %s is %s: left out of the CAM scores",
                path,
                "unreadable" if size is None else f"{size[0]}x{size[1]}",
                name,
                "x".join(map(str, sizes.get(name, ("?", "?")))),
            )
            continue
        usable[name] = path
    return usable


def _order_source(config: Config, scan: DatasetScan) -> str | None:
    """Where a dataset's class order comes from, in words (None: the Oxford lists)."""
    if scan.layout == "oxford":
        return None
    if config.dataset.classes is not None:
        return "in dataset.classes order"
    return "sorted folder names" if scan.layout == "folders" else "sorted labels"


def run_plan(config_path: Path | str, as_json: bool = False) -> str:
    """The text (or JSON) ``atlas plan`` prints. Renders nothing; model facts are
    computed (with TensorFlow) only when the cache lacks them."""
    config = load_config(config_path)
    cache = open_cache(config.cache)
    context, _ = prepare(config, cache, BuildOptions(progress=False), StageTimer())
    throughput = calibrated_throughput(cache, probe=True)
    table = report.rows(context, throughput)
    total = report.total_bytes(table)
    if as_json:
        return json.dumps(
            {
                "rows": [row.as_dict() for row in table],
                "site_bytes": round(total),
                "max_size": config.site.max_size,
                "fits": total <= config.site.max_size,
                "seconds": sum(r.seconds for r in table if r.jobs - r.cached),
                "wall_seconds": stages.wall_seconds(table),
                "gflop": sum(r.gflop for r in table),
            },
            indent=1,
        )
    text = report.format_table(table, config.site.max_size)
    costs = stages.quality_costs(context, throughput)
    return text + ("\n" + costs if costs else "")


def calibrated_throughput(cache, probe: bool = False) -> estimate.Throughput:
    """The throughput earlier builds recorded in the cache, its nominal rates scaled to this
    machine by the probe recorded there; with ``probe``, the probe is run (in a fresh
    process, a few seconds) when the cache has none, and recorded."""
    throughput = estimate.Throughput.from_json(cache.read_aux(estimate.THROUGHPUT))
    try:
        found = json.loads(cache.read_aux(estimate.CALIBRATION) or b"null")
    except ValueError:
        found = None
    if found is None and probe:
        found = _probe()
        if found is not None:
            cache.write_aux(estimate.CALIBRATION, json.dumps(found).encode())
    return throughput.calibrated(found)


def _probe() -> dict | None:
    """This machine's speed on a fixed workload (atlas.render.probe), or None."""
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "atlas.render.probe"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        log.warning("the speed probe failed: the plan's times use the reference machine's rates")
        return None
