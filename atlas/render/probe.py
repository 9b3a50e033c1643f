"""A short probe of this machine's speed, for ``atlas plan``'s nominal rates.

Until a build has recorded its own throughput in a cache, the plan's time figures come from
rates measured on the project's reference machine (:mod:`atlas.plan.estimate`). The probe
runs one fixed workload (a small convolutional network's forward and input-gradient pass, as
a unit picture's step does) on this machine, once per cache; the ratio of the reference
machine's rate to this one scales every nominal rate (``Throughput.scale``).
"""

from __future__ import annotations

import time

import numpy as np

from atlas.render.engine import B, keras, ops

SIDE = 96
BATCH = 8
FILTERS = (32, 64, 128, 128)


def _model():
    inputs = keras.Input((SIDE, SIDE, 3))
    x = inputs
    for index, filters in enumerate(FILTERS):
        x = keras.layers.Conv2D(filters, 3, strides=2 if index else 1, padding="same")(x)
        x = keras.layers.ReLU()(x)
    return keras.Model(inputs, x)


def _flops(model) -> float:
    """Forward FLOPs of the probe for one image (2 x weights x output positions)."""
    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            height, width = layer.output.shape[1:3]
            total += 2.0 * layer.count_params() * height * width
    return total


def measure(seconds: float = 1.5, windows: int = 6) -> dict[str, float]:
    """GFLOP/s of the probe's steps (forward + gradient ~ 3 forwards) on this machine: the
    best of ``windows`` equal windows, so that a moment of other work on the machine does
    not slow every later estimate down (one 1.5-s window measured 170 and 276 GFLOP/s in
    two runs of the same plan here)."""
    keras.utils.set_random_seed(0)
    model = _model()
    pixels = np.random.default_rng(0).uniform(size=(BATCH, SIDE, SIDE, 3))
    batch = ops.convert_to_tensor(pixels, "float32")
    gradient = B.value_and_grad(lambda x: (ops.mean(model(x, training=False)), ()))
    step = B.compile(lambda x: gradient(x)[0])

    ops.convert_to_numpy(step(batch))  # trace and warm up
    flops = 3.0 * _flops(model) * BATCH
    rates, total = [], 0.0
    for _ in range(windows):
        runs, start = 0, time.perf_counter()
        while runs < 2 or time.perf_counter() - start < seconds / windows:
            ops.convert_to_numpy(step(batch))
            runs += 1
        elapsed = time.perf_counter() - start
        total += elapsed
        rates.append(flops * runs / elapsed / 1e9)
    return {
        "gflops": round(max(rates), 2),
        "median": round(sorted(rates)[windows // 2], 2),
        "seconds": round(total, 3),
    }


if __name__ == "__main__":  # run by atlas.prepare.calibration in a fresh process
    import json

    print(json.dumps(measure()))
