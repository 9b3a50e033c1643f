"""The planned build: each model's jobs (:class:`ModelPlan`), what the later stages read
(:class:`BuildContext`) and the stages' clock (:class:`StageTimer`). Plain data: no
TensorFlow, no rendering."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from atlas.cache.store import Cache
from atlas.config.settings import Config, ModelConfig
from atlas.data.breeds import BreedMap
from atlas.data.scan import DatasetImage, DatasetScan
from atlas.model.labels import LabelSpace
from atlas.plan.jobs import Job, photo_job


@dataclass
class StageTimer:
    """Wall-clock and CPU seconds per stage; a stage inside another (in the same thread)
    counts only towards itself. Thread-safe: unit pictures render in a thread of their
    own beside the other stages, so stages in different threads overlap and their sum can
    exceed the build's time. CPU is the whole process's (TensorFlow's threads included),
    so a stage that overlapped another has no CPU figure of its own (None)."""

    seconds: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float | None] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    started_cpu: float = field(default_factory=time.process_time)
    _local: threading.local = field(default_factory=threading.local)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _busy: set[int] = field(default_factory=set)  # threads inside a stage
    _overlaps: int = 0  # times a thread entered a stage while another was inside one

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        nested = self._local.__dict__.setdefault("nested", [])
        me = threading.get_ident()
        with self._lock:
            if not nested:
                self._overlaps += bool(self._busy)
                self._busy.add(me)
            overlaps = self._overlaps
            alone = self._busy == {me}
        start, start_cpu = time.perf_counter(), time.process_time()
        nested.append((0.0, 0.0))
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            used = time.process_time() - start_cpu
            inner, inner_cpu = nested.pop()
            with self._lock:
                alone = alone and overlaps == self._overlaps
                self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - inner
                before = self.cpu.get(name, 0.0)
                self.cpu[name] = before + used - inner_cpu if alone and before is not None else None
                if not nested:
                    self._busy.discard(me)
            if nested:
                outer, outer_cpu = nested[-1]
                nested[-1] = (outer + elapsed, outer_cpu + used)


@dataclass
class ModelPlan:
    """One model's jobs and what the cache says of them."""

    config: ModelConfig
    identity: dict
    facts: dict
    layers: list[dict]  # the selected conv layers' facts
    params: object = None  # the filter-visualization method's parameters
    predict: list[Job] = field(default_factory=list)
    images: list[Job] = field(default_factory=list)
    units: dict[str, list[Job]] = field(default_factory=dict)
    views: dict[str, list[Job]] = field(default_factory=dict)  # negative, diversity jobs
    grids: dict[str, Job] = field(default_factory=dict)
    exemplars: dict[str, Job] = field(default_factory=dict)
    scores: list[Job] = field(default_factory=list)  # CAM scores per image (atlas.analysis.scores)
    space: LabelSpace | None = None  # the model's classes; None: a feature extractor
    # activation atlases: layer name -> the finished atlas (atlas.plan.atlas); its entry
    # holds atlas.webp and the cells' meta (see docs/architecture.md, "Activation atlases")
    atlases: dict[str, Job] = field(default_factory=dict)
    atlas_plans: dict = field(default_factory=dict)  # layer -> atlas.plan.atlas.AtlasPlan

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.facts["input_size"])

    @property
    def evaluation(self) -> str:
        """Which photos the accuracy is computed on."""
        trained = self.config.trained_on
        return "all photos" if trained == "none" else f"photos outside the {trained} split"


@dataclass
class BuildContext:
    """What the page stage needs: config, dataset, plans, cache."""

    config: Config
    scan: DatasetScan
    detailed: list[DatasetImage]
    breeds: BreedMap
    models: list[ModelPlan]
    cache: Cache
    timer: StageTimer
    rendered: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)
    backend: str = "tensorflow"  # the Keras backend this build renders with ("jax 0.10.2")

    def count(self, kind: str, rendered: bool, n: int = 1) -> None:
        """Count ``n`` jobs of ``kind`` as rendered by this build or reused from the cache."""
        target = self.rendered if rendered else self.reused
        target[kind] = target.get(kind, 0) + n


def planned_jobs(context: BuildContext) -> list[Job]:
    """Every job of the build but the models' facts, a photo once however many models
    read it."""
    jobs = [photo_job(image) for image in context.scan.images]
    for model_plan in context.models:  # the facts were counted when planned
        jobs += model_plan.predict + model_plan.images + model_plan.scores
        jobs += [job for layer in model_plan.units.values() for job in layer]
        jobs += [job for layer in model_plan.views.values() for job in layer]
        jobs += list(model_plan.grids.values()) + list(model_plan.exemplars.values())
        for atlas in model_plan.atlas_plans.values():
            jobs += [atlas.samples, atlas.layout, atlas.atlas, *atlas.cells]
            jobs += [atlas.labels] if atlas.labels is not None else []
    return jobs
