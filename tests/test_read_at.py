"""Where units are read: after a conv's own BatchNorm and activation (the default).

On the real embedded MobileNet: the default pictures must raise the post-activation
objective they are shown for, units are read at the ReLU6 after each conv's BatchNorm,
and ``read_at: conv`` keeps the raw conv output available.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atlas.config.load import load_config
from atlas.config.methods import DEFAULT_LUCID

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mobilenet():
    from atlas.render.load import load_model

    config = load_config(REPO / "site_config.yaml")
    return load_model(config.models[0])


def test_units_are_read_after_batchnorm_and_relu(mobilenet) -> None:
    conv = {layer.name: layer for layer in mobilenet.graph.conv_layers}
    assert conv["conv1"].read_at == "conv1_relu"
    assert conv["conv1"].read_ops == ("BatchNormalization", "ReLU")
    assert conv["conv_dw_5"].read_at == "conv_dw_5_relu"
    # the class logits have no activation after them: read at the conv itself
    assert conv["conv_preds"].read_at == "conv_preds" and conv["conv_preds"].read_ops == ()
    # measured on this model: 2 of the 2,736 BN-followed channels have a negative scale
    negative = sum(layer.negative_scale or 0 for layer in conv.values())
    assert negative == 2


def test_default_pictures_raise_the_post_activation_objective(mobilenet) -> None:
    """Rendered with the default method, a unit's picture excites the unit's
    post-activation tensor more than the optimisation's own starting picture does."""
    from atlas.render.filters import render_units

    units = [0, 3, 7, 11]
    for layer in ("conv_pw_3", "conv_pw_11"):
        model = mobilenet.feature_model(layer)
        assert mobilenet.graph.unit_tensor(layer) == f"{layer}_relu"
        runs = {}
        for steps in (0, DEFAULT_LUCID.steps):
            runs[steps] = [
                r
                for batch in render_units(
                    model,
                    units,
                    units,
                    DEFAULT_LUCID,
                    mobilenet.preprocess,
                    max_steps=steps,
                    eval_size=128,
                )
                for r in batch
            ]
        for start, end in zip(runs[0], runs[DEFAULT_LUCID.steps], strict=True):
            assert end.own_activation > start.own_activation, (layer, end.unit)
            assert end.own_activation > 0 and not end.dead


def test_read_at_conv_reads_the_raw_output() -> None:
    from atlas.render.load import load_model

    config = load_config(REPO / "site_config.yaml")
    raw = load_model(config.models[0].__class__(**{**config.models[0].__dict__, "read_at": "conv"}))
    layer = {layer.name: layer for layer in raw.graph.conv_layers}["conv1"]
    assert layer.read_at == "conv1" and layer.read_ops == ()
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 128, 128, 3)).astype(np.float32)
    output = raw.feature_model("conv1")(raw.preprocess(pixels)).numpy()
    assert output.min() < 0  # pre-BN, pre-ReLU values: negatives remain
