"""A renderer's share of a unit task: channel, negative and diversity pictures in shared
batches, each job stored as soon as its pictures are done.

A channel picture (``unit`` job) drives its unit's mean up from the unit's seed; a
``negative`` job drives it down from a seed of its own; a ``diversity`` job is
:data:`DIVERSITY_PICTURES` pictures optimised together (one diversity group, never split
across batches) with the diversity term (:mod:`atlas.render.objectives`).
"""

from __future__ import annotations

import hashlib
import logging
import time
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


def retry_seed(seed: int) -> int:
    """The seed of a unit's retry: derived from its channel picture's seed, never it."""
    digest = hashlib.sha256(f"{seed}/retry".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def render_pictures(
    renderer,
    pairs: Sequence[tuple[int, Job]],
    cache: Cache,
    progress: Callable[..., None],
    max_steps: int | None = None,
) -> None:
    """Render ``(output index, job)`` pairs of one :class:`UnitRenderer` into the cache.

    A channel picture whose gradient was zero at every step (``UnitResult.dead``) is held
    back and rendered once more, after the others, from :func:`retry_seed` and a bold start
    (``bold_start``): one more batch of the same traced renderer, for those units only.
    Every other picture is exactly what one try gives.

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
    held: list[tuple[int, Job, object]] = []  # (output index, job, first result)
    position = 0
    for results in renderer.render(
        units, seeds, layers, signs=signs, groups=groups, max_steps=max_steps
    ):
        finished: dict[str, int] = {}
        for result in results:
            job, index = owners[position], layers[position]
            position += 1
            if job.kind == "unit" and result.dead:
                held.append((index, job, result))
                continue
            done.setdefault(job.key, []).append(result)
            if len(done[job.key]) == len(_seeds(job)):
                _store(job, done.pop(job.key), cache)
                finished[job.kind] = finished.get(job.kind, 0) + 1
        for kind, count in finished.items():
            progress(count, kind)
    if held:
        _retry(renderer, held, cache, progress, max_steps)


def _retry(renderer, held: list, cache: Cache, progress: Callable, max_steps: int | None) -> None:
    """The second try of channel pictures that did not move: stored from the try that
    moved, else from the first, with both tries' objectives (``start_values``)."""
    began = time.process_time()
    retried = [
        result
        for results in renderer.render(
            [job.unit for _, job, _ in held],
            [retry_seed(job.extra["seed"]) for _, job, _ in held],
            [index for index, _, _ in held],
            max_steps=max_steps,
            bold_start=True,
        )
        for result in results
    ]
    moved = 0
    for (_, job, first), second in zip(held, retried, strict=True):
        moved += not second.dead
        _store(job, [second if not second.dead else first, first, second], cache)
    log.info(
        "retried %d units that did not move: %d moved (%.1f CPU s)",
        len(held),
        moved,
        time.process_time() - began,
    )
    progress(len(held), "unit")


def _store(job: Job, results: list, cache: Cache) -> None:
    """One job's cache entry: ``unit.webp`` for a channel picture, ``negative.webp``, or
    ``diversity_0.webp``... with per-picture lists of the numbers.

    A channel picture's ``results`` are its picture's result, then its tries' when it was
    retried; its meta says which ``try`` (1 or 2) the picture is, whether it ``moved``
    (``dead``: it never did) and, when retried, each try's objective (``start_values``:
    the same on two starts far apart is a sign, not a proof, of a constant unit).
    """
    quality = ENCODING[job.kind]["quality"]
    if job.kind == "unit":
        result, tries = results[0], results[1:] or results
        meta = {
            "objective": _finite(result.objective),
            "steps": int(result.steps),
            "seconds": round(float(sum(r.seconds for r in tries)), 4),
            "dead": bool(result.dead),
            "moved": not result.dead,
            "try": 2 if len(tries) > 1 and result is tries[1] else 1,
            "own_activation": _finite(result.own_activation),
        }
        if len(tries) > 1:
            meta["start_values"] = [_finite(r.objective) for r in tries]
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
