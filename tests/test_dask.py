"""Rendering on Dask: a LocalCluster build equals a local build; a killed worker is survived."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from sitecheck import files_of

from atlas.build import BuildOptions, build

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow
LEDGER = "build.html"


def without_ledger(files: dict) -> dict:
    return {name: data for name, data in files.items() if name != LEDGER}


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=40,
    ) as local:
        yield local


# activation atlases through the cluster too: 4 photos x 32 positions on a 4 x 4 grid
ATLAS = {"grid": 4, "min_count": 3}


@pytest.fixture(scope="module")
def local_site(tmp_path_factory, project_factory):
    config = project_factory(tmp_path_factory.mktemp("local"), images=4, atlas=ATLAS)
    return files_of(build(config, BuildOptions(progress=False, max_steps=2)).output)


def test_a_local_cluster_build_equals_a_local_build(cluster, local_site, project_factory, tmp_path):
    config = project_factory(tmp_path / "dask", images=4, atlas=ATLAS)
    report = build(
        config, BuildOptions(progress=False, max_steps=2, scheduler=cluster.scheduler_address)
    )
    assert report.rendered.get("unit") == 6 and report.rendered.get("exemplars") == 3
    assert report.rendered.get("atlas_cell", 0) > 0 and report.rendered.get("atlas") == 2
    assert without_ledger(files_of(report.output)) == without_ledger(local_site)


def test_a_worker_killed_mid_task_is_survived(cluster, local_site, project_factory, tmp_path):
    from distributed import Client

    config = project_factory(tmp_path / "killed", images=4, atlas=ATLAS)
    killed = []

    def kill_a_busy_worker() -> None:
        with Client(cluster.scheduler_address, set_as_default=False) as client:
            pids = client.run(os.getpid)
            deadline = time.time() + 120
            while time.time() < deadline and not killed:
                for worker, keys in client.processing().items():
                    if any(str(key).startswith("atlas-unit") for key in keys):
                        os.kill(pids[worker], signal.SIGKILL)
                        killed.append(worker)
                        break
                time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    report = build(
        config, BuildOptions(progress=False, max_steps=2, scheduler=cluster.scheduler_address)
    )
    killer.join()
    assert killed, "no worker was caught running a unit task"
    assert report.rendered.get("unit") == 6
    assert without_ledger(files_of(report.output)) == without_ledger(local_site)


def test_a_scores_task_waits_for_the_image_maps_it_reads():
    """On a cluster, a scores task is submitted with the futures of the image tasks
    whose maps it reads, so Dask runs it after them (a worker that took it first found
    no maps and skipped the photo: the model page lost its CAM-scores table)."""
    from atlas.execute.dask import _submit
    from atlas.execute.tasks import Task
    from atlas.plan.jobs import Job

    class Client:
        def __init__(self):
            self.calls = {}

        def submit(self, function, task, *after, key, **options):
            self.calls[key] = after
            return f"future-{key}"

    images = [Job("image", "m", f"i{n}", image=f"p{n}") for n in range(3)]
    scores = [Job("scores", "m", "s0", image="p2", extra={"image_key": "i2"})]
    by_key = {
        "atlas-a": Task("image", None, tuple(images[:2])),
        "atlas-b": Task("image", None, tuple(images[2:])),
        "atlas-c": Task("scores", None, tuple(scores)),
    }
    client = Client()
    futures = _submit(client, by_key, None)
    assert futures == ["future-atlas-a", "future-atlas-b", "future-atlas-c"]
    assert client.calls == {"atlas-a": (), "atlas-b": (), "atlas-c": ("future-atlas-b",)}
