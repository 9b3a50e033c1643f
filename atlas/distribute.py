"""Executors: the missing jobs of a build grouped into tasks, run here, in shards or on Dask.

A :class:`Task` is a batch that one renderer call handles at once: a layer's missing
units (one batched optimisation, as a one-process build does, so pictures are identical
whichever executor ran them), a batch of photos, predictions or image maps, or a layer's
strongest-photo maps. A task carries everything a worker needs (the model's config, the
jobs, the photos they read) and is picklable.

* local: :func:`run_local` runs the tasks in this process, one progress bar per model
  and kind, and measures throughput for ``atlas plan``.
* shards: :func:`shard_share` splits the missing tasks of phase one (photos,
  predictions, image maps, units) into N shares balanced by estimated seconds (longest
  first onto the least-loaded share). The first shard of a plan records the split in the
  cache (``shards/<plan>-<N>.json``, created exclusively), so shards started later, when
  others have finished work, still take their share of the same split.
* Dask: :mod:`atlas.dask_executor`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from atlas import estimate, plan
from atlas.config import ModelConfig
from atlas.dataset import DatasetImage
from atlas.errors import AtlasError, ConfigError
from atlas.plan import Job

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
}
PHASE_ONE = ("photo", "predict", "image", "scores", "unit")


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


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N), 1 <= I <= N.

    Raises:
        ConfigError: anything else (exit 2).
    """
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError([("--shard", f"expected I/N such as 1/4, got {text!r}")]) from None
    if not 1 <= index <= count:
        raise ConfigError([("--shard", f"{text}: I must be between 1 and N")])
    return index, count


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
        facts, config = model_plan.facts, model_plan.config
        prefix = estimate.prefix_flops(facts)
        for kind, jobs, size in (
            ("predict", model_plan.predict, PREDICT_BATCH),
            ("image", model_plan.images, IMAGE_BATCH),
            ("scores", model_plan.scores, SCORES_BATCH),  # read the image maps: after them
        ):
            for chunk in _chunks(missing(jobs), size):
                gflop = sum(
                    estimate.job_gflop(
                        kind, facts, prefix, images=_curves(job, len(model_plan.layers))
                    )
                    for job in chunk
                )
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
        steps = estimate.unit_steps(model_plan.params, max_steps)
        # In network order, across layers: a renderer serves a run of layers (one trace),
        # and its batches may mix them (and mix channel, negative and diversity pictures),
        # so a small layer is not a small batch.
        units = _picture_jobs(context, model_plan, missing, scheduled)
        for chunk in _chunks(units, UNIT_BATCH):
            gflop = sum(
                estimate.job_gflop(job.kind, facts, prefix, layer=job.layer, steps=steps)
                for job in chunk
            )
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


def _picture_jobs(context, model_plan, missing: Callable, scheduled: set[str]) -> list[Job]:
    """A model's missing unit pictures (channel, negative, diversity), layer by layer,
    less those another model already schedules (counted as reused)."""
    found = []
    for name, jobs in model_plan.units.items():
        views = model_plan.views.get(name, [])
        for kind_jobs in (jobs, *([j for j in views if j.kind == k] for k in ("negative",
                                                                              "diversity"))):
            todo = missing(kind_jobs) if kind_jobs else []
            kept = [job for job in todo if job.key not in scheduled]
            scheduled.update(job.key for job in kept)
            if len(kept) < len(todo):
                kind = todo[0].kind
                context.reused[kind] = context.reused.get(kind, 0) + len(todo) - len(kept)
            found += kept
    return found


def _curves(job: Job, layers: int) -> int:
    """Forward passes of a scores job: its deletion/insertion curves (1 for other kinds)."""
    if job.kind != "scores":
        return 1
    if not job.extra["faithful"]:
        return 0
    from atlas.trimaps import STEPS

    return 3 + 2 * (STEPS - 1) * layers * len(job.extra["methods"])


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


def execute(
    task: Task, cache, get_model: Callable[[ModelConfig], object], progress: Callable[[int], None]
) -> None:
    """Render one task's jobs into the cache (in this process)."""
    images = {image.name: image for image in task.images}
    if task.kind == "photo":
        from atlas.render_assets import render_photo

        for job in task.jobs:
            render_photo(images[job.image], cache, job.key, plan.PHOTO_SIDE, plan.THUMB_SIDE)
            progress(1)
        return
    from atlas.render import run

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
    else:
        raise ValueError(f"unknown task kind {task.kind!r}")


@dataclass
class LocalRun:
    """What :func:`run_local` needs from the build."""

    cache: object
    get_model: Callable[[ModelConfig], object]
    timer: object
    count: Callable[[str, int], None]  # kind, jobs rendered
    progress: bool = True
    throughput: estimate.Throughput = field(default_factory=lambda: estimate.Throughput({}))


class LocalExecutor:
    """Runs tasks in this process (see :func:`run_local`).

    Unit pictures, the longest stage, run in a thread of their own beside the other
    tasks of a call (and of later calls, until :meth:`wait`): TensorFlow releases the GIL,
    so the other stages' forward passes and drawing use the cores that the unit steps
    leave idle. Pictures do not change: each task runs exactly as it would alone.
    """

    def __init__(self, runner: LocalRun, beside: bool = True):
        self.runner = runner
        self.beside = beside
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()

    def __call__(self, tasks: Sequence[Task]) -> None:
        units = [task for task in tasks if task.kind == "unit"]
        rest = [task for task in tasks if task.kind != "unit"]
        if self.beside and units and rest and self._thread is None:
            self._thread = threading.Thread(
                target=self._units, args=(units,), name="atlas-units", daemon=True
            )
            self._thread.start()
            run_local(rest, self.runner)
        else:
            run_local(tasks, self.runner)

    def _units(self, tasks: list[Task]) -> None:
        try:
            run_local(tasks, self.runner, position=1, stop=self._stop)
        except _Stopped:
            pass
        except BaseException as error:  # noqa: BLE001 - raised again by wait()
            self._error = error

    def wait(self) -> None:
        """Wait for the unit pictures; raises what their thread raised."""
        if self._thread is None:
            return
        with self.runner.timer.stage("waiting for unit pictures"):
            self._thread.join()
        self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Stop the unit pictures after their current batch (what finished is kept)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class _Stopped(Exception):
    """The build stopped (an error or Ctrl-C elsewhere): a background task ends early."""


def run_local(
    tasks: Sequence[Task], runner: LocalRun, position: int = 0, stop: threading.Event | None = None
) -> None:
    """Run tasks here, in order, a progress bar per consecutive model and kind."""
    for _, group in itertools.groupby(tasks, key=lambda task: task.label):
        _run_group(list(group), runner, position, stop)


def _run_group(
    group: list[Task], runner: LocalRun, position: int = 0, stop: threading.Event | None = None
) -> None:
    from tqdm import tqdm

    total = sum(len(task.jobs) for task in group)
    bar = tqdm(
        total=total,
        desc=group[0].label,
        unit="",
        file=sys.stderr,
        disable=not runner.progress or total == 0,
        dynamic_ncols=True,
        position=position,
        leave=position == 0,
    )
    kind = group[0].kind

    def counted(n: int, job_kind: str | None = None) -> None:
        bar.update(n)
        runner.count(job_kind or kind, n)
        if stop is not None and stop.is_set():
            raise _Stopped

    try:
        for task in group:
            if stop is not None and stop.is_set():
                raise _Stopped
            if task.model is not None:
                runner.get_model(task.model)  # loading is not rendering throughput
            with runner.timer.stage(f"render {LABELS[kind]}"):
                start = time.perf_counter()
                execute(task, runner.cache, runner.get_model, counted)
                seconds = time.perf_counter() - start
                for name in [kind] + ([f"{kind}:{task.model.id}"] if task.model else []):
                    runner.throughput.record(name, seconds, task.gflop, len(task.jobs))
    finally:
        bar.close()


# -- shards ---------------------------------------------------------------------------------
def _seconds(task: Task, throughput: estimate.Throughput) -> float:
    model = task.model.id if task.model is not None else None
    return throughput.seconds(task.kind, task.gflop, len(task.jobs), model)[0]


def split(tasks: Sequence[Task], count: int, throughput: estimate.Throughput) -> list[list[Task]]:
    """``count`` shares of the tasks balanced by estimated seconds: longest task first onto
    the share with the least work so far (ties: lowest share). Deterministic."""
    order = sorted(tasks, key=lambda t: (-_seconds(t, throughput), t.name))
    shares: list[list[Task]] = [[] for _ in range(count)]
    loads = [0.0] * count
    for task in order:
        target = min(range(count), key=lambda i: (loads[i], i))
        shares[target].append(task)
        loads[target] += _seconds(task, throughput)
    return shares


def plan_digest(context) -> str:
    """A digest of every phase-one job of the build: the same plan, the same digest."""
    digest = hashlib.sha256()
    everything = phase_one_tasks(context, list, None)
    for task in everything:
        for job in task.jobs:
            digest.update(job.key.encode())
    return digest.hexdigest()[:24]


def shard_share(
    context, tasks: Sequence[Task], index: int, count: int, throughput: estimate.Throughput
) -> list[Task]:
    """The tasks of shard ``index`` (1-based) of ``count``, keeping one split per plan.

    The first shard to get here writes the split of the jobs missing now; later shards
    read it and take their share's jobs that are still missing.

    Raises:
        AtlasError: the recorded split cannot be read.
    """
    name = f"shards/{plan_digest(context)}-{count}.json"
    shares = split(tasks, count, throughput)
    record = json.dumps([[job.key for task in share for job in task.jobs] for share in shares])
    cache = context.cache
    if not cache.create_exclusive(name, record.encode()):
        try:
            recorded = json.loads(cache.read_aux(name) or b"null")
            mine = set(recorded[index - 1])
        except (ValueError, TypeError, IndexError, KeyError):
            raise AtlasError(
                f"the shard split {name} in the cache is damaged; remove it and "
                "start every shard again"
            ) from None
        log.info("shard %d/%d: using the split recorded in %s", index, count, name)
        kept = []
        for task in tasks:
            jobs = tuple(job for job in task.jobs if job.key in mine)
            if jobs:
                kept.append(_with_jobs(task, jobs))
        return kept
    mine = {task.name for task in shares[index - 1]}
    return [task for task in tasks if task.name in mine]  # in the order a build runs them


def _with_jobs(task: Task, jobs: tuple[Job, ...]) -> Task:
    from dataclasses import replace

    fraction = len(jobs) / len(task.jobs)
    wanted = {job.image for job in jobs}
    return replace(
        task,
        jobs=jobs,
        gflop=task.gflop * fraction,
        images=tuple(i for i in task.images if i.name in wanted) if task.images else (),
    )
