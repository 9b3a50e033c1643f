"""Executors: the missing jobs of a build grouped into tasks, run here, in shards or on Dask.

A :class:`Task` is a batch that one renderer call handles at once: a layer's missing
units (one batched optimisation, as a one-process build does, so pictures are identical
whichever executor ran them), a batch of photos, predictions or image maps, or a layer's
strongest-photo maps. A task carries everything a worker needs (the model's config, the
jobs, the photos they read) and is picklable.

* local: :mod:`atlas.execute.local` runs the tasks in this process.
* shards: :mod:`atlas.execute.shards` splits them into N balanced shares.
* Dask: :mod:`atlas.execute.dask`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from atlas.config.settings import ModelConfig
from atlas.data.scan import DatasetImage
from atlas.plan import estimate
from atlas.plan import jobs as plan
from atlas.plan.jobs import Job

log = logging.getLogger(__name__)

PHOTO_BATCH = 64
PREDICT_BATCH = 64  # run_predictions' own batch: a task never splits one of its batches
IMAGE_BATCH = 32  # run_images' batch
UNIT_BATCH = 512  # units per task: 8 of the unit renderer's largest batches
SCORES_BATCH = 8  # photos per scores task (each runs its own curves' forward passes)
LABELS = {
    "photo": "photos",
    "predict": "predictions",
    "image": "activations + Grad-CAM",
    "unit": "units",
    "exemplars": "unit exemplars",
    "scores": "CAM scores",
    "atlas_samples": "atlas samples",
    "atlas_labels": "atlas labels",
    "atlas_cell": "atlas cells",
}
PHASE_ONE = ("photo", "predict", "image", "scores", "atlas_samples", "unit")


@dataclass(frozen=True)
class Task:
    """One batch of jobs of one kind for one model (photos: no model)."""

    kind: str
    model: ModelConfig | None
    jobs: tuple[Job, ...]
    images: tuple[DatasetImage, ...] = ()  # the photos the jobs read
    layers: tuple[str, ...] = ()  # image maps: the model's selected layers
    params: object = None  # units: the method's parameters
    gflop: float = 0.0
    max_steps: int | None = None

    @property
    def label(self) -> str:
        prefix = f"{self.model.id}: " if self.model is not None else ""
        return prefix + LABELS[self.kind]

    @property
    def name(self) -> str:
        """Stable and unique within a build: the first job's key."""
        return f"{self.kind}-{self.jobs[0].key[:16]}"


def _chunks(jobs: Sequence[Job], size: int) -> Iterable[tuple[Job, ...]]:
    for start in range(0, len(jobs), size):
        yield tuple(jobs[start : start + size])


def phase_one_tasks(
    context, missing: Callable[[Sequence[Job]], list[Job]], max_steps: int | None
) -> list[Task]:
    """The tasks of the jobs that ``missing`` keeps, in the order a local build runs them.

    A unit shared by two models (the same content address: a frozen backbone in a
    fine-tuned model) is rendered once, by the first model that has it; the others read it
    from the cache (counted as reused).
    """
    images = {image.name: image for image in context.scan.images}
    tasks = []
    scheduled: set[str] = set()
    photos = missing([plan.photo_job(image) for image in context.scan.images])
    tasks += [
        Task("photo", None, chunk, tuple(images[j.image] for j in chunk))
        for chunk in _chunks(photos, PHOTO_BATCH)
    ]
    for model_plan in context.models:
        tasks += _model_tasks(context, model_plan, missing, max_steps, images, scheduled)
    return tasks


def _model_tasks(
    context,
    model_plan,
    missing: Callable[[Sequence[Job]], list[Job]],
    max_steps: int | None,
    images: dict[str, DatasetImage],
    scheduled: set[str],
) -> list[Task]:
    """One model's tasks: predictions, image maps and scores in batches, then its unit
    pictures in network order."""
    tasks = []
    facts, config = model_plan.facts, model_plan.config
    prefix = estimate.prefix_flops(facts)
    for kind, jobs, size in (
        ("predict", model_plan.predict, PREDICT_BATCH),
        ("image", model_plan.images, IMAGE_BATCH),
        ("scores", model_plan.scores, SCORES_BATCH),  # read the image maps: after them
    ):
        for chunk in _chunks(missing(jobs), size):
            gflop = _batch_gflop(kind, chunk, model_plan, prefix)
            tasks.append(
                Task(
                    kind,
                    config,
                    chunk,
                    tuple(images[j.image] for j in chunk),
                    layers=tuple(layer["name"] for layer in model_plan.layers),
                    gflop=gflop,
                )
            )
    tasks += _sample_tasks(model_plan, missing, images, scheduled, prefix)
    # In network order, across layers: a renderer serves a run of layers (one trace),
    # and its batches may mix them (and mix channel, negative and diversity pictures),
    # so a small layer is not a small batch.
    units = _picture_jobs(context, model_plan, missing, scheduled)
    for chunk in _chunks(units, UNIT_BATCH):
        gflop = sum(estimate.picture_gflops(facts, prefix, chunk, model_plan.params, max_steps))
        tasks.append(
            Task(
                "unit",
                config,
                chunk,
                params=model_plan.params,
                gflop=gflop,
                max_steps=max_steps,
            )
        )
    return tasks


def _sample_tasks(
    model_plan, missing: Callable, images: dict[str, DatasetImage], scheduled: set[str], prefix
) -> list[Task]:
    """One task for the model's missing atlas samples (one pass over the photos serves
    every layer), less those another model already schedules (the same tensor)."""
    jobs = [plan.samples for plan in model_plan.atlas_plans.values()]
    todo = [job for job in missing(jobs) if job.key not in scheduled]
    if not todo:
        return []
    scheduled.update(job.key for job in todo)
    names = todo[0].extra["photos"]
    deepest = max(prefix.get(job.layer, 0.0) for job in todo)
    return [
        Task(
            "atlas_samples",
            model_plan.config,
            tuple(todo),
            tuple(images[name] for name in names),
            gflop=deepest * len(names) / 1e9,
        )
    ]


def _picture_jobs(context, model_plan, missing: Callable, scheduled: set[str]) -> list[Job]:
    """A model's missing unit pictures (channel, negative, diversity), layer by layer,
    less those another model already schedules (counted as reused)."""
    found = []
    for name, jobs in model_plan.units.items():
        views = model_plan.views.get(name, [])
        for kind_jobs in (
            jobs,
            *([j for j in views if j.kind == k] for k in ("negative", "diversity")),
        ):
            todo = missing(kind_jobs) if kind_jobs else []
            kept = [job for job in todo if job.key not in scheduled]
            scheduled.update(job.key for job in kept)
            if len(kept) < len(todo):
                kind = todo[0].kind
                context.reused[kind] = context.reused.get(kind, 0) + len(todo) - len(kept)
            found += kept
    return found


def _batch_gflop(kind: str, jobs: Sequence[Job], model_plan, prefix: dict[str, float]) -> float:
    """Estimated GFLOPs of a batch of predictions, image maps or scores (as the plan
    estimates them: the throughput recorded per GFLOP is the plan's rate)."""
    layers = len(model_plan.layers)
    score_passes = layers * model_plan.config.render.scorecam_channels
    return sum(
        estimate.job_gflop(
            kind,
            model_plan.facts,
            prefix,
            images=_curves(job, layers),
            score_passes=score_passes,
        )
        for job in jobs
    )


def _curves(job: Job, layers: int) -> int:
    """Forward passes of a scores job: its deletion/insertion curves (1 for other kinds)."""
    if job.kind != "scores":
        return 1
    from atlas.data.masks import STEPS

    return estimate.faithfulness_passes(job.extra, layers, STEPS)


def exemplar_tasks(model_plan, jobs: Sequence[Job], images: dict[str, DatasetImage]) -> list[Task]:
    """One task per layer's strongest-photo maps."""
    prefix = estimate.prefix_flops(model_plan.facts)
    tasks = []
    for job in jobs:
        names = sorted({n for chosen in job.extra["choices"].values() for n in chosen})
        gflop = estimate.job_gflop(
            "exemplars", model_plan.facts, prefix, layer=job.layer, images=len(names)
        )
        tasks.append(
            Task(
                "exemplars", model_plan.config, (job,), tuple(images[n] for n in names), gflop=gflop
            )
        )
    return tasks


class Stamped:
    """The cache, each entry put through it recording the backend that rendered it
    (``meta["backend"]``: the model and ledger pages say which one did)."""

    def __init__(self, cache, backend: str):
        self._cache, self._backend = cache, backend

    def put(self, key: str, meta: dict, files: dict | None = None):
        return self._cache.put(key, {**meta, "backend": self._backend}, files)

    def __getattr__(self, name: str):
        return getattr(self._cache, name)


def execute(
    task: Task, cache, get_model: Callable[[ModelConfig], object], progress: Callable[[int], None]
) -> None:
    """Render one task's jobs into the cache (in this process)."""
    images = {image.name: image for image in task.images}
    if task.kind == "photo":
        from atlas.render.photos import render_photo

        for job in task.jobs:
            render_photo(images[job.image], cache, job.key, plan.PHOTO_SIDE, plan.THUMB_SIDE)
            progress(1)
        return
    from atlas.render.backend import choose, renderer

    name = choose(task.model.render.backend)  # a worker of another machine: before Keras loads
    from atlas.render import run

    cache = Stamped(cache, renderer(name))
    loaded = get_model(task.model)
    jobs = list(task.jobs)
    if task.kind == "predict":
        run.run_predictions(loaded, jobs, images, cache, progress)
    elif task.kind == "image":
        run.run_images(loaded, jobs, images, list(task.layers), cache, progress)
    elif task.kind == "unit":
        run.run_units(loaded, jobs, task.params, cache, progress, task.max_steps)
    elif task.kind == "exemplars":
        run.run_exemplars(loaded, jobs, images, cache, progress)
    elif task.kind == "scores":
        from atlas.render.faith import run_scores

        run_scores(loaded, jobs, images, cache, progress)
    elif task.kind.startswith("atlas_"):
        from atlas.render import atlas

        if task.kind == "atlas_cell":
            atlas.run_atlas_cells(loaded, jobs, task.params, cache, progress, task.max_steps)
        elif task.kind == "atlas_samples":
            atlas.run_atlas_samples(loaded, jobs, images, cache, progress)
        else:
            atlas.run_atlas_labels(loaded, jobs, images, cache, progress)
    else:
        raise ValueError(f"unknown task kind {task.kind!r}")
