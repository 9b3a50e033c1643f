"""Estimates before rendering: compute (FLOPs, seconds) and the site's size, per model and kind.

Pure functions over the model facts (layer shapes and parameter counts), the planned jobs
and what the cache already holds; no TensorFlow. FLOPs count a multiply-add as 2.

* A layer's forward FLOPs are ``2 x weights x output positions`` for a layer with weights
  (convolutions, dense) and ``output elements`` for the rest (activations, BatchNorm, adds).
* A unit's picture costs ``steps x 3 x`` the forward FLOPs of the model up to its layer
  (forward + backward ~ 3 forwards); an image's maps one forward of the selected layers'
  model plus one backward per Grad-CAM class; a prediction one forward.
* Seconds come from throughput that earlier builds measured and recorded in the cache
  (:data:`THROUGHPUT`: seconds per GFLOP per kind, or per job for kinds without FLOPs);
  without a record, from nominal rates measured on the project's 2-core CPU.
* Site bytes are the cached entries' own file sizes where they exist, else the average of
  that model's cached entries of the kind, else nominal sizes from the default site.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from atlas.config.methods import DIVERSITY_PICTURES, layer_params
from atlas.config.views import LEAST, MOST

log = logging.getLogger(__name__)

# Pictures per job of the unit picture kinds (atlas.analysis.unit_views; DIVERSITY_PICTURES).
PICTURES = {"unit": 1, "negative": 1, "diversity": DIVERSITY_PICTURES}
THROUGHPUT = "throughput.json"  # in the cache: {kind: {"seconds", "gflop", "jobs"}}
CALIBRATION = "calibration.json"  # in the cache: this machine's probe (atlas.render.probe)
# The probe's GFLOP/s on the machine the nominal rates were measured on: a machine whose
# probe runs twice as fast gets half the nominal times (``Throughput.scale``).
REFERENCE_PROBE_GFLOPS = 295.0  # this 2-core machine, quiet: 293-297 in three runs
MODELS_KEPT_LOADED = 3  # models a build keeps loaded at once (atlas.execute.models)
# Measured on the project's 2-core CPU in cold builds (bench/plan_accuracy.py, 2026-12-03:
# the default site, and with InceptionV3 added): used until a build on this machine
# records its own throughput, scaled by the speed probe on other machines. Compute at
# 125 GFLOP/s: VGG16 reaches 250 there alone (bench/renderers.py), but a build runs two
# streams of work at once (the unit pictures beside the rest), each on half the cores
# (build._share_cores); InceptionV3's maps, scores and predictions ran at 88-143 GFLOP/s.
# Plus a cost per job that small models are bound by (tracing, small kernels, drawing,
# PNG/WebP encoding): the default MobileNet's maps reach 9 GFLOP/s.
NOMINAL_GFLOPS = 125.0
NOMINAL_SECONDS_PER_JOB = {
    "unit": 0.072,
    "image": 0.58,  # activations, four CAM methods (Score-CAM's masked copies), drawing
    "predict": 0.019,
    "exemplars": 0.9,
    "photo": 0.018,
    "grid": 0.12,
    "facts": 2.0,
    "localisation": 0.27,  # reading a photo's maps (PNG) and its mask; no forward pass
    "faithfulness": 1.5,  # building a photo's curves' inputs (beside their forward passes)
    "load": 0.5,  # building or reading a model (plus LOAD_SECONDS_PER_PARAM)
    "pages": 0.001,  # rendering and writing one HTML page
    # activation atlases (atlas.plan.atlas): a 3,552-vector t-SNE layout 4-6 s
    "atlas_samples": 0.2,
    "atlas_layout": 5.0,
    "atlas_labels": 1.0,
    "atlas_cell": 0.072,
    "atlas": 0.7,
}
LOAD_SECONDS_PER_PARAM = 6e-8  # InceptionV3 (24 M weights): 1.9 s to build, MobileNet 0.5 s
# Kinds timed by another kind's record: negative and diversity pictures are rendered in the
# unit tasks, deletion/insertion curves in the scores tasks.
TIMED_AS = {"negative": "unit", "diversity": "unit", "faithfulness": "scores"}
# Nominal file bytes (WebP/PNG/JPEG at atlas' encodings), from the default site.
UNIT_BYTES_PER_PIXEL = 3600 / 96**2  # a 96-px lucid picture: ~3.6 KB at WebP 70
ACTIVATION_GRID_BYTES = 5000  # one activation grid of an image, 160 px, WebP 40
CAM_BYTES_PER_POSITION = 0.6  # a grey Grad-CAM PNG at the layer's resolution (+ header)
MAP_BYTES_PER_POSITION = 1.0  # a viridis PNG of a unit's map on one photo (+ header)
PNG_HEADER = 120
PHOTO_BYTES = 19000  # photo (320 px, JPEG 85) + thumbnail (112 px)
GRID_BYTES_PER_UNIT = 1000  # "all" cells + share of the "best" grid
# HTML, fitted on built default sites (bytes): per page plus per item listed on it (the
# 1,000-unit layer page is 260 KB). A unit page with the unit views (8 photos with their
# maps, the preferred breeds, the negative and diversity pictures or a link): 6,970 bytes on
# average over the default site's 6,472.
HTML_UNIT_PAGE = 6950
HTML_LAYER_PAGE = 25600
HTML_LAYER_PER_UNIT = 235
HTML_IMAGE_PAGE = 5000
HTML_IMAGE_PER_LAYER = 900
HTML_MODEL_PAGES = 40000
HTML_PER_IMAGE = 600  # a row of a model's predictions page
HTML_DATASET_PER_IMAGE = 85  # a row of the dataset page
HTML_SITE = 45000  # home, 404, ledger, dataset page frame, static files


def format_bytes(value: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def format_seconds(value: float) -> str:
    if value >= 86400:
        return f"{value / 86400:.1f} d"
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    if value >= 60:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s"


# -- FLOPs ----------------------------------------------------------------------------------
def _positions(shape: Sequence[int | None], input_size: Sequence[int]) -> tuple[int, int]:
    """(spatial positions, channels) of an output shape ``(batch, [h, w,] c)``."""
    dims = list(shape[1:]) if len(shape) > 1 else [1]
    channels, spatial = dims[-1] or 1, dims[:-1]
    if any(d is None for d in spatial):  # fully convolutional: at the planned input size
        spatial = list(input_size)[: len(spatial)]
    return int(math.prod(spatial)) if spatial else 1, int(channels)


def layer_flops(layer: dict, input_size: Sequence[int]) -> float:
    """Forward FLOPs of one layer for one image (see the module docstring)."""
    positions, channels = _positions(layer.get("output_shape") or [None, 1], input_size)
    weights = int(layer.get("params") or 0)
    if weights:
        return 2.0 * weights * positions
    return float(positions * channels)


def prefix_flops(facts: dict) -> dict[str, float]:
    """Layer name -> forward FLOPs of the model up to and including it, in call order
    (side branches called before it are counted too: an upper bound for branchy models)."""
    size = facts["input_size"]
    total, result = 0.0, {}
    for layer in facts["layers"]:
        total += layer_flops(layer, size)
        result[layer["name"]] = total
    return result


def unit_steps(params: object, max_steps: int | None = None) -> int:
    """Gradient steps of one unit's optimisation for the method's parameters."""
    steps = getattr(params, "total_steps", None) or int(getattr(params, "steps", 1))
    return min(steps, max_steps) if max_steps else steps


def unit_picture_side(params: object, input_size: Sequence[int]) -> int:
    """Side of a unit's picture: the lucid size, or the model size for classic."""
    size = getattr(params, "size", None)
    return int(size) if size else int(input_size[0])


def picture_area(params: object, input_size: Sequence[int]) -> float:
    """A unit picture's area over the model input's, averaged over its steps: the unit
    models take any size where they can (atlas.render.load.features_model), so a 128-px
    lucid picture on a 299-px InceptionV3 costs (128 / 299)^2 of a forward at 299 px. The
    classic recipe grows its picture to the model's size in equal-length stages."""
    side = float(input_size[0]) if input_size else 0.0
    if side <= 0:
        return 1.0
    sizes = getattr(params, "sizes", None)
    if callable(sizes):
        stages = sizes(int(side))
        return sum(min(1.0, (s / side) ** 2) for s in stages) / len(stages)
    size = getattr(params, "size", None)
    return min(1.0, (float(size) / side) ** 2) if size else 1.0


# -- throughput -----------------------------------------------------------------------------
@dataclass
class Throughput:
    """Measured seconds, GFLOPs and jobs per kind (accumulated over recent builds)."""

    kinds: dict[str, dict[str, float]]
    scale: float = 1.0  # the nominal rates' factor on this machine (calibrated())

    def calibrated(self, probe: dict | None) -> Throughput:
        """This record with nominal rates scaled by this machine's probe (see
        :data:`REFERENCE_PROBE_GFLOPS`); unchanged without a valid probe."""
        speed = probe.get("gflops") if isinstance(probe, dict) else None
        if not isinstance(speed, int | float) or speed <= 0:
            return self
        return Throughput(self.kinds, REFERENCE_PROBE_GFLOPS / float(speed))

    @classmethod
    def from_json(cls, text: str | bytes | None) -> Throughput:
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {}
        kinds = {}
        for kind, record in data.items() if isinstance(data, dict) else ():
            if isinstance(record, dict) and all(
                isinstance(record.get(k), int | float) for k in ("seconds", "gflop", "jobs")
            ):
                kinds[kind] = {k: float(record[k]) for k in ("seconds", "gflop", "jobs")}
        return cls(kinds)

    def to_json(self) -> str:
        return json.dumps(self.kinds, sort_keys=True, indent=1)

    def record(self, kind: str, seconds: float, gflop: float, jobs: int) -> None:
        """Add one measurement (a task) of this build."""
        old = self.kinds.get(kind, {"seconds": 0.0, "gflop": 0.0, "jobs": 0.0})
        self.kinds[kind] = {
            "seconds": old["seconds"] + seconds,
            "gflop": old["gflop"] + gflop,
            "jobs": old["jobs"] + jobs,
        }

    def updated(self, build: Throughput) -> Throughput:
        """This record with a build's measurements added, the older ones weighing half as
        much (machines and loads change)."""
        kinds = {k: {f: v / 2 for f, v in r.items()} for k, r in self.kinds.items()}
        result = Throughput(kinds, self.scale)
        for kind, record in build.kinds.items():
            result.record(kind, record["seconds"], record["gflop"], int(record["jobs"]))
        return result

    def seconds(
        self, kind: str, gflop: float, jobs: int, model: str | None = None
    ) -> tuple[float, bool]:
        """(estimated seconds, measured?) for ``jobs`` of a kind totalling ``gflop``: from
        this model's record of the kind, else the kind's, else nominal rates (scaled to
        this machine by its probe). A kind timed in another kind's tasks
        (:data:`TIMED_AS`) takes that kind's rate per GFLOP."""
        pictures = PICTURES.get(kind, 1)
        timed = TIMED_AS.get(kind, kind)
        for name in ([f"{timed}:{model}"] if model else []) + [timed]:
            record = self.kinds.get(name)
            if record and gflop > 0 and record["gflop"] > 0:
                return gflop * record["seconds"] / record["gflop"], True
            if record and gflop <= 0 and record["jobs"] > 0 and kind != "faithfulness":
                return jobs * pictures * record["seconds"] / record["jobs"], True
        per_job = NOMINAL_SECONDS_PER_JOB.get(kind, NOMINAL_SECONDS_PER_JOB.get(timed, 0.05))
        nominal = gflop / NOMINAL_GFLOPS + jobs * per_job * pictures
        return nominal * self.scale, False


# -- one row per model and kind -------------------------------------------------------------
@dataclass
class Row:
    """What ``atlas plan`` prints for one model and kind of asset."""

    model: str
    kind: str
    jobs: int
    cached: int
    gflop: float  # estimated compute of the missing jobs
    seconds: float  # estimated time of the missing jobs
    measured: bool  # seconds from this cache's recorded throughput (else nominal)
    site_bytes: float  # projected bytes these assets add to the site (all jobs)
    shared: int = 0  # jobs an earlier model of the build has (same key): counted there

    def as_dict(self) -> dict:
        return asdict(self)


def nominal_bytes(
    kind: str,
    facts: dict,
    layers: Sequence[dict],
    params: object,
    units: int = 0,
    layer: str | None = None,
    cam_slots: float = 1.5,
) -> float:
    """Nominal site bytes of one asset of a kind (see the module docstring)."""
    size = facts.get("input_size", [224, 224])
    if kind in PICTURES:
        return PICTURES[kind] * UNIT_BYTES_PER_PIXEL * unit_picture_side(params, size) ** 2
    if kind == "photo":
        return PHOTO_BYTES
    if kind == "grid":
        return GRID_BYTES_PER_UNIT * units
    if kind == "image":
        total = 0.0
        for facts_layer in layers:
            positions, _ = _positions(facts_layer["output_shape"], size)
            total += ACTIVATION_GRID_BYTES + cam_slots * (
                PNG_HEADER + CAM_BYTES_PER_POSITION * positions
            )
        return total
    if kind == "exemplars":
        by_name = {item["name"]: item for item in layers}
        positions, _ = _positions(by_name[layer]["output_shape"], size) if layer else (1, 1)
        return units * (MOST + LEAST) * (PNG_HEADER + MAP_BYTES_PER_POSITION * positions)
    return 0.0


def entry_bytes(meta: dict) -> int:
    """The bytes a cache entry's files add to the site (every file of an entry is shown)."""
    return sum(int(info.get("size", 0)) for info in meta.get("_files", {}).values())


def make_row(
    model: str,
    kind: str,
    cached_bytes: Iterable[int | None],
    nominal: Sequence[float],
    gflop_missing: float,
    throughput: Throughput,
) -> Row:
    """A row from each job's cached bytes (None: missing) and nominal bytes, in job order."""
    cached_bytes = list(cached_bytes)
    known = [b for b in cached_bytes if b is not None]
    average = sum(known) / len(known) if known else None
    site = 0.0
    for have, guess in zip(cached_bytes, nominal, strict=True):
        site += have if have is not None else (average if average is not None else guess)
    missing = sum(b is None for b in cached_bytes)
    seconds, measured = throughput.seconds(kind, gflop_missing, missing, model)
    return Row(
        model=model,
        kind=kind,
        jobs=len(cached_bytes),
        cached=len(known),
        gflop=gflop_missing,
        seconds=seconds,
        measured=measured,
        site_bytes=site,
    )


def html_bytes(
    units: int, layers: int, detailed: int, images: int, models: int, detailed_layers: int
) -> float:
    """Projected bytes of the site's HTML pages (see the constants above)."""
    return (
        HTML_SITE
        + models * HTML_MODEL_PAGES
        + units * (HTML_UNIT_PAGE + HTML_LAYER_PER_UNIT)
        + layers * HTML_LAYER_PAGE
        + detailed * HTML_IMAGE_PAGE
        + detailed_layers * HTML_IMAGE_PER_LAYER
        + images * (models * HTML_PER_IMAGE + HTML_DATASET_PER_IMAGE)
    )


def job_gflop(
    kind: str,
    facts: dict,
    prefix: dict[str, float],
    *,
    layer: str | None = None,
    steps: int = 0,
    images: int = 1,
    cam_slots: float = 1.5,
    score_passes: int = 0,
    area: float = 1.0,
) -> float:
    """Estimated GFLOPs of one job of a kind (one unit, one image, one layer's exemplars).

    Args:
        prefix: :func:`prefix_flops` of the model.
        layer: the unit's or exemplars' layer.
        steps: a unit's optimisation steps (:func:`unit_steps`).
        images: the distinct photos an exemplars job runs the model on.
        cam_slots: Grad-CAM classes per image (1, or 2 when the true breed's class differs).
        score_passes: an image's Score-CAM forward passes of the whole model (its masked
            copies: ``render.scorecam_channels`` per selected layer).
        area: a unit picture's area over the model input's (:func:`picture_area`).
    """
    total = max(prefix.values(), default=0.0)
    if kind in PICTURES:  # a unit's pictures: its channel, negative or diversity pictures
        return PICTURES[kind] * 3.0 * steps * area * prefix[layer] / 1e9
    if kind == "image":
        return (1.0 + 2.0 * cam_slots + score_passes) * total / 1e9
    if kind == "predict":
        return total / 1e9
    if kind == "exemplars":
        return images * prefix[layer] / 1e9
    if kind in ("scores", "faithfulness"):  # ``images``: its curves' forward passes
        return images * total / 1e9
    return 0.0


def picture_gflops(
    facts: dict, prefix: dict[str, float], jobs, params: object, max_steps: int | None = None
) -> list[float]:
    """Each unit-picture job's GFLOPs (channel, negative or diversity) at its layer's
    parameters (``layer_params``): its steps (capped by ``max_steps``) at its own size."""
    size, found = facts["input_size"], []
    fields = {layer["name"]: layer.get("receptive_field") for layer in facts.get("layers", [])}
    for job in jobs:
        own = layer_params(params, fields.get(job.layer), int(size[0])) if size else params
        steps, area = unit_steps(own, max_steps), picture_area(own, size)
        found.append(job_gflop(job.kind, facts, prefix, layer=job.layer, steps=steps, area=area))
    return found


def faithfulness_passes(extra: dict, layers: int, steps: int) -> int:
    """Forward passes of one photo's deletion/insertion curves (a scores job's ``extra``):
    the photo, black and blurred once, then ``steps - 1`` inner points of both curves for
    each scored layer and method."""
    if not extra["faithful"]:
        return 0
    scored = sum(1 for index in extra["faith_layers"] if index < layers)
    return 3 + 2 * (steps - 1) * scored * len(extra["methods"])
