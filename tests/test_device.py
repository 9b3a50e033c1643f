"""Rendering devices: the GPU batch size from free memory, and bfloat16 mixed precision."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from test_filters import SMALL_CLASSIC, SMALL_LUCID, feature_model, scale_pixels

from atlas.config.settings import ModelConfig, RenderSettings
from atlas.plan.jobs import _versions, job_key, unit_job, unit_seed
from atlas.render import device
from atlas.render.filters import DEFAULT_LUCID, render_units

GiB = 2**30


def test_gpu_batch_size_fills_a_share_of_free_memory():
    # 10 GiB free, 60 % usable = 6 GiB; 100 MiB per image -> 61 images.
    assert device.gpu_batch_size(10 * GiB, 100 * 2**20) == int(6 * GiB // (100 * 2**20)) == 61
    assert device.gpu_batch_size(10 * GiB, 1e3) == device.GPU_MAX_BATCH  # capped
    assert device.gpu_batch_size(10 * GiB, 1e3, max_batch=32) == 32
    assert device.gpu_batch_size(0, 1e6) == 1  # nothing free: still try one image
    assert device.gpu_batch_size(-5, 1e6) == 1
    with pytest.raises(ValueError, match="positive"):
        device.gpu_batch_size(GiB, 0)


def test_gpu_free_memory_is_total_less_what_tensorflow_holds(monkeypatch):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: [])
    assert device.gpu_free_bytes() is None  # no GPU: the CPU rule
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: ["GPU:0"])
    monkeypatch.setattr(
        tf.config.experimental,
        "get_memory_info",
        lambda name: {"current": 3 * GiB, "peak": 5 * GiB},
    )
    monkeypatch.setattr(device, "_gpu_total_bytes", lambda: 80 * GiB)
    assert device.gpu_free_bytes() == 77 * GiB
    monkeypatch.setattr(device, "_gpu_total_bytes", lambda: None)
    assert device.gpu_free_bytes() is None


def test_auto_batch_size_uses_the_gpu_when_one_is_seen(monkeypatch):
    model = feature_model("separable")
    need = device.per_image_bytes(model, 64)
    # Independently: 64x64 depthwise x6 + 32x32 conv x6 + 32x32 separable x5 (+ input x3).
    floats = 64 * 64 * 3 + 64 * 64 * 6 + 32 * 32 * 6 + 32 * 32 * 5
    assert need == floats * 12
    monkeypatch.setattr(device, "gpu_free_bytes", lambda: None)
    assert device.auto_batch_size(model, 64) == device.MAX_BATCH  # 3 GiB CPU budget
    monkeypatch.setattr(device, "gpu_free_bytes", lambda: 2**22)
    assert device.auto_batch_size(model, 64) == int(2**22 * device.GPU_MEMORY_SHARE // need) == 4


def test_mixed_precision_copy_computes_in_bfloat16_and_leaves_the_model_alone():
    model = feature_model("separable")
    assert device.with_precision(model, "float32") is model
    mixed = device.with_precision(model, "mixed_bfloat16")
    conv = [layer for layer in mixed.layers if layer.name == "conv"][0]
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    assert all(layer.compute_dtype == "float32" for layer in model.layers)
    assert mixed.output.dtype == "float32"
    with pytest.raises(ValueError, match="float32, mixed_bfloat16"):
        device.with_precision(model, "float16")


# bfloat16 keeps 8 significant bits: each rounding of an input or weight is off by up to
# 2^-9 (0.2 %) relative; three layers compound that to ~1 %, and 12 ascent steps on
# slightly different gradients drift a little further. Measured on these models: at most
# 0.6 % of the batch's largest objective (0.0002 in absolute terms). Tolerance: 2 %.
BF16_TOLERANCE = 0.02


@pytest.mark.parametrize("params", [SMALL_LUCID, SMALL_CLASSIC], ids=["lucid", "classic"])
@pytest.mark.parametrize("layer", ["conv", "separable"])
def test_bfloat16_objectives_are_close_to_float32(layer, params):
    model = feature_model(layer)
    units, seeds = [0, 1, 2, 3, 4], [1, 2, 3, 4, 5]

    def objectives(precision: str, **kwargs) -> np.ndarray:
        return np.array(
            [
                r.objective
                for batch in render_units(
                    model, units, seeds, params, scale_pixels, precision=precision, **kwargs
                )
                for r in batch
            ]
        )

    for kwargs in ({"max_steps": 0}, {}):  # the start, and after the whole ascent
        full, mixed = objectives("float32", **kwargs), objectives("mixed_bfloat16", **kwargs)
        difference = np.abs(mixed - full)
        assert difference.max() <= BF16_TOLERANCE * np.abs(full).max(), (full, mixed)
        assert difference.max() > 1e-7  # bfloat16 did run: float32 alone agrees exactly
    assert (objectives("mixed_bfloat16") > objectives("mixed_bfloat16", max_steps=0)).all()


def test_precision_is_in_the_unit_key_only_when_not_float32():
    render = RenderSettings()
    model = ModelConfig(
        id="m",
        title="m",
        application="MobileNet",
        file=None,
        options={},
        weights="none",
        sha256=None,
        layers=None,
        notes=None,
        render=render,
    )
    layer = {"name": "conv1", "address": "abc"}
    base = unit_job(model, layer, 3, DEFAULT_LUCID)
    mixed_model = dataclasses.replace(
        model, render=dataclasses.replace(render, precision="mixed_bfloat16")
    )
    assert unit_job(mixed_model, layer, 3, DEFAULT_LUCID).key != base.key
    # float32 keys are the keys made before the setting existed: no cache re-renders.
    before = {
        "address": "abc",
        "unit": 3,
        "method": repr(DEFAULT_LUCID),
        "seed": unit_seed(0, "conv1", 3),
        "redirect": None,  # this layer is not read after an activation
        **_versions(),
    }
    assert base.key == job_key("unit", before)


def test_forward_batches_shrink_for_models_with_large_activations():
    """Score-CAM and deletion/insertion feed masked inputs in batches of up to 256: a
    model whose activations would not fit the forward budget gets fewer per batch."""
    import keras

    small = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3)])
    large = keras.Sequential(
        [keras.Input((256, 256, 3)), keras.layers.Conv2D(512, 3), keras.layers.Conv2D(512, 3)]
    )
    assert device.forward_batch(small, 32, 256) == 256
    per_image = 256 * 256 * 512 * 2 * 4  # two float32 maps of 256 x 256 x 512, about
    expected = device.FORWARD_BUDGET_BYTES // per_image
    batch = device.forward_batch(large, 256, 256)
    assert 1 <= batch < 256 and abs(batch - expected) <= 1
    assert device.forward_batch(large, 2048, 256) == 1  # never below one
