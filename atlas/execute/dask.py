"""Rendering on a Dask cluster: ``atlas build --scheduler tcp://HOST:PORT``.

The driver (the ``atlas build`` process) plans and submits each :class:`~atlas.execute.tasks.Task`
(a layer's units, a batch of photos) as a Dask future; workers render them straight into
the shared cache and return only counts. Everything else is Dask's own machinery:

* :class:`AtlasWorker`, a worker plugin, opens the cache once per worker and keeps each
  loaded model between tasks (loading VGG16 costs seconds; a task of 64 units, minutes).
* Tasks ask for one ``GPU`` resource when any worker advertises one
  (``dask worker ... --resources GPU=1``), so each GPU runs one task at a time.
* A task whose worker dies is rescheduled by the scheduler; a task that fails is retried
  (``retries``) before the build fails.
* The progress bar follows the futures with ``as_completed``; Ctrl-C cancels what has not
  finished and keeps what has (it is already in the cache).

Workers must see the paths of the config (dataset, weights files) and the cache: a shared
file system or an object-store cache (``cache: s3://...``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from atlas.errors import AtlasError
from atlas.execute.tasks import Task, execute

log = logging.getLogger(__name__)

PLUGIN = "atlas"
RETRIES = 2


try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # the dask extra is not installed: _connect says so
    WorkerPlugin = object


class AtlasWorker(WorkerPlugin):
    """Per worker: the cache, opened once, and the models loaded so far."""

    name = PLUGIN

    def __init__(self, cache_location: Path | str):
        self.cache_location = cache_location
        self.cache = None
        self.models: dict[str, object] = {}

    def setup(self, worker) -> None:
        from atlas.cache import open_cache

        self.cache = open_cache(self.cache_location)
        self.models = {}

    def model(self, config):
        """The loaded model of a config entry, loaded on this worker's first task of it."""
        from atlas.plan.jobs import model_identity

        key = config.id + repr(model_identity(config))
        if key not in self.models:
            from atlas.render.load import load_model

            self.models[key] = load_model(config)
        return self.models[key]


def render_task(task: Task, *after: object) -> tuple[str, int, float]:
    """Runs on a worker: render one task into the shared cache (``after``: the results of
    the tasks it reads from, passed only so that Dask runs it after them).

    Returns:
        (kind, jobs rendered, seconds), for the driver's counts and throughput.
    """
    from distributed import get_worker

    plugin = get_worker().plugins[PLUGIN]
    if task.model is not None:
        plugin.model(task.model)  # loaded once per worker, kept between tasks
    start = time.perf_counter()
    execute(task, plugin.cache, plugin.model, lambda *_: None)
    return task.kind, len(task.jobs), time.perf_counter() - start


def _connect(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise AtlasError(
            "--scheduler needs Dask: pip install 'keras-atlas[dask]' (dask and distributed)"
        ) from None
    try:
        return Client(address, timeout="20s", set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise AtlasError(f"cannot reach the Dask scheduler at {address}: {error}") from None


def _resources(client) -> dict[str, float] | None:
    """``{"GPU": 1}`` when a worker advertises GPUs: one task per GPU at a time."""
    workers = client.scheduler_info().get("workers", {})
    has_gpu = any(info.get("resources", {}).get("GPU") for info in workers.values())
    return {"GPU": 1} if has_gpu else None


class DaskExecutor:
    """Runs tasks on a Dask cluster; one client and worker plugin per build."""

    def __init__(
        self,
        address: str,
        cache_location: Path | str,
        count: Callable[[str, int], None],
        progress: bool,
        timer,
        record: Callable[[Task, float], None] | None = None,
    ):
        self.address, self.cache_location = address, cache_location
        self.count, self.progress, self.timer, self.record = count, progress, timer, record
        self.client = None

    def _start(self):
        if self.client is None:
            self.client = _connect(self.address)
            self.client.register_plugin(AtlasWorker(self.cache_location), name=PLUGIN)
        return self.client

    def wait(self) -> None:
        """Nothing runs beside the caller: each call returns when its tasks are done."""

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def __call__(self, tasks: Sequence[Task]) -> None:
        """Render the tasks on the cluster; returns when every task is in the cache.

        Raises:
            AtlasError: the scheduler cannot be reached, or a task failed after retries.
            KeyboardInterrupt: after cancelling the tasks that had not finished.
        """
        if not tasks:
            return
        from distributed import as_completed
        from tqdm import tqdm

        client = self._start()
        by_key = {f"atlas-{task.name}": task for task in tasks}
        bar = tqdm(
            total=sum(len(t.jobs) for t in tasks),
            desc=f"dask: {len(tasks)} tasks",
            unit="",
            file=sys.stderr,
            disable=not self.progress,
            dynamic_ncols=True,
        )
        futures = []
        try:
            resources = _resources(client)
            with self.timer.stage("render on dask"):
                futures = _submit(client, by_key, resources)
                for future in as_completed(futures, loop=client.loop):
                    kind, jobs, seconds = _result(future)
                    for job_kind, count in Counter(j.kind for j in by_key[future.key].jobs).items():
                        self.count(job_kind, count)
                    if self.record is not None:
                        self.record(by_key[future.key], seconds)
                    bar.update(jobs)
        except KeyboardInterrupt:
            pending = [f for f in futures if not f.done()]
            client.cancel(pending)
            log.info(
                "cancelled %d pending Dask tasks; finished ones are in the cache", len(pending)
            )
            raise
        finally:
            bar.close()


def _submit(client, by_key: dict[str, Task], resources) -> list:
    """Every task as a future; a scores task waits for the image tasks whose maps it
    reads (a worker that took it first found no maps, and skipped the photo)."""
    futures: dict[str, object] = {}
    image_task: dict[str, str] = {}  # image job key -> the key of the task rendering it
    for key, task in by_key.items():
        if task.kind == "image":
            image_task.update({job.key: key for job in task.jobs})
    for key, task in by_key.items():  # image tasks come before their scores tasks
        needs = sorted(
            {
                image_task[j.extra["image_key"]]
                for j in task.jobs
                if task.kind == "scores" and j.extra["image_key"] in image_task
            }
        )
        futures[key] = client.submit(
            render_task,
            task,
            *(futures[n] for n in needs),
            key=key,
            resources=resources,
            retries=RETRIES,
            pure=False,
        )
    return list(futures.values())


def _result(future) -> tuple[str, int, float]:
    try:
        return future.result()
    except AtlasError:
        raise
    except Exception as error:  # the worker's exception, after its retries
        raise AtlasError(
            f"a Dask task failed ({future.key}): {type(error).__name__}: {error}"
        ) from error
