"""Unit rendering speed per seed architecture, against the device's measured peak.

For each architecture of the seeds (random weights: ``weights: none``, 128-px input, so
that every model renders the same picture size), a short capped render of a few units on
a few conv layers (the middle and the last by default), timed on the second batch of each
layer (the first includes tracing). Prints units/s and the achieved TFLOP/s, the FLOPs
taken from :mod:`atlas.plan.estimate` (the forward FLOPs up to the layer, x 2 x steps),
against the peak a plain conv microbenchmark reaches on the same device (CPU or the first
GPU TensorFlow sees). The FLOPs counted are 2 x forward per step (the forward pass and the
gradient with respect to the picture; no weight gradients).

    python bench/scale.py [--steps 6] [--units 4] [--precision float32|mixed_bfloat16]
"""

from __future__ import annotations

import argparse
import time

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


def conv_peak(tf, dtype: str = "float32", repeats: int = 5) -> float:
    """Best TFLOP/s of a 3x3, 256 -> 256 channel conv on 16 x 56 x 56 images (59 GFLOP a
    call: large enough to keep every core's vector units busy; a 128-channel batch of 8
    measured less than VGG16's own convolutions reach)."""
    images = tf.random.uniform((16, 56, 56, 256), dtype=dtype)
    kernel = tf.random.uniform((3, 3, 256, 256), dtype=dtype)
    conv = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"))
    flops = 2 * 16 * 56 * 56 * 256 * 256 * 9
    conv(images, kernel).numpy()  # trace
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        conv(images, kernel).numpy()
        best = min(best, time.perf_counter() - began)
    return flops / best / 1e12


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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="lucid steps per unit")
    parser.add_argument("--units", type=int, default=4, help="units per timed batch")
    parser.add_argument("--precision", default="float32")
    args = parser.parse_args()
    from atlas.render._tensorflow import tf

    gpus = tf.config.list_physical_devices("GPU")
    device = (
        "GPU " + tf.config.experimental.get_device_details(gpus[0]).get("device_name", "")
        if gpus
        else "CPU"
    )
    peak = conv_peak(tf)
    print(
        f"device: {device}; conv microbenchmark peak {peak:.3f} TFLOP/s (float32); "
        f"{SIZE}-px inputs, random weights, lucid {args.steps} steps, batches of "
        f"{args.units}, precision {args.precision}"
    )
    print("| architecture | layers timed | GFLOP per unit | units/s | TFLOP/s | of peak |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, options in ARCHITECTURES:
        row = measure(name, options, args.steps, args.units, args.precision)
        print(
            f"| {row['name']} | {', '.join(row['layers'])} | {row['gflop_per_unit']:.2f} | "
            f"{row['units_per_s']:.2f} | {row['tflops']:.3f} | "
            f"{100 * row['tflops'] / peak:.0f} % |",
            flush=True,
        )


if __name__ == "__main__":
    main()
