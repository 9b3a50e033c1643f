"""Unit rendering speed per seed architecture, against the device's measured peak.

For each architecture of the seeds (random weights: ``weights: none``, 128-px input, so
that every model renders the same picture size), a short capped render of a few units on
a few conv layers (the middle and the last by default), timed on the second batch of each
layer (the first includes tracing). Prints units/s and the achieved TFLOP/s, the FLOPs
taken from :mod:`atlas.plan.estimate` (the forward FLOPs up to the layer, x 2 x steps),
against the peak a plain conv microbenchmark reaches on the same device (CPU or the first
GPU TensorFlow sees). The FLOPs counted are 2 x forward per step (the forward pass and the
gradient with respect to the picture; no weight gradients).

    python bench/scale.py [--backend tensorflow|jax] [--steps 6] [--units 4]
        [--precision float32,mixed_bfloat16] [--only vgg16,mobilenet]
        [--throughput throughput.json] [--deadline SECONDS]

Also per architecture: photos/s of activations + the four CAMs at the two layers, and
the device's matrix-product peaks in float32 and bfloat16 (what mixed_bfloat16 can reach).

And photos/s of the whole model's forward pass (predictions).

``--throughput FILE`` writes the measured rates (the first precision's) as a cache's
``throughput.json``, per model id (``unit:vgg16``, ...) and per kind (:data:`RECORDED_AS`):
copied into a cache, it makes ``atlas plan`` project a build on the measured device (the
kinds without a measurement, photos, grids, layouts, pages and loads, keep their nominal
rates, scaled by the planning machine's probe).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _tree  # noqa: F401 - this checkout's atlas, whatever is installed
import numpy as np

# (application, options, model id): the ids are those of the default site (mobilenet) and
# of examples/imagenet-models.yaml, so that --throughput's records reach their models.
# The order is what a run cut short by --deadline keeps: the default site's model first, the
# heaviest (where bfloat16 can pay) next, NASNetMobile (the longest to compile) last.
ARCHITECTURES = [
    ("MobileNet", {"alpha": 0.25}, "mobilenet"),
    ("VGG16", {}, "vgg16"),
    ("ResNet50", {}, "resnet50"),
    ("MobileNetV2", {}, "mobilenet_v2"),
    ("MobileNet", {"alpha": 1.0}, "mobilenet_1_0"),
    ("InceptionV3", {}, "inception_v3"),
    ("DenseNet121", {}, "densenet121"),
    ("MobileNet", {"alpha": 0.5}, "mobilenet_0_5"),
    ("MobileNet", {"alpha": 0.75}, "mobilenet_0_75"),
    ("NASNetMobile", {}, "nasnet_mobile"),
]
SIZE = 128
RNG = np.random.default_rng(0)


def _timed(fn, *args, repeats: int = 5) -> float:
    """Best seconds of ``fn(*args)`` (compiled once first), the result on the host."""
    from atlas.render.engine import ops

    ops.convert_to_numpy(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        ops.convert_to_numpy(fn(*args))
        best = min(best, time.perf_counter() - began)
    return best


def conv_peak(dtype: str = "float32") -> float:
    """Best TFLOP/s of a 3x3, 256 -> 256 channel conv on 16 x 56 x 56 images (59 GFLOP a
    call: large enough to keep every core's vector units busy; a 128-channel batch of 8
    measured less than VGG16's own convolutions reach)."""
    from atlas.render.engine import B, ops

    images = ops.cast(ops.convert_to_tensor(RNG.random((16, 56, 56, 256))), dtype)
    kernel = ops.cast(ops.convert_to_tensor(RNG.random((3, 3, 256, 256))), dtype)
    conv = B.compile(lambda x, k: ops.sum(ops.cast(ops.conv(x, k, 1, "same"), "float32")))
    return 2 * 16 * 56 * 56 * 256 * 256 * 9 / _timed(conv, images, kernel) / 1e12


def matmul_peak(dtype: str) -> float:
    """Best TFLOP/s of one square matrix product in ``dtype``: 4096 a side on a CPU, 8192 on
    a GPU (1.1 TFLOP, ~1.4 ms on an H200 in bfloat16: well past a launch's overhead)."""
    from atlas.render.engine import B, ops

    side = 4096 if B.device() == "CPU" else 8192
    a = ops.cast(ops.convert_to_tensor(RNG.random((side, side))), dtype)
    b = ops.cast(ops.convert_to_tensor(RNG.random((side, side))), dtype)
    product = B.compile(lambda x, y: ops.sum(ops.cast(ops.matmul(x, y), "float32")))
    return 2 * side**3 / _timed(product, a, b) / 1e12


# atlas.plan.estimate counts a unit's step as 3 x the forward FLOPs (a training step's forward,
# input and weight gradients): its cost model. Gradient ascent on the picture needs no
# weight gradients, so the work actually done is about 2 x forward.
ASCENT_SHARE = 2 / 3


def failure(error: Exception) -> str:
    """An exception in one table cell: its type and first line."""
    return f"failed: {type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"


def title(name: str, options: dict) -> str:
    return name + (f" a{options['alpha']}" if "alpha" in options else "")


def load(name: str, options: dict, model_id: str) -> dict:
    """One architecture loaded (random weights, ``SIZE`` px), its facts and the two layers
    timed: the middle conv layer and the last."""
    from atlas.config.settings import ModelConfig, RenderSettings
    from atlas.plan.estimate import prefix_flops
    from atlas.plan.jobs import unit_params
    from atlas.render.load import load_model
    from atlas.render.run import model_facts

    config = ModelConfig(
        id=model_id,
        title=name,
        application=name,
        file=None,
        options={**options, "input_shape": [SIZE, SIZE, 3]},
        weights="none",
        sha256=None,
        layers=None,
        notes=None,
        render=RenderSettings(),
    )
    began = time.perf_counter()
    loaded = load_model(config)
    facts = model_facts(loaded)
    layers = [layer.name for layer in loaded.conv_layers()]
    return {
        "id": model_id,
        "name": title(name, options),
        "loaded": loaded,
        "facts": facts,
        "prefix": prefix_flops(facts),
        "params": unit_params(config, 0, loaded.input_size),
        "layers": [layers[len(layers) // 2], layers[-1]],
        "load": time.perf_counter() - began,
    }


def measure_units(model: dict, steps: int, units: int, precision: str) -> dict:
    """Units/s and TFLOP/s of one architecture in one precision, summed over its two layers:
    two batches a layer, the second timed (the first compiles)."""
    from atlas.plan.estimate import job_gflop, unit_steps
    from atlas.render.filters import render_units

    loaded, params = model["loaded"], model["params"]
    seconds = gflop = planned = first = 0.0
    timed = 0
    for layer in model["layers"]:
        began = time.perf_counter()
        batches = list(
            render_units(
                loaded.feature_model(layer),
                list(range(2 * units)),
                list(range(2 * units)),
                params,
                loaded.preprocess,
                batch_size=units,
                max_steps=steps,
                eval_size=SIZE,
                precision=precision,
            )
        )
        last = batches[-1]
        took = sum(r.seconds for r in last)
        first += time.perf_counter() - began - took
        seconds += took
        timed += len(last)
        each = job_gflop(
            "unit", model["facts"], model["prefix"], layer=layer, steps=unit_steps(params, steps)
        )
        gflop += len(last) * ASCENT_SHARE * each
        planned += len(last) * each
    return {
        "units_per_s": timed / seconds,
        "tflops": gflop / seconds / 1e3,
        "gflop_per_unit": gflop / timed,
        "first": first,
        # what atlas plan counts (3 x forward a step), for --throughput
        "record": {"seconds": seconds, "gflop": planned, "jobs": timed},
    }


SCORE_CHANNELS = 6  # Score-CAM's masked copies per layer (render.scorecam_channels' default)


def measure_maps(model: dict, batch: int = 32) -> dict:
    """Photos/s of activations + Grad-CAM, Grad-CAM++, LayerCAM and Score-CAM at the two
    layers (random photos; the second batch timed, the first compiles)."""
    from atlas.plan.estimate import job_gflop
    from atlas.render.maps import MapRenderer

    loaded, layers = model["loaded"], model["layers"]
    submodel = loaded.graph.submodel(loaded.unit_tensors(layers), with_logits=True)
    renderer = MapRenderer(
        submodel, loaded.preprocess, 16, gradcam=True, score_channels=SCORE_CHANNELS,
        probabilities=loaded.probabilities,
    )  # fmt: skip
    photos = RNG.integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)
    renderer.run(photos)
    began = time.perf_counter()
    renderer.run(photos)
    seconds = time.perf_counter() - began
    # what atlas plan counts: a forward, one Grad-CAM class's backward, Score-CAM's copies
    each = job_gflop(
        "image", model["facts"], model["prefix"], cam_slots=1.0,
        score_passes=SCORE_CHANNELS * len(layers),
    )  # fmt: skip
    return {
        "photos_per_s": batch / seconds,
        "record": {"seconds": seconds, "gflop": batch * each, "jobs": batch},
    }


def measure_forward(model: dict, batch: int = 64) -> dict:
    """Photos/s of the whole model's forward pass, as predictions run it (atlas.render.run:
    the logits model behind the preprocessing, compiled; batches of 64)."""
    from atlas.plan.estimate import job_gflop
    from atlas.render.engine import B, ops

    loaded = model["loaded"]
    logits = loaded.logits_model()
    forward = B.compile(lambda x: logits(loaded.preprocess(x), training=False))
    photos = ops.convert_to_tensor(RNG.integers(0, 256, (batch, SIZE, SIZE, 3)), "float32")
    seconds = _timed(forward, photos)
    each = job_gflop("predict", model["facts"], model["prefix"])
    return {
        "photos_per_s": batch / seconds,
        "record": {"seconds": seconds, "gflop": batch * each, "jobs": batch},
    }


# --throughput: the kinds atlas plan times, each with the measurement of the same computation
# (a kind not listed keeps its nominal rate): gradient ascent on a picture (an atlas cell is
# one, on an activation direction), an image's forward and backward passes (an atlas
# cell's labels are attributions: 3 x the whole model per sample), and plain forward passes
# over photos (predictions, deletion/insertion curves, exemplars, an atlas's samples).
RECORDED_AS = {
    "unit": ("unit", "atlas_cell"),
    "image": ("image", "atlas_labels"),
    "forward": ("predict", "scores", "exemplars", "atlas_samples"),
}


def measure_photos(model: dict, units: dict, record) -> list[str]:
    """The first table's cells after the units': the load and trace seconds, photos/s of
    the maps and of the forward pass; adds every measured rate to ``record`` (a
    :class:`Throughput`) under the kinds of :data:`RECORDED_AS`, per kind and model id."""
    measured = {"unit": units}
    cells = [f"{model['load']:.0f} + {units['first']:.0f}"]
    for kind, how in (("image", measure_maps), ("forward", measure_forward)):
        try:
            measured[kind] = how(model)
            cells.append(f"{measured[kind]['photos_per_s']:.1f}")
        except Exception as error:  # noqa: BLE001 - reported in the table, then go on
            cells += ["nan", failure(error)]
    for what, kinds in RECORDED_AS.items():
        for kind in kinds if what in measured else ():
            for key in (kind, f"{kind}:{model['id']}"):
                record.record(key, **measured[what]["record"])
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="lucid steps per unit")
    parser.add_argument("--units", type=int, default=4, help="units per timed batch")
    parser.add_argument(
        "--precision", default="float32,mixed_bfloat16", help="comma-separated precisions"
    )
    parser.add_argument("--backend", default="tensorflow", choices=("tensorflow", "jax"))
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated model ids (mobilenet, vgg16, ...; see ARCHITECTURES)",
    )
    parser.add_argument(
        "--throughput",
        type=Path,
        help="write the first precision's rates here (units, maps, forward passes), as a "
        "cache's throughput.json (per model id), for atlas plan to project a build from",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=0.0,
        help="start no new row after this many seconds (a device lease's limit)",
    )
    args = parser.parse_args()
    from atlas.plan.estimate import Throughput
    from atlas.render.backend import choose

    choose(args.backend)
    from atlas.render.engine import B

    precisions = args.precision.split(",")
    began = time.perf_counter()
    peaks = {dtype: matmul_peak(dtype) for dtype in ("float32", "bfloat16")}
    print(
        f"device: {B.device()} ({B.NAME} {B.VERSION}); matmul peak {peaks['float32']:.2f} "
        f"TFLOP/s float32, {peaks['bfloat16']:.2f} bfloat16; 3x3 conv peak "
        f"{conv_peak():.2f} TFLOP/s float32; {SIZE}-px inputs, random weights, lucid "
        f"{args.steps} steps, batches of {args.units}",
        flush=True,
    )
    only = {n.lower() for n in args.only.split(",") if n}
    chosen = [a for a in ARCHITECTURES if not only or a[2] in only]
    models: dict[str, dict] = {}
    rates: dict[tuple[str, str], dict] = {}  # (model id, precision): measure_units'
    record = Throughput({})
    # One table per precision, the first (float32) for every architecture before the next
    # begins: a run cut short by --deadline still has a whole first table and its rates.
    for precision in precisions:
        peak = peaks["bfloat16" if "bfloat16" in precision else "float32"]
        first = precision == precisions[0]
        print(f"\n{precision}:\n")
        head = "| architecture | layers timed | GFLOP per unit | units/s | TFLOP/s | of peak | " + (
            "load + trace s | photos/s (maps) | photos/s (forward) |"
            if first
            else f"vs {precisions[0]} |"
        )
        print(head + "\n" + "| --- " * (head.count("|") - 1) + "|", flush=True)
        for name, options, model_id in chosen:
            if args.deadline and time.perf_counter() - began > args.deadline:
                print(
                    f"| {title(name, options)} | skipped: past --deadline {args.deadline:.0f} s |"
                )
                continue
            try:  # one architecture failing (memory, a backend's gap) keeps the others' rows
                if model_id not in models:
                    models[model_id] = load(name, options, model_id)
                model = models[model_id]
                units = measure_units(model, args.steps, args.units, precision)
            except Exception as error:  # noqa: BLE001 - reported in the table, then go on
                print(f"| {title(name, options)} | {failure(error)} |", flush=True)
                continue
            rates[model_id, precision] = units
            cells = [
                model["name"],
                ", ".join(model["layers"]),
                f"{units['gflop_per_unit']:.2f}",
                f"{units['units_per_s']:.2f}",
                f"{units['tflops']:.3f}",
                f"{100 * units['tflops'] / peak:.0f} %",
            ]
            if first:
                cells += measure_photos(model, units, record)
                if args.throughput:  # after each architecture: a cut-off run keeps its rows
                    args.throughput.write_text(record.to_json())
            else:
                base = rates.get((model_id, precisions[0]))
                ratio = units["units_per_s"] / base["units_per_s"] if base else float("nan")
                cells.append(f"{ratio:.2f}x")
            print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\nin all {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
