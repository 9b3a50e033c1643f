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
        [--precision float32,mixed_bfloat16] [--only VGG16,MobileNet]

Also per architecture: photos/s of activations + the four CAMs at the two layers, and
the device's matrix-product peaks in float32 and bfloat16 (what mixed_bfloat16 can reach).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

ARCHITECTURES = [
    ("VGG16", {}),
    ("MobileNet", {"alpha": 0.25}),
    ("MobileNet", {"alpha": 0.5}),
    ("MobileNet", {"alpha": 0.75}),
    ("MobileNet", {"alpha": 1.0}),
    ("MobileNetV2", {}),
    ("DenseNet121", {}),
    ("InceptionV3", {}),
    ("NASNetMobile", {}),
    ("ResNet50", {}),
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


def matmul_peak(dtype: str, side: int = 4096) -> float:
    """Best TFLOP/s of one ``side`` x ``side`` matrix product in ``dtype``."""
    from atlas.render.engine import B, ops

    a = ops.cast(ops.convert_to_tensor(RNG.random((side, side))), dtype)
    b = ops.cast(ops.convert_to_tensor(RNG.random((side, side))), dtype)
    product = B.compile(lambda x, y: ops.sum(ops.cast(ops.matmul(x, y), "float32")))
    return 2 * side**3 / _timed(product, a, b) / 1e12


# atlas.plan.estimate counts a unit's step as 3 x the forward FLOPs (a training step's forward,
# input and weight gradients): its cost model. Gradient ascent on the picture needs no
# weight gradients, so the work actually done is about 2 x forward.
ASCENT_SHARE = 2 / 3


def measure(name: str, options: dict, steps: int, units: int, precision: str) -> dict:
    """Units/s and TFLOP/s of one architecture, summed over its chosen layers."""
    from atlas.config.settings import ModelConfig, RenderSettings
    from atlas.plan.estimate import job_gflop, prefix_flops, unit_steps
    from atlas.plan.jobs import unit_params
    from atlas.render.filters import render_units
    from atlas.render.load import load_model
    from atlas.render.run import model_facts

    render = RenderSettings(precision=precision)
    config = ModelConfig(
        id=name.lower(),
        title=name,
        application=name,
        file=None,
        options={**options, "input_shape": [SIZE, SIZE, 3]},
        weights="none",
        sha256=None,
        layers=None,
        notes=None,
        render=render,
    )
    began = time.perf_counter()
    loaded = load_model(config)
    facts = model_facts(loaded)
    load_seconds = time.perf_counter() - began
    prefix = prefix_flops(facts)
    params = unit_params(config, 0, loaded.input_size)
    layers = [layer.name for layer in loaded.conv_layers()]
    chosen = [layers[len(layers) // 2], layers[-1]]
    seconds = gflop = 0.0
    timed = 0
    for layer in chosen:
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
        seconds += sum(r.seconds for r in last)
        timed += len(last)
        gflop += (
            len(last)
            * ASCENT_SHARE
            * job_gflop("unit", facts, prefix, layer=layer, steps=unit_steps(params, steps))
        )
    return {
        "name": name + (f" a{options['alpha']}" if "alpha" in options else ""),
        "units_per_s": timed / seconds,
        "tflops": gflop / seconds / 1e3,
        "gflop_per_unit": gflop / timed,
        "layers": chosen,
        "load": load_seconds,
        "photos_per_s": images_per_second(loaded, chosen),
    }


def images_per_second(loaded, layers: list[str], batch: int = 32) -> float:
    """Photos/s of activations + Grad-CAM, Grad-CAM++, LayerCAM and Score-CAM at ``layers``
    (random photos; the second batch timed, the first compiles)."""
    from atlas.render.maps import MapRenderer

    model = loaded.graph.submodel(loaded.unit_tensors(layers), with_logits=True)
    renderer = MapRenderer(
        model, loaded.preprocess, 16, gradcam=True, score_channels=6,
        probabilities=loaded.probabilities,
    )  # fmt: skip
    photos = RNG.integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)
    renderer.run(photos)
    began = time.perf_counter()
    renderer.run(photos)
    return batch / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="lucid steps per unit")
    parser.add_argument("--units", type=int, default=4, help="units per timed batch")
    parser.add_argument(
        "--precision", default="float32,mixed_bfloat16", help="comma-separated precisions"
    )
    parser.add_argument("--backend", default="tensorflow", choices=("tensorflow", "jax"))
    parser.add_argument("--only", default="", help="comma-separated architectures (names)")
    args = parser.parse_args()
    from atlas.render.backend import choose

    choose(args.backend)
    from atlas.render.engine import B

    precisions = args.precision.split(",")
    peaks = {dtype: matmul_peak(dtype) for dtype in ("float32", "bfloat16")}
    print(
        f"device: {B.device()} ({B.NAME} {B.VERSION}); matmul peak {peaks['float32']:.2f} "
        f"TFLOP/s float32, {peaks['bfloat16']:.2f} bfloat16; 3x3 conv peak "
        f"{conv_peak():.2f} TFLOP/s float32; {SIZE}-px inputs, random weights, lucid "
        f"{args.steps} steps, batches of {args.units}"
    )
    head = " | ".join(f"units/s {p} | TFLOP/s {p} | of peak" for p in precisions)
    print(f"| architecture | layers timed | GFLOP per unit | {head} | photos/s (maps) |")
    print("| --- " * (4 + 3 * len(precisions)) + "|")
    only = {n.lower() for n in args.only.split(",") if n}
    for name, options in ARCHITECTURES:
        if only and name.lower() not in only:
            continue
        cells, row = [], {}
        for precision in precisions:
            row = measure(name, options, args.steps, args.units, precision)
            peak = peaks["bfloat16" if "bfloat16" in precision else "float32"]
            cells.append(
                f"{row['units_per_s']:.2f} | {row['tflops']:.3f} | "
                f"{100 * row['tflops'] / peak:.0f} %"
            )
        print(
            f"| {row['name']} | {', '.join(row['layers'])} | {row['gflop_per_unit']:.2f} | "
            f"{' | '.join(cells)} | {row['photos_per_s']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
