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

import _tree  # noqa: E402, F401 - this checkout's atlas, whatever is installed
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from atlas.render.filters import (  # noqa: E402
    VGG_CLASSIC,
    ClassicParams,
    UnitRenderer,
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
    retrace_per_unit: bool = False,
) -> tuple[float, float]:
    """The keras.io / classic-script loop: one unit, batch of one, a fresh tape per step.

    With ``retrace_per_unit`` the unit index is a Python int, as in keras.io's
    "Visualizing what convnets learn" (``gradient_ascent_step(img, filter_index, ...)``),
    so TensorFlow traces the step again for every unit, as that script does. Without it
    the index is a tensor and the step is traced once (a kinder baseline).

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
                image = step(image, unit if retrace_per_unit else tf.constant(unit))
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


def _embedded():
    """The default site's MobileNet as a build loads it (units read where the build reads
    them), its conv layers' forward FLOPs from the input, and the 3x3 conv peak."""
    from atlas.config.load import load_config
    from atlas.plan import estimate
    from atlas.render.load import load_model

    root = Path(__file__).resolve().parents[1]
    loaded = load_model(load_config(root / "site_config.yaml").models[0])
    facts = {
        "input_size": list(loaded.input_size),
        "layers": [layer.to_dict() for layer in loaded.graph.layers],
    }
    return loaded, estimate.prefix_flops(facts)


def _area_scale(params, input_side: int) -> float:
    """Mean picture area over the steps, relative to the input size the FLOPs are for (the
    free-size model sees the picture as it is: lucid at its size, classic as it grows)."""
    sizes = [params.size] if hasattr(params, "size") else params.sizes()
    return float(np.mean([(size / input_side) ** 2 for size in sizes]))


def _atlas_units(
    loaded, prefix: dict, layers: list[str], units: int, params
) -> tuple[float, float]:
    """atlas as a build runs it: the layers split into runs by ``unit_groups``, one renderer
    (one trace) per run, batches mixing the run's layers. Returns (seconds per unit, GFLOP
    of the network passes: forward + input gradient, 3x the forward FLOPs, per step)."""
    from atlas.plan import estimate
    from atlas.render.run import unit_groups

    steps = estimate.unit_steps(params)
    counts = [min(units, loaded.features_model([n]).output_shape[-1]) for n in layers]
    runs = unit_groups([prefix[n] for n in layers], counts, steps)
    began, gflop = time.perf_counter(), 0.0
    for run in runs:
        names = [layers[i] for i in run]
        renderer = UnitRenderer(
            loaded.features_model(names), params, loaded.preprocess, eval_size=loaded.input_size[0]
        )
        pairs = [(k, u) for k, i in enumerate(run) for u in range(counts[i])]
        for _ in renderer.render(
            [u for _, u in pairs], [u for _, u in pairs], [k for k, _ in pairs]
        ):
            pass
        gflop += (
            len(pairs)
            * 3
            * steps
            * prefix[names[-1]]
            / 1e9
            * _area_scale(params, loaded.input_size[0])
        )
    return (time.perf_counter() - began) / sum(counts), gflop


def _lucid_one_at_a_time(loaded, layer: str, units: list[int], params) -> tuple[float, float]:
    """The same lucid optimisation, one unit at a time (batch of one), traced once for the
    layer: atlas's own step and evaluation, so the work per unit is the same.

    Returns:
        seconds for the first unit (tracing included) and for each later unit (mean).
    """
    renderer = UnitRenderer(
        loaded.feature_model(layer), params, loaded.preprocess, eval_size=loaded.input_size[0]
    )
    seconds = []
    for unit in units:
        began = time.perf_counter()
        for _ in renderer.render([unit], [unit], batch_size=1):
            pass
        seconds.append(time.perf_counter() - began)
    return seconds[0], float(np.mean(seconds[1:] or seconds))


def rows_per_unit(quick: bool) -> list[Row]:
    """1. Per unit on the embedded model, both methods: batched atlas vs one unit at a time.

    The baseline a careful engineer would write is a loop over units, one at a time,
    with its step traced once per layer; its one trace is spread over as many units as
    atlas renders, as in a real build. The keras.io loop (traced again for every unit) is
    shown for information.
    """
    from atlas.config.methods import resolve_params

    loaded, prefix = _embedded()
    preprocess = loaded.preprocess
    layers = ["conv_pw_3", "conv_pw_13", "conv_preds"]
    loop_units, atlas_units = (2, 32) if quick else (4, 64)
    peak = measured_conv_peak()
    rows = []
    for method in ("classic", "lucid"):
        params = resolve_params(method, loaded.input_size[0], {}, method)
        keras_io = traced_once = 0.0
        for layer in layers:
            feature_model = loaded.feature_model(layer)
            count = min(atlas_units, feature_model.output_shape[-1])
            sample = list(range(loop_units))
            if method == "classic":
                first, later = one_at_a_time(
                    feature_model, sample, params, preprocess, retrace_per_unit=True
                )
                keras_io += (first + later * (len(sample) - 1)) / len(sample)
                first, later = one_at_a_time(feature_model, sample, params, preprocess)
            else:
                first, later = _lucid_one_at_a_time(loaded, layer, sample, params)
            traced_once += later + (first - later) / count
        ours, gflop = _atlas_units(loaded, prefix, layers, atlas_units, params)
        once_ms, ours_ms = traced_once / len(layers) * 1e3, ours * 1e3
        steps = getattr(params, "total_steps", None) or params.steps
        name = f"MobileNet per unit, {method} {steps} steps, {', '.join(layers)}"
        rows.append(
            Row(
                name,
                f"{once_ms:.0f} ms/unit (one at a time, traced once per layer)",
                f"{ours_ms:.0f} ms/unit (batched, one trace per run of layers)",
                once_ms / ours_ms,
                3.0,
            )
        )
        if method == "classic":
            classic_ms = keras_io / len(layers) * 1e3
            rows.append(
                Row(
                    name + " (info: the keras.io loop, traced per unit)",
                    f"{classic_ms:.0f} ms/unit (batch 1, traced per unit)",
                    f"{ours_ms:.0f} ms/unit (batched)",
                    classic_ms / ours_ms,
                    0.0,
                )
            )
        achieved = gflop / (
            ours
            * sum(min(atlas_units, loaded.features_model([n]).output_shape[-1]) for n in layers)
        )
        rows.append(
            Row(
                f"MobileNet {method}: achieved network GFLOP/s vs measured 3x3 conv peak (info)",
                f"peak {peak:.0f} GFLOP/s",
                f"{achieved:.1f} GFLOP/s (3x forward FLOPs per step)",
                achieved / peak,
                0.0,
            )
        )
    return rows


def _classic_heatmap_loop(
    model: keras.Model, layers: list[str], images: np.ndarray, preprocess: Callable
) -> float:
    """The classic scripts: per layer, its own activation model and Grad-CAM model, and
    per image one forward pass for the feature maps plus one forward/backward pass for
    the heat map. Returns seconds per image."""
    activation_models = [keras.Model(model.input, model.get_layer(n).output) for n in layers]
    gradcam_models = [
        keras.Model(model.input, [model.get_layer(n).output, model.output]) for n in layers
    ]
    began = time.perf_counter()
    for image in images:
        x = preprocess(tf.constant(image[None], tf.float32))
        for activation_model, gradcam_model in zip(activation_models, gradcam_models, strict=True):
            activation_model(x, training=False).numpy()
            with tf.GradientTape() as tape:
                features, logits = gradcam_model(x, training=False)
                score = logits[:, int(tf.argmax(logits[0]))]
            grads = tape.gradient(score, features)
            weights = tf.reduce_mean(grads, axis=(1, 2))
            tf.nn.relu(tf.einsum("nhwc,nc->nhw", features, weights)).numpy()
    return (time.perf_counter() - began) / len(images)


def _traced_per_layer(loaded, layers: list[str], keep: int) -> list[Callable]:
    """The strongest per-layer baseline: for each layer a traced function over a batch
    (the layer's maps and statistics, and Grad-CAM, Grad-CAM++ and LayerCAM for the
    top-1 and a second class, as atlas computes them from the same gradients), each
    running the model from the input for its own layer."""
    from atlas.render.cams import gradient_cams

    functions = []
    for name in layers:
        model = loaded.graph.submodel(loaded.unit_tensors([name]), with_logits=True)

        def one_layer(images, second, model=model):
            with tf.GradientTape(persistent=True) as tape:
                feature, logits = model(loaded.preprocess(images), training=False)
                top1 = tf.argmax(logits, axis=-1, output_type=tf.int32)
                second = tf.where(second < 0, top1, second)
                scores = [tf.reduce_sum(tf.gather(logits, c, batch_dims=1)) for c in (top1, second)]
            cams = [gradient_cams(feature, tape.gradient(score, feature)) for score in scores]
            del tape
            return (
                feature[..., :keep],
                tf.reduce_max(feature, axis=(1, 2)),
                tf.reduce_mean(feature, axis=(1, 2)),
                cams,
            )

        functions.append(tf.function(one_layer, reduce_retracing=True))
    return functions


def rows_activations_gradcam(quick: bool) -> list[Row]:
    """2. Activations + the gradient CAMs for all 28 conv layers of the embedded model,
    per image.

    Baseline: a traced function per layer over the same batches of 32 images (each runs
    the model forward to the logits and back to its layer, twice: top-1 and a second
    class, and computes Grad-CAM, Grad-CAM++ and LayerCAM from the gradients). atlas: one
    multi-output forward pass and one backward pass per class slot per batch for every
    layer at once (MapRenderer without Score-CAM, whose masked forward passes are the same
    work either way; the numbers only: drawing is the same work in both and is not
    timed). Tracing is excluded from both.
    """
    from atlas.config.load import load_config
    from atlas.data.batches import iter_batches
    from atlas.data.scan import scan_dataset
    from atlas.render.load import load_model
    from atlas.render.maps import MapRenderer

    root = Path(__file__).resolve().parents[1]
    loaded = load_model(load_config(root / "site_config.yaml").models[0])
    layers = [layer.name for layer in loaded.conv_layers()]
    scan = scan_dataset(
        root / "data/oxford-pets/images", root / "data/oxford-pets/annotations/list.txt"
    )
    count = 32 if quick else 111
    batches = [
        batch for _, batch in iter_batches(scan.images[:count], loaded.input_size, batch_size=32)
    ]
    images = sum(len(batch) for batch in batches)
    second = [tf.constant(np.full(len(batch), -1, np.int32)) for batch in batches]
    inputs = [tf.constant(batch, tf.float32) for batch in batches]
    functions = _traced_per_layer(loaded, layers, 64)
    for function in functions:  # trace (full batch and the short last one)
        for x, s in {len(x): (x, s) for x, s in zip(inputs, second, strict=True)}.values():
            function(x, s)
    renderer = MapRenderer(
        loaded.graph.submodel(loaded.unit_tensors(layers), with_logits=True), loaded.preprocess, 64
    )
    for batch in {len(batch): batch for batch in batches}.values():
        renderer.run(batch)  # trace
    loop, ours = [], []
    for _ in range(2):  # alternate, keep each one's best: the machine is shared
        began = time.perf_counter()
        for x, s in zip(inputs, second, strict=True):
            for function in functions:
                tf.nest.map_structure(lambda t: t.numpy(), function(x, s))
        loop.append((time.perf_counter() - began) / images)
        began = time.perf_counter()
        for batch in batches:
            renderer.run(batch)
        ours.append((time.perf_counter() - began) / images)
    return [
        Row(
            f"Activations + Grad-CAM, Grad-CAM++, LayerCAM, {len(layers)} layers, per image "
            f"({images} images)",
            f"{min(loop) * 1e3:.1f} ms/image (a traced pass per layer, batches of 32)",
            f"{min(ours) * 1e3:.1f} ms/image (one pass for all layers)",
            min(loop) / min(ours),
            8.0,
        )
    ]


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
    # Alternate the two twice and keep each one's best: on a shared 2-core machine a
    # single pair of runs differs by +-10 % from noise alone.
    loop_runs, atlas_runs = [], []
    for _ in range(2):
        loop_runs.append(sum(one_at_a_time(model, units, params, preprocess)) * len(units) / 2)
        atlas_runs.append(atlas_batched(model, units, params, preprocess))
    loop_seconds, atlas_seconds = min(loop_runs), min(atlas_runs)
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


ROWS: list[Callable[[bool], Row | list[Row]]] = [  # noqa: RUF012
    rows_per_unit,
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
