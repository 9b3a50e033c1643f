"""Running tasks in this process: one progress bar per model and kind, the unit pictures
in a thread beside the other stages, throughput measured for ``atlas plan``."""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from atlas.config.settings import ModelConfig
from atlas.execute.tasks import LABELS, Task, execute
from atlas.plan import estimate

log = logging.getLogger(__name__)


@dataclass
class LocalRun:
    """What :func:`run_local` needs from the build."""

    cache: object
    get_model: Callable[[ModelConfig], object]
    timer: object
    count: Callable[[str, int], None]  # kind, jobs rendered
    progress: bool = True
    throughput: estimate.Throughput = field(default_factory=lambda: estimate.Throughput({}))
    # Around each task: the loaded models' gate (LoadedModels.in_use)
    in_use: Callable[[], AbstractContextManager] = nullcontext


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
            with runner.in_use():
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
