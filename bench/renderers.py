"""Benchmark atlas's renderers against the straightforward one-at-a-time loops.

Run ``python bench/renderers.py [--quick]``; it prints one markdown table. Every row is
measured side by side in one run on this machine, by one small function returning a
:class:`Row`. Add rows by adding functions to ``ROWS``.

FLOP count (row "VGG16 GFLOP/s"): for every Conv2D of the truncated model,
``MACs = H_out * W_out * k_h * k_w * C_in * C_out`` at each stage size; one optimisation
step costs ``2 * MACs`` for the forward pass plus the same again for the gradient with
respect to the input (the weight gradient is never computed, so the usual training
factor 3 would overstate the work): ``GFLOP = sum over stages of steps * 4 * MACs``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atlas.render.filters import (  # noqa: E402
    DEFAULT_CLASSIC,
    VGG_CLASSIC,
    ClassicParams,
    render_units,
)

log = logging.getLogger(__name__)
WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "models" / "mobilenet_2_5_128_tf.h5"


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    comparison: str
    baseline: str
    atlas: str
    ratio: float
    target: float

    def markdown(self) -> str:
        ok = "yes" if self.ratio >= self.target else "NO"
        return (
            f"| {self.comparison} | {self.baseline} | {self.atlas} | {self.ratio:.2f}x "
            f"| >= {self.target}x | {ok} |"
        )


def embedded_mobilenet() -> keras.Model:
    """The embedded MobileNet, rebuilt fully convolutional so smaller pictures are cheaper."""
    fixed = keras.applications.MobileNet(
        alpha=0.25, input_shape=(128, 128, 3), include_top=True, weights=str(WEIGHTS)
    )
    model = keras.models.clone_model(fixed, input_tensors=keras.Input((None, None, 3)))
    model.set_weights(fixed.get_weights())
    return model


def one_at_a_time(
    feature_model: keras.Model,
    units: list[int],
    params: ClassicParams,
    preprocess: Callable[[tf.Tensor], tf.Tensor],
) -> tuple[float, float]:
    """The keras.io / classic-script loop: one unit, batch of one, a fresh tape per step.

    The unit index is passed as a tensor, so the step is traced once per size rather than
    once per unit (kinder to the baseline than the keras.io code, which retraces).

    Returns:
        seconds for the first unit (tracing included) and for each later unit (mean).
    """

    @tf.function(reduce_retracing=True)
    def step(image: tf.Tensor, unit: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(image)
            activation = feature_model(preprocess(image), training=False)
            loss = tf.reduce_mean(tf.gather(activation, unit, axis=3))
        grads = tape.gradient(loss, image)
        grads /= tf.sqrt(tf.reduce_mean(tf.square(grads))) + 1e-5
        return image + params.step_size * grads

    seconds = []
    sizes = params.sizes()
    for unit in units:
        began = time.perf_counter()
        rng = np.random.default_rng(unit)
        image = tf.constant(
            128 + (rng.random((1, sizes[0], sizes[0], 3)) - 0.5) * params.noise, tf.float32
        )
        for size in sizes:
            image = tf.image.resize(image, (size, size), "bicubic")
            for _ in range(params.steps_per_size):
                image = step(image, tf.constant(unit))
        image.numpy()
        seconds.append(time.perf_counter() - began)
    return seconds[0], float(np.mean(seconds[1:] or seconds))


def atlas_batched(
    feature_model: keras.Model,
    units: list[int],
    params: ClassicParams,
    preprocess: Callable[[tf.Tensor], tf.Tensor],
    batch_size: int | None = None,
) -> float:
    """Seconds for atlas's ``render_units`` on the same units."""
    began = time.perf_counter()
    for _ in render_units(feature_model, units, units, params, preprocess, batch_size=batch_size):
        pass
    return time.perf_counter() - began


def row_per_unit_mobilenet(quick: bool) -> Row:
    """1. Per unit on the embedded model: classic-script loop vs batched atlas."""
    model = embedded_mobilenet()
    preprocess = keras.applications.mobilenet.preprocess_input
    layers = ["conv_pw_3", "conv_pw_13", "conv_preds"]
    loop_units, atlas_units = (2, 32) if quick else (4, 64)
    loop_seconds = atlas_seconds = 0.0
    for layer in layers:
        feature_model = keras.Model(model.input, model.get_layer(layer).output)
        channels = feature_model.output_shape[-1]
        units = list(range(min(atlas_units, channels)))
        first, later = one_at_a_time(feature_model, units[:loop_units], DEFAULT_CLASSIC, preprocess)
        # The loop's tracing is spread over as many units as atlas's, as in a real build.
        loop_seconds += later + (first - later) / len(units)
        atlas_seconds += atlas_batched(feature_model, units, DEFAULT_CLASSIC, preprocess) / len(
            units
        )
    loop_ms, atlas_ms = loop_seconds / len(layers) * 1e3, atlas_seconds / len(layers) * 1e3
    return Row(
        f"MobileNet per unit, classic {DEFAULT_CLASSIC.total_steps} steps, {', '.join(layers)}",
        f"{loop_ms:.0f} ms/unit (loop, batch 1)",
        f"{atlas_ms:.0f} ms/unit (batched)",
        loop_ms / atlas_ms,
        8.0,
    )


def rows_activations_gradcam(quick: bool) -> list[Row]:
    """2. PLACEHOLDER: activations + Grad-CAM, all 28 layers.

    To be filled in by the owner of atlas/render/activations.py and gradcam.py: one pass
    per layer per image (baseline) vs atlas's renderer, on the 111 dataset images.
    """
    return []


def conv_macs(model: keras.Model, size: int) -> float:
    """Multiply-accumulates of every Conv2D of ``model`` on one ``size`` x ``size`` image."""
    macs, scale = 0.0, 1
    for layer in model.layers:
        if isinstance(layer, keras.layers.MaxPooling2D):
            scale *= layer.strides[0]
        if isinstance(layer, keras.layers.Conv2D):
            side = size // scale
            kernel_h, kernel_w, c_in, c_out = layer.kernel.shape
            macs += side * side * kernel_h * kernel_w * c_in * c_out
    return macs


def measured_conv_peak() -> float:
    """GFLOP/s of one big 3x3 Conv2D forward pass, the best this CPU does on convolutions."""
    images = tf.random.uniform((8, 112, 112, 128))
    kernel = tf.random.uniform((3, 3, 128, 128))
    conv = tf.function(lambda x: tf.nn.conv2d(x, kernel, 1, "SAME"))
    conv(images).numpy()
    began = time.perf_counter()
    for _ in range(5):
        conv(images).numpy()
    seconds = (time.perf_counter() - began) / 5
    return 2 * 8 * 112 * 112 * 9 * 128 * 128 / seconds / 1e9


def rows_vgg16(quick: bool) -> list[Row]:
    """3. VGG16 block5_conv1, VGG recipe: throughput vs the loop, and achieved GFLOP/s."""
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(None, None, 3))
    model = keras.Model(base.input, base.get_layer("block5_conv1").output)
    preprocess = keras.applications.vgg16.preprocess_input
    # The recipe's shape (9 upscalings of x1.2) with fewer steps, to fit the time budget.
    params = (
        replace(VGG_CLASSIC, steps_per_size=1) if quick else replace(VGG_CLASSIC, steps_per_size=2)
    )
    if quick:
        params = replace(params, start_size=40)
    units = [0, 1]
    loop_seconds = sum(one_at_a_time(model, units, params, preprocess)) * len(units) / 2
    atlas_seconds = atlas_batched(model, units, params, preprocess)
    gflop = sum(4 * conv_macs(model, size) * params.steps_per_size for size in params.sizes())
    gflop *= len(units) / 1e9
    peak = measured_conv_peak()
    throughput = Row(
        f"VGG16 block5_conv1 units/s, {params.sizes()[0]}->{params.sizes()[-1]} px, "
        f"{params.total_steps} steps",
        f"{len(units) / loop_seconds:.3f} units/s",
        f"{len(units) / atlas_seconds:.3f} units/s",
        loop_seconds / atlas_seconds,
        0.95,
    )
    achieved = gflop / atlas_seconds
    flops = Row(
        "VGG16 achieved conv GFLOP/s vs measured 3x3 conv peak (info)",
        f"peak {peak:.0f} GFLOP/s",
        f"{achieved:.0f} GFLOP/s ({gflop:.0f} GFLOP)",
        achieved / peak,
        0.0,
    )
    return [throughput, flops]


ROWS: list[Callable[[bool], Row | list[Row]]] = [
    row_per_unit_mobilenet,
    rows_activations_gradcam,
    rows_vgg16,
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer units and smaller images")
    args = parser.parse_args()
    lines = ["| comparison | baseline | atlas | ratio | target | ok |", "|---|---|---|---|---|---|"]
    began = time.perf_counter()
    for make_rows in ROWS:
        rows = make_rows(args.quick)
        for row in rows if isinstance(rows, list) else [rows]:
            lines.append(row.markdown())
            print(row.markdown(), file=sys.stderr, flush=True)
    print("\n".join(lines))
    print(f"\n({time.perf_counter() - began:.0f} s, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
