"""The cost of distributing a build on the same cores: local vs Dask vs shards.

On the shipped site_config.yaml with units capped (``--units-per-layer``, default 8), each
variant in a fresh temporary cache and output, same seeds, in one run:

* local: one process using both cores (``atlas build``);
* dask: a ``LocalCluster`` of 2 worker processes, 1 thread each (``--scheduler``);
* shards: ``--shard 1/2`` pinned to core 0 and ``--shard 2/2`` to core 1 (``taskset``), in
  parallel, then the plain build that assembles the site (it renders nothing).

Prints wall time, throughput (rendered assets/s) relative to local (target >= 0.9x), the
measured overhead (Dask: worker time outside the tasks' rendering, per task; shards: the
assembling build and the time each shard spends outside rendering), and the speed-up one
would expect from two such machines, derived from that overhead.

    python bench/distributed.py [--units-per-layer N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.9

_CHILD = """
import json, sys
from atlas.build import BuildOptions, build
import atlas.execute.dask as de
stats = {"tasks": 0, "task_seconds": 0.0}
call = de.DaskExecutor.__call__
def counted(self, tasks):
    stats["tasks"] += len(tasks)
    record = self.record
    def recorded(task, seconds):
        stats["task_seconds"] += seconds
        if record is not None:
            record(task, seconds)
    self.record = recorded
    return call(self, tasks)
de.DaskExecutor.__call__ = counted
mode, config = sys.argv[1], sys.argv[2]
cluster = None
options = BuildOptions(progress=False)
if mode == "dask":
    from distributed import LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None, silence_logs=40)
    options = BuildOptions(progress=False, scheduler=cluster.scheduler_address)
elif mode.startswith("shard"):
    options = BuildOptions(progress=False, shard=(int(mode[5:]), 2))
report = build(config, options)
if cluster is not None:
    cluster.close()
print(json.dumps({"rendered": report.rendered, "seconds": report.seconds,
                  "wall": report.wall_seconds, **stats}))
"""


def _config(folder: Path, units_per_layer: int) -> Path:
    text = (ROOT / "site_config.yaml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^  output: \S+", f"  output: {folder / 'site'}", text)
    text = re.sub(r"(?m)^cache: \S+", f"cache: {folder / 'cache'}", text)
    for relative in ("data/", "notes/"):
        text = text.replace(f" {relative}", f" {ROOT}/{relative}")
    text = text.replace("  # units_per_layer: 64", f"  units_per_layer: {units_per_layer}")
    path = folder / "site_config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _start(mode: str, config: Path, cpus: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    prefix = ["taskset", "-c", cpus] if cpus else []
    return subprocess.Popen(
        [*prefix, sys.executable, "-c", _CHILD, mode, str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _finish(process: subprocess.Popen, began: float) -> tuple[float, dict]:
    out, err = process.communicate()
    wall = time.perf_counter() - began
    if process.returncode != 0:
        raise SystemExit(f"build failed:\n{err[-3000:]}")
    return wall, json.loads(out.strip().splitlines()[-1])


def _run(mode: str, config: Path) -> tuple[float, dict]:
    began = time.perf_counter()
    return _finish(_start(mode, config), began)


def _rendered(report: dict) -> int:
    return sum(report["rendered"].values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units-per-layer", type=int, default=8)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="atlas-bench-") as tmp:
        folders = {name: Path(tmp) / name for name in ("local", "dask", "shards")}
        configs = {}
        for name, folder in folders.items():
            folder.mkdir()
            configs[name] = _config(folder, args.units_per_layer)

        local_wall, local = _run("local", configs["local"])
        assets = _rendered(local)
        rows.append(("local, 1 process, 2 cores", local_wall, assets, ""))

        dask_wall, dask = _run("dask", configs["dask"])
        render = dask["seconds"].get("render on dask", 0.0)
        per_task = (2 * render - dask["task_seconds"]) / max(dask["tasks"], 1)
        rows.append(
            (
                "dask, 2 workers x 1 thread",
                dask_wall,
                _rendered(dask),
                f"{dask['tasks']} tasks; {per_task:.2f} s per task outside rendering",
            )
        )

        began = time.perf_counter()
        shards = [_start(f"shard{i}", configs["shards"], str(i - 1)) for i in (1, 2)]
        shard_results = [_finish(process, began) for process in shards]
        assemble_wall, assemble = _run("local", configs["shards"])
        shards_wall = max(wall for wall, _ in shard_results) + assemble_wall
        shard_assets = sum(_rendered(r) for _, r in shard_results) + _rendered(assemble)
        spread = [round(wall, 1) for wall, _ in shard_results]
        rows.append(
            (
                "2 shards on 1 core each + assembling build",
                shards_wall,
                shard_assets,
                f"shards {spread[0]} s / {spread[1]} s; assembling build "
                f"{assemble_wall:.1f} s, rendered {_rendered(assemble)}",
            )
        )

    print(
        f"default config, units_per_layer {args.units_per_layer}, fresh cache per variant; "
        f"{assets} assets per build"
    )
    print("| variant | wall | assets/s | vs local | target | notes |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, wall, count, notes in rows:
        ratio = (count / wall) / (assets / local_wall)
        ok = "" if name.startswith("local") else ("yes" if ratio >= TARGET else "no")
        print(f"| {name} | {wall:.1f} s | {count / wall:.2f} | {ratio:.2f}x | {ok} | {notes} |")
    # A local build renders its unit pictures beside the other stages, so its render
    # stages overlap: what is not rendering is the stages outside them.
    # (and the process's start, imports included, is outside every stage)
    serial = (
        local_wall
        - local["wall"]
        + sum(v for k, v in local["seconds"].items() if not k.startswith(("render", "waiting")))
    )
    local_render = local_wall - serial
    two = serial + local_render / 2 + dask["tasks"] * max(per_task, 0.0) / 2
    print(
        f"\nlocal build: {local_render:.1f} s rendering, {serial:.1f} s else (import, plan, "
        f"pages). Two 2-core machines as Dask workers: {serial:.1f} + {local_render:.1f}/2 + "
        f"{dask['tasks']} tasks x {max(per_task, 0):.2f} s / 2 = {two:.1f} s, "
        f"{local_wall / two:.2f}x the one-machine build."
    )
    print(json.dumps({"local": local["seconds"], "dask": dask["seconds"]}))


if __name__ == "__main__":
    main()
