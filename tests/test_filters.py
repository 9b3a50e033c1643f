"""Filter visualization: property tests on tiny conv models, one slow test on MobileNet."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas.render.filters import (
    DEFAULT_CLASSIC,
    DEFAULT_LUCID,
    VGG_CLASSIC,
    ClassicParams,
    LucidParams,
    UnitRenderer,
    UnitResult,
    auto_batch_size,
    default_params_for,
    render_units,
)

SMALL_CLASSIC = ClassicParams(
    start_size=16, upscale_steps=1, upscale_factor=2.0, steps_per_size=6, step_size=3.0
)
SMALL_LUCID = LucidParams(size=32, steps=12, learning_rate=0.1, jitter=2)
METHODS = {"classic": SMALL_CLASSIC, "lucid": SMALL_LUCID}
WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "models" / "mobilenet_2_5_128_tf.h5"


def scale_pixels(images: tf.Tensor) -> tf.Tensor:
    return images / 127.5 - 1.0


def tiny_model(size: int | None = None) -> keras.Model:
    """DepthwiseConv2D -> Conv2D -> SeparableConv2D, seeded weights, any or fixed size.

    The depthwise layer comes first and the conv uses tanh: after a ReLU a unit whose
    weights are mostly negative is best left at zero, and its objective cannot rise.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(
        inputs
    )
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="tanh", name="conv")(x)
    x = keras.layers.SeparableConv2D(5, 3, padding="same", name="separable")(x)
    return keras.Model(inputs, x)


def feature_model(layer: str, size: int | None = None) -> keras.Model:
    model = tiny_model(size)
    return keras.Model(model.input, model.get_layer(layer).output)


def render(model, units, seeds, params, **kwargs) -> list[UnitResult]:
    return [
        r
        for batch in render_units(model, units, seeds, params, scale_pixels, **kwargs)
        for r in batch
    ]


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("layer", ["conv", "depthwise", "separable"])
def test_gradient_ascent_raises_the_objective(method: str, layer: str) -> None:
    model = feature_model(layer)
    units, seeds = [0, 2, 4], [11, 12, 13]
    start = render(model, units, seeds, METHODS[method], max_steps=0)
    end = render(model, units, seeds, METHODS[method])
    for before, after in zip(start, end, strict=True):
        assert after.steps > 0 and before.steps == 0
        assert after.objective > before.objective + 1e-4


@pytest.mark.parametrize("method", sorted(METHODS))
def test_fixed_size_model_renders_at_the_model_size(method: str) -> None:
    model = feature_model("separable", size=40)
    start = render(model, [1, 3], [1, 2], METHODS[method], max_steps=0)
    (result, other) = render(model, [1, 3], [1, 2], METHODS[method])
    expected = 40 if method == "classic" else SMALL_LUCID.size
    assert result.picture.shape == (expected, expected, 3)
    assert result.objective > start[0].objective and other.objective > start[1].objective


@pytest.mark.parametrize("method", sorted(METHODS))
def test_batched_and_single_rendering_agree(method: str) -> None:
    model = feature_model("separable")
    units, seeds = [0, 1, 2, 3, 4], [7, 8, 9, 10, 11]
    batched = render(model, units, seeds, METHODS[method], batch_size=5)
    single = render(model, units, seeds, METHODS[method], batch_size=1)
    for one, many in zip(single, batched, strict=True):
        assert one.unit == many.unit
        difference = np.abs(one.picture.astype(int) - many.picture.astype(int))
        assert difference.max() <= 3 and difference.mean() < 0.05
        assert one.objective == pytest.approx(many.objective, rel=1e-3, abs=1e-4)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_one_renderer_for_several_layers_draws_what_each_layer_draws_alone(method: str) -> None:
    model = tiny_model()
    names = ["depthwise", "conv", "separable"]
    several = keras.Model(model.input, [model.get_layer(name).output for name in names])
    units, layers, seeds = [5, 0, 3, 1, 4], [0, 1, 1, 2, 2], [7, 8, 9, 10, 11]
    renderer = UnitRenderer(several, METHODS[method], scale_pixels)
    mixed = [r for b in renderer.render(units, seeds, layers, batch_size=5) for r in b]
    assert [(r.layer, r.unit) for r in mixed] == list(zip(layers, units, strict=True))
    for result, layer, seed in zip(mixed, layers, seeds, strict=True):
        (alone,) = render(feature_model(names[layer]), [result.unit], [seed], METHODS[method])
        difference = np.abs(alone.picture.astype(int) - result.picture.astype(int))
        assert difference.max() <= 3 and difference.mean() < 0.05
        assert alone.objective == pytest.approx(result.objective, rel=1e-3, abs=1e-4)
        assert alone.own_activation == pytest.approx(result.own_activation, rel=1e-3, abs=1e-4)
    with pytest.raises(ValueError, match="out of range"):
        list(renderer.render([5], [0], [2]))  # "separable" has 5 units
    with pytest.raises(ValueError, match="out of range"):
        list(renderer.render([0], [0], [3]))  # and there is no fourth output


def test_same_seed_same_picture_different_seed_different_picture() -> None:
    model = feature_model("conv")
    first, again, other = render(model, [1, 1, 1], [3, 3, 4], SMALL_LUCID)
    assert np.array_equal(first.picture, again.picture)
    assert not np.array_equal(first.picture, other.picture)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_unit_that_never_fires_is_dead(method: str) -> None:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")
    model = keras.Model(inputs, conv(inputs))
    kernel, bias = conv.get_weights()
    kernel[..., 1], bias[1] = 0.0, -1.0
    conv.set_weights([kernel, bias])
    alive, dead = render(model, [0, 1], [0, 0], METHODS[method])
    assert dead.dead and dead.own_activation == 0.0
    assert not alive.dead


@pytest.mark.parametrize("method", sorted(METHODS))
def test_picture_shapes_and_result_fields(method: str) -> None:
    results = render(feature_model("depthwise"), [0, 5], [1, 2], METHODS[method], max_steps=3)
    size = 32
    for result in results:
        assert result.picture.shape == (size, size, 3) and result.picture.dtype == np.uint8
        assert result.steps == 3 and result.seconds > 0
        assert isinstance(result.objective, float) and isinstance(result.own_activation, float)
    assert [r.unit for r in results] == [0, 5]


def test_batches_are_yielded_as_they_finish() -> None:
    batches = list(
        render_units(
            feature_model("conv"),
            range(5),
            range(5),
            SMALL_LUCID,
            scale_pixels,
            batch_size=2,
            max_steps=1,
        )
    )
    assert [len(batch) for batch in batches] == [2, 2, 1]


def test_bad_arguments_raise() -> None:
    model = feature_model("conv")
    with pytest.raises(ValueError, match="seeds"):
        render(model, [0, 1], [0], SMALL_LUCID)
    with pytest.raises(ValueError, match="out of range"):
        render(model, [6], [0], SMALL_LUCID)
    with pytest.raises(ValueError, match="Expected one of"):
        default_params_for(128, "deepdream")


def test_parameters_are_frozen_and_their_repr_is_stable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_CLASSIC.steps_per_size = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_LUCID.steps = 3  # type: ignore[misc]
    assert repr(VGG_CLASSIC) == (
        "ClassicParams(start_size=80, upscale_steps=9, upscale_factor=1.2, steps_per_size=15, "
        "step_size=1.0, noise=20.0, contrast=0.15)"
    )
    assert repr(LucidParams(size=64, steps=8, scales=(1.0,), angles=(0.0,))) == (
        "LucidParams(size=64, steps=8, learning_rate=0.05, jitter=8, scales=(1.0,), "
        "angles=(0.0,), decorrelate=True, fft=True, small_field=0.0, "
        "small_field_learning_rate=0.4, small_field_step_factor=1.0)"
    )
    assert hash(DEFAULT_LUCID) == hash(dataclasses.replace(DEFAULT_LUCID))


def test_default_parameters_follow_the_input_size() -> None:
    assert default_params_for(224, "classic") == VGG_CLASSIC
    assert VGG_CLASSIC.sizes() == (80, 96, 115, 138, 165, 199, 238, 286, 343, 412)
    assert default_params_for(128, "classic") == DEFAULT_CLASSIC
    assert DEFAULT_CLASSIC.sizes(128)[-1] == 128
    assert default_params_for(128, "lucid") == DEFAULT_LUCID


def test_auto_batch_size_shrinks_with_image_size() -> None:
    model = feature_model("separable")
    small, large = auto_batch_size(model, 32), auto_batch_size(model, 2048)
    assert 1 <= large < small <= 64


@pytest.mark.slow
@pytest.mark.skipif(not WEIGHTS.exists(), reason="embedded MobileNet weights missing")
def test_embedded_mobilenet_class_units_rise() -> None:
    base = keras.applications.MobileNet(
        alpha=0.25, input_shape=(128, 128, 3), include_top=True, weights=str(WEIGHTS)
    )
    model = keras.Model(base.input, base.get_layer("conv_preds").output)
    preprocess = keras.applications.mobilenet.preprocess_input
    units = [1, 254, 281]
    for params in (DEFAULT_CLASSIC, DEFAULT_LUCID):
        start = [
            r for b in render_units(model, units, units, params, preprocess, max_steps=0) for r in b
        ]
        end = [
            r for b in render_units(model, units, units, params, preprocess, max_steps=8) for r in b
        ]
        for before, after in zip(start, end, strict=True):
            assert after.objective > before.objective
            assert after.own_activation > 0 and not after.dead


def _runs_cost(runs, prefix, units, steps) -> float:
    """What a split costs by unit_groups' own measure, computed independently."""
    from atlas.render.run import FORWARD_FLOPS_PER_SECOND, TRACE_SECONDS

    return sum(
        TRACE_SECONDS
        + sum(units[i] for i in run) * steps * prefix[run[-1]] / FORWARD_FLOPS_PER_SECOND
        for run in runs
    )


def test_unit_groups_share_a_trace_only_where_it_pays() -> None:
    from atlas.render.run import unit_groups

    # Two cheap layers and an expensive one: running the two through it costs little.
    assert unit_groups([1e9, 1e9, 10e9], [1, 1, 1000], 1) == [range(0, 3)]
    # Many units of a cheap layer through a 100x deeper one: a trace of its own pays.
    assert unit_groups([1e9, 100e9], [1000, 10], 22) == [range(0, 1), range(1, 2)]


@settings(deadline=None, max_examples=60)  # the machine is shared: no per-example deadline
@given(
    st.lists(st.tuples(st.floats(0.0, 5e9), st.integers(1, 300)), min_size=1, max_size=7),
    st.integers(1, 30),
)
def test_unit_groups_is_the_cheapest_split(layers, steps) -> None:
    import itertools

    from atlas.render.run import unit_groups

    prefix = list(itertools.accumulate(flops for flops, _ in layers))
    units = [count for _, count in layers]
    runs = unit_groups(prefix, units, steps)
    assert [i for run in runs for i in run] == list(range(len(prefix)))
    best = min(
        _runs_cost(
            [range(a, b) for a, b in zip((0, *cuts), (*cuts, len(prefix)), strict=True)],
            prefix,
            units,
            steps,
        )
        for size in range(len(prefix))
        for cuts in itertools.combinations(range(1, len(prefix)), size)
    )
    assert _runs_cost(runs, prefix, units, steps) == pytest.approx(best, rel=1e-9)
