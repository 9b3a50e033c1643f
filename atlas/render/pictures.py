"""A renderer's share of a unit task: channel, negative and diversity pictures in shared
batches, each job stored as soon as its pictures are done.

A channel picture (``unit`` job) drives its unit's mean up from the unit's seed; a
``negative`` job drives it down from a seed of its own; a ``diversity`` job is
:data:`DIVERSITY_PICTURES` pictures optimised together (one diversity group, never split
across batches) with the diversity term (:mod:`atlas.render.objectives`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from atlas.cache.store import Cache
from atlas.data.images import encode_webp
from atlas.plan.jobs import ENCODING, PICTURE_KINDS, Job

log = logging.getLogger(__name__)

SIGNS = {"unit": 1.0, "negative": -1.0, "diversity": 1.0}


def _finite(value: float) -> float | None:
    value = float(value)
    return round(value, 6) if np.isfinite(value) else None


def _seeds(job: Job) -> list[int]:
    return [job.extra["seed"]] if job.kind == "unit" else list(job.extra["seeds"])


def render_pictures(
    renderer,
    pairs: Sequence[tuple[int, Job]],
    cache: Cache,
    progress: Callable[..., None],
    max_steps: int | None = None,
) -> None:
    """Render ``(output index, job)`` pairs of one :class:`UnitRenderer` into the cache.

    ``progress(n, kind)`` is called with the jobs of each kind finished by each batch.
    """
    pairs = sorted(pairs, key=lambda p: (p[0], p[1].unit, PICTURE_KINDS.index(p[1].kind)))
    owners: list[Job] = []  # the job of each picture, in render order
    units, seeds, layers, signs, groups = [], [], [], [], []
    for index, job in pairs:
        job_seeds = _seeds(job)
        group = len(owners) if job.kind == "diversity" else -1
        for seed in job_seeds:
            owners.append(job)
            units.append(job.unit)
            seeds.append(seed)
            layers.append(index)
            signs.append(SIGNS[job.kind])
            groups.append(group)
    done: dict[str, list] = {}
    position = 0
    for results in renderer.render(
        units, seeds, layers, signs=signs, groups=groups, max_steps=max_steps
    ):
        finished: dict[str, int] = {}
        for result in results:
            job = owners[position]
            position += 1
            done.setdefault(job.key, []).append(result)
            if len(done[job.key]) == len(_seeds(job)):
                _store(job, done.pop(job.key), cache)
                finished[job.kind] = finished.get(job.kind, 0) + 1
        for kind, count in finished.items():
            progress(count, kind)


def _store(job: Job, results: list, cache: Cache) -> None:
    """One job's cache entry: ``unit.webp`` for a channel picture, ``negative.webp``, or
    ``diversity_0.webp``... with per-picture lists of the numbers."""
    quality = ENCODING[job.kind]["quality"]
    if job.kind == "unit":
        result = results[0]
        meta = {
            "objective": _finite(result.objective),
            "steps": int(result.steps),
            "seconds": round(float(result.seconds), 4),
            "dead": bool(result.dead),
            "own_activation": _finite(result.own_activation),
        }
        cache.put(job.key, meta, {"unit.webp": encode_webp(result.picture, quality=quality)})
        return
    names = (
        [f"diversity_{i}.webp" for i in range(len(results))]
        if job.kind == "diversity"
        else ["negative.webp"]
    )
    meta = {
        "objectives": [_finite(r.objective) for r in results],
        "activations": [_finite(r.own_activation) for r in results],
        "steps": int(results[0].steps),
        "seconds": round(float(sum(r.seconds for r in results)), 4),
        "dead": [bool(r.dead) for r in results],
    }
    files = {
        name: encode_webp(r.picture, quality=quality)
        for name, r in zip(names, results, strict=True)
    }
    cache.put(job.key, meta, files)
