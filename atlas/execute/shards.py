"""Shards: the missing tasks of phase one split into N shares balanced by estimated
seconds (longest first onto the least-loaded share). The first shard of a plan records the
split in the cache (``shards/<plan>-<N>.json``, created exclusively), so shards started
later, when others have finished work, still take their share of the same split."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence

from atlas.errors import AtlasError, ConfigError
from atlas.execute.tasks import Task, phase_one_tasks
from atlas.plan import estimate
from atlas.plan.jobs import Job

log = logging.getLogger(__name__)


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
