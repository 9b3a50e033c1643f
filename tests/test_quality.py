"""Unit pictures that beat the photos (issue 25): the presets, the unit page's word when a
picture loses, and the default settings winning on a layer with a small receptive field.

Activations are recomputed here with plain Keras on the published pictures and on the
photos, not read from atlas's cache.
"""

from __future__ import annotations

import dataclasses
import io
import re

import keras
import numpy as np
import pytest
from conftest import model_entry
from PIL import Image

from atlas.build import BuildOptions, build
from atlas.config import methods
from atlas.config.load import load_config
from atlas.errors import ConfigError
from atlas.plan import jobs as plan


def test_quality_presets_order_cost_and_auto_keeps_the_defaults(small_config):
    draft, standard, fine = (methods.QUALITY_PRESETS[q][1] for q in ("draft", "standard", "fine"))
    assert draft.steps * draft.size**2 < standard.steps * standard.size**2
    assert standard.steps * standard.size**2 < fine.steps * fine.size**2
    assert (fine.steps, fine.size) == (512, 128)  # Lucid's own recipe
    assert methods.default_params_for(128, "lucid") == standard  # auto: small models
    assert methods.default_params_for(299, "lucid") == fine  # auto: ImageNet-size models
    assert methods.default_params_for(299, "lucid", "draft") == draft
    config = load_config(small_config(render={"quality": "draft", "lucid": {"steps": 5}}))
    params = plan.unit_params(config.models[0], 0, (32, 32))
    assert params == type(draft)(**{**draft.__dict__, "steps": 5})  # overrides still apply
    with pytest.raises(ConfigError, match="render.quality"):
        load_config(small_config(render={"quality": "best"}))


def layer_means(model: keras.Model, layer: str, images: np.ndarray) -> np.ndarray:
    """(images, channels): each channel's spatial mean at a layer's output."""
    features = keras.Model(model.inputs, model.get_layer(layer).output)
    return np.asarray(features(images.astype(np.float32))).mean(axis=(1, 2))


def photos_at(folder, size: int) -> np.ndarray:
    found = []
    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as photo:
            found.append(np.asarray(photo.convert("RGB").resize((size, size), Image.BILINEAR)))
    return np.stack(found)


def test_small_receptive_fields_take_the_small_field_recipe():
    standard = methods.DEFAULT_LUCID
    small = methods.layer_params(standard, 3, 128)
    assert (small.size, small.jitter, small.scales, small.angles) == (128, 0, (1.0,), ())
    assert not (small.fft or small.decorrelate or small.small_field)
    assert (small.steps, small.learning_rate) == (33, standard.small_field_learning_rate)
    assert small.small_field_step_factor == 1.0  # its own steps, not scaled again
    longer = dataclasses.replace(standard, steps=30)  # a user's steps scale the small field's
    assert methods.layer_params(longer, 3, 128).steps == 45
    assert methods.layer_params(standard, 32, 128) == small  # a quarter of the side
    assert methods.layer_params(standard, 33, 128) is standard
    assert methods.layer_params(standard, None, 128) is standard
    assert methods.layer_params(standard, 3, 299).size == 299  # always the model's size
    fine, draft = methods.QUALITY_PRESETS["fine"][1], methods.QUALITY_PRESETS["draft"][1]
    assert methods.layer_params(fine, 3, 224) is fine  # Lucid's own recipe everywhere
    assert methods.layer_params(draft, 3, 224) is draft
    off = dataclasses.replace(standard, small_field=0.0)
    assert methods.layer_params(off, 3, 128) is off
    assert methods.layer_params(methods.DEFAULT_CLASSIC, 3, 128) is methods.DEFAULT_CLASSIC
    assert "small-field recipe" in methods.recipe_words(standard, 3, 128)
    assert methods.recipe_words(standard, 99, 128) == "lucid, 22 steps at 96 px"


def test_small_field_layers_render_apart_and_are_planned_at_their_size(small_config):
    from atlas.plan import estimate
    from atlas.plan.jobs import Job
    from atlas.render.load import load_model
    from atlas.render.run import _unit_renderers

    config = load_config(small_config()).models[0]
    loaded = load_model(config)
    params = plan.unit_params(config, 0, loaded.input_size)
    renderers = _unit_renderers(loaded, params)
    conv, depthwise, separable = (renderers[n][0] for n in ("conv", "depthwise", "separable"))
    # receptive fields 3, 5 and 9 px on a 32-px input: a quarter is 8
    assert conv is depthwise and conv.params == methods.layer_params(params, 3, 32)
    assert separable.params is params and (conv.picture_size, separable.picture_size) == (32, 96)
    facts = {
        "input_size": [128, 128],
        "layers": [{"name": "a", "receptive_field": 3}, {"name": "b", "receptive_field": 99}],
    }
    jobs = [Job("unit", "m", f"{i:064x}", name, 0) for i, name in enumerate("ab")]
    small, large = estimate.picture_gflops(facts, {"a": 1e9, "b": 1e9}, jobs, params)
    assert small == pytest.approx(3 * 33 * 1.0) and large == pytest.approx(3 * 22 * 0.75**2)


@pytest.mark.slow
def test_default_pictures_beat_every_photo_on_a_small_receptive_field(small_config):
    """The tiny model's first conv (3x3 pixels): at the default settings (its small-field
    recipe: 33 steps at the model's 32 px), each unit's picture excites it more than any of
    eight photos does (before the recipe, unit 3 reached 0.81 of its best photo)."""
    config = small_config(
        images=8, units_per_layer=None, models=[{**model_entry("tiny"), "layers": ["conv"]}]
    )
    data = load_config(config)
    assert data.models[0].render.quality == "auto"
    report = build(config, BuildOptions(progress=False))  # every step: the real defaults
    model = keras.saving.load_model(config.parent / "tiny.keras", compile=False)
    photos = photos_at(config.parent / "images", 32)
    best = layer_means(model, "conv", photos).max(axis=0)
    ratios = []
    for unit in range(4):
        page = report.output / "models" / "tiny" / "layers" / "conv" / "units" / f"{unit}.html"
        src = re.search(r'<img class="large" src="([^"]+)"', page.read_text()).group(1)
        with Image.open(io.BytesIO((page.parent / src).resolve().read_bytes())) as shown:
            picture = np.asarray(shown.convert("RGB").resize((32, 32), Image.BILINEAR))
        own = layer_means(model, "conv", picture[None])[0, unit]
        if best[unit] > 0:
            ratios.append(own / best[unit])
    assert ratios and min(ratios) > 1.0, ratios


@pytest.mark.slow
def test_the_unit_page_says_when_its_picture_loses_to_a_photo(small_config):
    config = small_config(images=4)
    report = build(config, BuildOptions(progress=False, max_steps=1))  # barely optimised
    pages = sorted((report.output / "models" / "tiny" / "layers").glob("*/units/*.html"))
    said = 0
    for page in pages:
        text = page.read_text(encoding="utf-8")
        shown = re.search(r"<dt[^>]*>activation ratio</dt><dd>([^<]*)</dd>", text).group(1)
        line = re.search(r'<p class="tag warn beaten">(.*?)</p>', text, re.S)
        ratio = float(shown) if re.match(r"\d", shown) else None
        assert (line is not None) == (ratio is not None and ratio < 1), (page, shown)
        if line:
            said += 1
            link = re.search(r'<a href="([^"]+)">([^<]+)</a>', line.group(1))
            assert (page.parent / link.group(1)).resolve().is_file()
            photos = {p.stem for p in (config.parent / "images").glob("*.jpg")}
            assert link.group(2) in photos and f"ratio {shown}" in line.group(1)
    assert said  # one step from noise: some picture loses


def liveness_model() -> keras.Model:
    """conv -> BatchNorm -> ReLU, three units: 0 is constant (BN scale 0, shift 0.5), 1 sums
    its 3x3 window less 2 (no gradient from a faint start, whose sums stay within +-0.8;
    fires from a bold one), 2 is an ordinary unit."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(3, 3, padding="same", name="conv")
    norm = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, keras.layers.ReLU(name="relu")(norm(conv(inputs))))
    kernel, bias = conv.get_weights()
    kernel[..., 1], bias[:] = 1.0, [0.0, -2.0, 0.1]
    conv.set_weights([kernel, bias])
    gamma, beta, mean, variance = norm.get_weights()
    gamma[0], beta[0] = 0.0, 0.5
    norm.set_weights([gamma, beta, np.zeros_like(mean), np.ones_like(variance)])
    return model


def render_jobs(renderer, units: list[int], cache) -> list:
    from atlas.plan.jobs import Job
    from atlas.render.pictures import render_pictures

    jobs = [Job("unit", "m", f"{u + 1:064x}", "relu", u, extra={"seed": 40 + u}) for u in units]
    render_pictures(renderer, [(0, job) for job in jobs], cache, lambda n, kind: None)
    return [cache.get(job.key) for job in jobs]


@pytest.mark.parametrize("method", ["lucid", "classic"])
def test_a_constant_unit_is_constant_and_a_closed_one_moves_on_the_retry(method, tmp_path):
    from test_filters import METHODS, scale_pixels

    from atlas.analysis import liveness
    from atlas.cache import open_cache
    from atlas.render.filters import UnitRenderer

    model = liveness_model()
    renderer = UnitRenderer(model, METHODS[method], scale_pixels)
    first = [r for batch in renderer.render([0, 1, 2], [40, 41, 42]) for r in batch]
    assert [r.dead for r in first] == [True, True, False]  # what one try gives
    constant, closed, plain = render_jobs(renderer, [0, 1, 2], open_cache(tmp_path))
    photos = np.random.default_rng(0).uniform(0, 255, (6, 16, 16, 3)).astype(np.float32)
    means = np.asarray(model(scale_pixels(photos))).mean(axis=(1, 2))
    assert not constant.meta["moved"] and constant.meta["start_values"] == [0.5, 0.5]
    assert liveness.unit_state(constant.meta, means[:, 0]) == liveness.CONSTANT
    assert closed.meta["moved"] and closed.meta["try"] == 2 and not closed.meta["dead"]
    assert closed.meta["own_activation"] > 0
    assert liveness.unit_state(closed.meta, means[:, 1]) == liveness.RETRIED
    assert plain.meta["try"] == 1 and "start_values" not in plain.meta
    assert liveness.unit_state(plain.meta, means[:, 2]) == liveness.MOVED


def test_a_unit_that_moves_keeps_its_picture_byte_for_byte(tmp_path):
    """The retry path runs (units 0 and 1 are retried), yet unit 2's entry is what one try
    of the same batch gives: the same bytes, the same numbers."""
    from test_filters import SMALL_LUCID, scale_pixels

    from atlas.cache import open_cache
    from atlas.data.images import encode_webp
    from atlas.plan.jobs import ENCODING
    from atlas.render.filters import UnitRenderer

    renderer = UnitRenderer(liveness_model(), SMALL_LUCID, scale_pixels)
    once = [r for batch in renderer.render([0, 1, 2], [40, 41, 42]) for r in batch][2]
    entry = render_jobs(renderer, [0, 1, 2], open_cache(tmp_path))[2]
    expected = encode_webp(once.picture, quality=ENCODING["unit"]["quality"])
    assert entry.read("unit.webp") == expected
    assert entry.meta["objective"] == round(once.objective, 6) and entry.meta["moved"]


@pytest.mark.parametrize(
    ("meta", "photos", "state"),
    [
        ({"moved": True, "try": 1}, [], "moved"),
        ({"moved": True, "try": 2, "start_values": [0.0, 0.0]}, [0.0, 1.0], "retried"),
        ({"moved": False, "start_values": [0.5, 0.5]}, [0.5, 0.5000001], "constant"),
        ({"moved": False, "start_values": [0.0, 0.0]}, [0.0, 0.3], "stuck"),  # photos fire it
        ({"moved": False, "start_values": [0.5, 0.7]}, [], "stuck"),  # the starts differ
        ({"dead": True, "objective": 0.2}, [], "stuck"),  # one value proves nothing
        ({"dead": False}, [], "moved"),  # an entry from before the retry
        # moved, yet its picture and every photo give one mean (weights of ~1e-13; photo
        # means are stored to 5 significant digits): constant
        ({"moved": True, "try": 1, "own_activation": 0.253763}, [0.25376, 0.25376], "constant"),
        ({"moved": True, "try": 1, "own_activation": 5.24351}, [5.2435, 5.2437], "constant"),
        ({"moved": True, "try": 1, "own_activation": 0.3}, [0.25376, 0.25376], "moved"),
        ({"moved": True, "try": 1, "own_activation": 0.25}, [0.25], "moved"),  # one photo
        ({"moved": True, "try": 1, "own_activation": 0.0}, [0.0, 0.0], "moved"),  # closed
    ],
)
def test_unit_states(meta, photos, state):
    from atlas.analysis import liveness

    assert liveness.unit_state(meta, photos) == state
    words = liveness.state_words(state, len(photos))
    assert (words == "") == (state == "moved")
    assert ("on all" in words) == (state == "constant" and bool(photos))
