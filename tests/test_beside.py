"""Unit pictures render in a thread beside the other stages of a local build: the same
site as one stage after another, errors and Ctrl-C still stop the build, and the stage
timer keeps wall-clock and CPU figures honest when stages overlap."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import yaml
from sitecheck import files_of

from atlas.build import BuildOptions, StageTimer, build
from atlas.errors import AtlasError
from atlas.execute import local, tasks

LEDGER = "build.html"


def _other(config, name: str):
    data = yaml.safe_load(config.read_text())
    data["cache"] = f"{name}-cache"
    data["site"]["output"] = f"{name}-site"
    path = config.with_name(f"{name}.yaml")
    path.write_text(yaml.safe_dump(data))
    return path


def test_units_beside_the_other_stages_give_the_same_site(small_config) -> None:
    config = small_config(images=3, units_per_layer=3)
    serial = build(_other(config, "serial"), BuildOptions(progress=False, max_steps=3, serial=True))
    beside = build(_other(config, "beside"), BuildOptions(progress=False, max_steps=3))
    assert "waiting for unit pictures" in beside.seconds
    assert "waiting for unit pictures" not in serial.seconds
    assert beside.rendered == serial.rendered and beside.rendered["unit"] > 0
    one, two = files_of(serial.output), files_of(beside.output)
    one.pop(LEDGER), two.pop(LEDGER)
    assert one == two
    # the summary's time is the wall clock, not the sum of overlapping stages
    assert beside.wall_seconds <= sum(beside.seconds.values()) + 0.5


def test_an_error_in_the_unit_thread_stops_the_build(small_config, monkeypatch) -> None:
    from atlas.render import run

    def broken(*args, **kwargs):
        raise AtlasError("the unit renderer broke")

    monkeypatch.setattr(run, "run_units", broken)
    threads = threading.active_count()
    with pytest.raises(AtlasError, match="the unit renderer broke"):
        build(small_config(images=2), BuildOptions(progress=False, max_steps=2))
    assert threading.active_count() == threads


def test_an_error_beside_the_units_stops_them_after_their_batch(small_config, monkeypatch):
    """An error in the other stages (here the image maps) stops the unit thread at its
    next batch; the units it finished stay in the cache."""
    from atlas.render import run

    started = threading.Event()
    real_units = run.run_units

    def slow_units(*args, **kwargs):
        started.set()
        return real_units(*args, **kwargs)

    def broken_images(*args, **kwargs):
        started.wait(30)
        raise AtlasError("the image maps broke")

    monkeypatch.setattr(run, "run_units", slow_units)
    monkeypatch.setattr(run, "run_images", broken_images)
    threads = threading.active_count()
    with pytest.raises(AtlasError, match="the image maps broke"):
        build(small_config(images=2), BuildOptions(progress=False, max_steps=2))
    assert threading.active_count() == threads


def test_overlapping_stages_have_no_cpu_figure_of_their_own() -> None:
    timer = StageTimer()
    with timer.stage("alone"):
        sum(range(200_000))
    inside = threading.Event()
    leave = threading.Event()

    def other() -> None:
        with timer.stage("beside"):
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    inside.wait(10)
    with timer.stage("overlapped"):
        time.sleep(0.01)
    leave.set()
    thread.join()
    assert timer.cpu["alone"] is not None and timer.cpu["alone"] > 0
    assert timer.cpu["overlapped"] is None and timer.cpu["beside"] is None
    assert timer.seconds["overlapped"] >= 0.01


def test_a_nested_stage_counts_only_towards_itself() -> None:
    timer = StageTimer()
    with timer.stage("outer"):
        time.sleep(0.02)
        with timer.stage("inner"):
            time.sleep(0.03)
    assert timer.seconds["inner"] >= 0.03
    assert 0.02 <= timer.seconds["outer"] < 0.03 + 0.02
    assert timer.cpu["outer"] is not None


def test_only_unit_tasks_go_beside() -> None:
    ran: list[tuple[str, str]] = []

    class Runner:
        progress = False
        cache = None
        timer = StageTimer()
        throughput = local.estimate.Throughput({})

        def count(self, kind, n):
            pass

        def get_model(self, model):
            return None

        def in_use(self):
            return contextlib.nullcontext()

    executor = local.LocalExecutor(Runner())
    original = local.execute

    def fake(task, cache, get_model, progress):
        ran.append((task.kind, threading.current_thread().name))

    local.execute = fake
    try:
        batch = [tasks.Task(kind, None, (object(),)) for kind in ("photo", "unit", "image")]
        executor(batch)
        executor.wait()
    finally:
        local.execute = original
        executor.close()
    assert sorted(ran) == [
        ("image", "MainThread"),
        ("photo", "MainThread"),
        ("unit", "atlas-units"),
    ]


def test_a_build_keeps_only_the_most_recent_models_loaded(monkeypatch) -> None:
    """A zoo of models is not held to the end of the build: the least recently used is
    released beyond MAX_LOADED, and loaded again when a later task needs it."""
    from types import SimpleNamespace

    import atlas.render.load
    from atlas.execute.models import LoadedModels

    loaded: list[str] = []

    class Model:
        def __init__(self, config):
            self.id = config.id
            loaded.append(config.id)

    monkeypatch.setattr(atlas.render.load, "load_model", Model)
    models = LoadedModels(StageTimer(), max_loaded=2)
    configs = {name: SimpleNamespace(id=name) for name in "abc"}
    first = models.get(configs["a"])
    assert models.get(configs["a"]) is first  # still loaded: not loaded again
    models.get(configs["b"])
    models.get(configs["a"])  # a is now the most recent: b goes when c comes
    models.get(configs["c"])
    assert loaded == ["a", "b", "c"]
    models.get(configs["a"])
    models.get(configs["b"])  # released: loaded again
    assert loaded == ["a", "b", "c", "b"]
    assert len(models._loaded) == 2


def test_a_released_model_is_destroyed_only_while_no_task_runs(monkeypatch) -> None:
    """Destroying a model's traced functions while another thread runs one crashed a CI
    build (SIGSEGV, tensorflow#59242): a model released while the unit pictures' thread is
    inside a task lives until that task has ended, and no task starts meanwhile."""
    import gc
    import threading
    import weakref
    from types import SimpleNamespace

    import atlas.render.load
    from atlas.execute.models import LoadedModels

    class Model:
        def __init__(self, config):
            self.cycle = self  # as traced functions do: only the collector frees it

    monkeypatch.setattr(atlas.render.load, "load_model", Model)
    models = LoadedModels(StageTimer(), max_loaded=1)
    configs = {name: SimpleNamespace(id=name) for name in "ab"}
    inside, leave = threading.Event(), threading.Event()

    def other_task() -> None:
        with models.in_use():
            inside.set()
            leave.wait(10)

    with models.in_use():
        first = weakref.ref(models.get(configs["a"]))
    thread = threading.Thread(target=other_task)
    thread.start()
    inside.wait(10)
    with models.in_use():
        models.get(configs["b"])  # a is released while the other task runs
    gc.collect()
    assert first() is not None  # held: the other thread is still inside its task
    started = threading.Event()

    def next_task() -> None:
        with models.in_use():
            assert first() is None  # destroyed before this task began
            started.set()

    waiting = threading.Thread(target=next_task)
    waiting.start()
    assert not started.wait(0.2)  # it waits for the other thread's task to end
    leave.set()
    thread.join(10)
    waiting.join(10)
    assert started.is_set() and first() is None


@pytest.mark.parametrize(
    ("options", "preset", "expected"),
    [
        ("BuildOptions()", None, "half"),
        ("BuildOptions(serial=True)", None, None),
        ("BuildOptions(scheduler='tcp://127.0.0.1:1')", None, None),
        ("BuildOptions()", "3", "3"),  # the user's own setting wins
    ],
)
def test_two_streams_of_ops_share_the_cores(options, preset, expected) -> None:
    import os
    import subprocess
    import sys

    code = (
        "import os, sys\nfrom atlas.build import BuildOptions, _share_cores\n"
        f"_share_cores({options})\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print(os.environ.get('TF_NUM_INTRAOP_THREADS'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_NUM_INTRAOP_THREADS"}
    if preset is not None:
        env["TF_NUM_INTRAOP_THREADS"] = preset
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    half = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert done.stdout.strip() == str({"half": half}.get(expected, expected))
