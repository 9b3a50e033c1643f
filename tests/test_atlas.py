"""Activation atlases: the layout, the cells' objective, the labels, and whole builds on
models and photos atlas was not designed around.

Labels are checked against plain Keras written here (each class logit's gradient taken
one class at a time, with a tape, on the layer's own output), not against atlas' own
Jacobian-vector product.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import MOBILENET_WEIGHTS, PETS, REPO
from own_models import SIZE, save
from PIL import Image
from test_own_photos import class_folders

from atlas.analysis import atlas as analysis
from atlas.config.atlas import AtlasSettings
from atlas.errors import ConfigError
from atlas.plan.atlas import atlas_layers, sample_photos

# -- the NumPy half -------------------------------------------------------------------------


def clustered(n: int = 300, channels: int = 12, seed: int = 0) -> np.ndarray:
    """Non-negative vectors around four directions (ReLU-like activations)."""
    rng = np.random.default_rng(seed)
    centres = rng.random((4, channels)) ** 3
    return np.abs(centres[rng.integers(0, 4, n)] + 0.05 * rng.standard_normal((n, channels)))


def test_the_layout_is_deterministic_for_a_seed_and_normalised():
    vectors = clustered()
    first = analysis.layout_2d(vectors, "tsne", seed=3)
    again = analysis.layout_2d(vectors, "tsne", seed=3)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (300, 2)
    assert first.min() == 0.0 and first.max() == 1.0


def test_cells_keep_at_least_min_count_vectors_and_average_them():
    vectors = clustered()
    layout = analysis.layout_2d(vectors, "tsne", seed=0)
    cells = analysis.bin_cells(layout, vectors, grid=6, min_count=5)
    assert len(cells) > 0 and (cells.counts >= 5).all()
    members = np.concatenate(cells.members)
    assert len(members) == len(set(members.tolist())) == cells.counts.sum()
    for index in range(len(cells)):
        np.testing.assert_allclose(
            cells.directions[index], vectors[cells.members[index]].mean(axis=0), rtol=1e-5
        )
        row, col = cells.rows[index], cells.cols[index]
        inside = layout[cells.members[index]]
        assert ((inside[:, 0] * 6).astype(int).clip(0, 5) == col).all()
        assert ((inside[:, 1] * 6).astype(int).clip(0, 5) == row).all()


def test_whitening_survives_a_dead_channel():
    vectors = clustered()
    vectors[:, 3] = 0.0  # a channel that never fires: a singular correlation matrix
    inverse = analysis.whitening(vectors)
    assert np.isfinite(inverse).all()
    white = analysis.whitened(vectors[:5], inverse)
    np.testing.assert_allclose(np.linalg.norm(white, axis=1), 1.0, rtol=1e-5)


def test_too_few_vectors_is_a_layout_error():
    with pytest.raises(analysis.LayoutError, match="at least 10"):
        analysis.layout_2d(clustered(5), "tsne", 0)


def test_labels_by_attribution_and_by_photo_class():
    values = [np.array([[1.0, 3.0, -1.0], [1.0, 1.0, 0.0]]), np.array([[-1.0, -2.0, 0.5]])]
    (first, second) = analysis.attribution_labels(values)
    assert first[0] == 1 and first[1] == pytest.approx(2 / 3)
    assert second[0] == 2 and second[1] == pytest.approx(1.0)
    found = analysis.photo_labels([np.array([0, 1, 2]), np.array([3])], ["cat", "dog", "dog", None])
    assert found[0][:2] == ("dog", pytest.approx(2 / 3, abs=1e-4))
    assert found[1] == (None, 0.0, [])


def test_patch_boxes_are_the_receptive_field_around_the_position():
    # a 16 x 16 map of a 128-px input: position (0, 15) is the top-right corner's stride
    assert analysis.patch_box(0, 15, (16, 16), 8, (128, 128)) == [0.9375, 0.0, 1.0, 0.0625]
    box = analysis.patch_box(8, 8, (16, 16), 64, (128, 128))
    assert box == pytest.approx([0.28125, 0.28125, 0.78125, 0.78125], abs=1e-4)


# -- planning -------------------------------------------------------------------------------


def layer(name: str, side: int, kind: str = "Conv2D") -> dict:
    return {"name": name, "type": kind, "output_shape": [None, side, side, 8]}


def test_auto_layers_spread_over_the_depth_among_roomy_non_depthwise_layers():
    layers = [
        layer("a", 64),
        layer("dw", 64, "DepthwiseConv2D"),
        layer("b", 32),
        layer("c", 16),
        layer("d", 8),
        layer("e", 4),  # too small for samples away from the border
    ]
    picked = [found["name"] for found in atlas_layers(layers, AtlasSettings())]
    assert picked == ["b", "c", "d"]
    assert [f["name"] for f in atlas_layers(layers, AtlasSettings(count=1))] == ["d"]
    named = AtlasSettings(layers=("e", "dw"), count=2)
    assert [f["name"] for f in atlas_layers(layers, named)] == ["dw", "e"]
    assert atlas_layers(layers, AtlasSettings(layers=(), count=0)) == []
    only_depthwise = [layer("dw1", 16, "DepthwiseConv2D"), layer("dw2", 8, "DepthwiseConv2D")]
    assert [f["name"] for f in atlas_layers(only_depthwise, AtlasSettings())] == ["dw1", "dw2"]


def test_many_photos_get_fewer_positions_each():
    photos = list(range(111))
    chosen, per_photo = sample_photos(photos, 4000)
    assert (len(chosen), per_photo) == (111, 32)
    chosen, per_photo = sample_photos(list(range(7349)), 4000)
    assert per_photo == 4 and len(chosen) == 1000 and len(set(chosen)) == 1000


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"grid": 1}, "atlas.grid: must be between 2 and 100"),
        ({"layout": "pca"}, "atlas.layout: expected one of: tsne, umap"),
        ({"layers": "some"}, "atlas.layers: expected auto, none, a number"),
        ({"samples": 10}, "atlas.samples: must be between 50"),
        ({"colour": 1}, "atlas.colour: unknown key"),
    ],
)
def test_bad_atlas_settings_name_the_key(small_config, block, message):
    from atlas.config.load import load_config

    with pytest.raises(ConfigError) as caught:
        load_config(small_config(atlas=block))
    key, text = message.split(": ", 1)
    assert key in str(caught.value) and text in str(caught.value)


def test_a_model_block_overrides_the_top_level(small_config):
    from atlas.config.load import load_config

    path = small_config(atlas={"grid": 10, "layers": 2})
    data = yaml.safe_load(path.read_text())
    data["models"][0]["atlas"] = {"layers": ["conv"]}
    path.write_text(yaml.safe_dump(data))
    settings = load_config(path).models[0].atlas
    assert (settings.grid, settings.layers, settings.samples) == (10, ("conv",), 4000)


# -- the cell objective ---------------------------------------------------------------------


def photos_at(size: int, count: int) -> np.ndarray:
    files = sorted(PETS.glob("*.jpg"))[:count]
    return np.stack(
        [np.asarray(Image.open(f).convert("RGB").resize((size, size)), np.float32) for f in files]
    )


@pytest.mark.slow
def test_a_cell_picture_points_its_activation_along_the_cells_direction():
    """Rendered for a cell, the whitened direction objective raises the cosine between
    the centre activation and the cell's direction above that of random starts (the
    embedded MobileNet, a small real model; cosines from keras.applications' own model)."""
    import keras

    from atlas.config.load import load_config
    from atlas.plan.jobs import unit_params
    from atlas.render.atlas import _cell_renderer
    from atlas.render.load import load_model

    config = load_config(REPO / "site_config.yaml").models[0]
    reference = keras.applications.MobileNet(
        alpha=0.25, input_shape=(128, 128, 3), weights=str(MOBILENET_WEIGHTS)
    )
    tensor = reference.get_layer("conv_pw_7_relu").output  # atlas reads its units there
    features = keras.Model(reference.inputs, tensor)

    def centre(pixels: np.ndarray) -> np.ndarray:
        pixels = keras.ops.image.resize(pixels, (128, 128), antialias=True)
        maps = np.asarray(features(keras.applications.mobilenet.preprocess_input(pixels)))
        return maps[:, maps.shape[1] // 2, maps.shape[2] // 2]

    maps = np.asarray(features(keras.applications.mobilenet.preprocess_input(photos_at(128, 24))))
    vectors = maps[:, 1:-1, 1:-1].reshape(-1, maps.shape[-1])
    cells = analysis.bin_cells(analysis.layout_2d(vectors, "tsne", 0), vectors, 6, 10)
    assert len(cells) >= 8
    white = analysis.whitened(cells.directions, analysis.whitening(vectors))
    # ReLU activations all lie near the mean's direction (raw cosines of random starts are
    # ~0.89): measure what sets a cell apart, the cosine of both less the layer's mean.
    mean = vectors.mean(axis=0)
    directions = cells.directions - mean
    renderer = _cell_renderer(load_model(config), "conv_pw_7", unit_params(config, 0, (128, 128)))
    seeds = list(range(len(cells)))

    def cosines(steps: int | None) -> np.ndarray:
        pictures = [
            r.picture
            for batch in renderer.render(
                [0] * len(seeds), seeds, directions=list(white), max_steps=steps
            )
            for r in batch
        ]
        found = centre(np.stack(pictures).astype(np.float32)) - mean
        norms = np.linalg.norm(found, axis=1) * np.linalg.norm(directions, axis=1)
        return (found * directions).sum(axis=1) / np.maximum(norms, 1e-9)

    start, rendered = cosines(0), cosines(None)
    assert np.median(rendered) > np.median(start) + 0.2  # measured: -0.03 -> 0.41
    assert (rendered > start).mean() >= 0.7  # measured: 0.77 of 26 cells


def centred_cosines(found: np.ndarray, directions: np.ndarray, mean: np.ndarray) -> np.ndarray:
    found, directions = found - mean, directions - mean
    norms = np.linalg.norm(found, axis=1) * np.linalg.norm(directions, axis=1)
    return (found * directions).sum(axis=1) / np.maximum(norms, 1e-9)


@pytest.mark.slow
def test_on_a_tiny_model_a_cell_picture_beats_random_starts(tmp_path):
    """The same on a tiny nested classifier (conv -> BatchNorm -> ReLU backbone), read
    at its last convolution: cosines measured with the backbone Keras built."""
    import keras
    from own_models import ops_nested

    from atlas.config.load import load_config
    from atlas.plan.jobs import unit_params
    from atlas.render.atlas import _cell_renderer
    from atlas.render.load import load_model

    model = ops_nested(outputs=3, seed=5)
    config = load_config(write_folders_project(tmp_path, model, "dataset")).models[0]
    backbone = model.get_layer("backbone")
    features = keras.Model(backbone.input, backbone.get_layer("pw").output)

    def centre(pixels: np.ndarray) -> np.ndarray:
        pixels = keras.ops.image.resize(pixels, (SIZE, SIZE), antialias=True)
        maps = np.asarray(features(np.asarray(pixels) / 127.5 - 1.0))  # the model's own ops
        return maps[:, maps.shape[1] // 2, maps.shape[2] // 2]

    maps = np.asarray(features(photos_at(SIZE, 40) / 127.5 - 1.0))
    vectors = maps[:, 1:-1, 1:-1].reshape(-1, maps.shape[-1])
    cells = analysis.bin_cells(analysis.layout_2d(vectors, "tsne", 0), vectors, 5, 8)
    assert len(cells) >= 10
    white = analysis.whitened(cells.directions, analysis.whitening(vectors))
    renderer = _cell_renderer(load_model(config), "backbone/pw", unit_params(config, 0, (32, 32)))
    seeds = list(range(len(cells)))

    def cosines(steps: int | None) -> np.ndarray:
        pictures = [
            r.picture
            for batch in renderer.render(
                [0] * len(seeds), seeds, directions=list(white), max_steps=steps
            )
            for r in batch
        ]
        found = centre(np.stack(pictures).astype(np.float32))
        return centred_cosines(found, cells.directions, vectors.mean(axis=0))

    start, rendered = cosines(0), cosines(None)
    assert np.median(rendered) > np.median(start) + 0.3  # measured: -0.06 -> 0.82
    assert (rendered > start).mean() >= 0.7  # measured: 0.84 of 25 cells


# -- whole builds ----------------------------------------------------------------------------


def write_folders_project(root: Path, model, classes: str | None, **atlas) -> Path:
    class_folders(root / "photos", classes=("cat", "dog", "fox"), per_class=4)
    save(model, root, "mine")
    entry = {"id": "mine", "file": "mine.keras", "layers": ["*pw"]}
    if classes:
        entry["classes"] = classes
    config = {
        "site": {"title": "own", "output": "_site"},
        "cache": ".atlas-cache",
        "dataset": {"images": "photos", "detailed": "all"},
        "render": {"units_per_layer": 2, "faithfulness_photos": 0, "unit_views": {"units": 0}},
        "atlas": {"grid": 6, "min_count": 4, **atlas},
        "models": [entry],
    }
    path = root / "site_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def built_atlas(config: Path) -> tuple[dict, object, object]:
    """Build; return the atlas' meta, the context's model plan and the cache."""
    from atlas.build import BuildOptions, build
    from atlas.cache import open_cache
    from atlas.config.load import load_config
    from atlas.plan.context import StageTimer
    from atlas.prepare import prepare

    build(config, BuildOptions(progress=False, max_steps=4))
    loaded = load_config(config)
    cache = open_cache(loaded.cache)
    context, _ = prepare(loaded, cache, BuildOptions(progress=False), StageTimer())
    model_plan = context.models[0]
    (plan,) = model_plan.atlas_plans.values()
    entry = cache.get(plan.atlas.key)
    assert entry is not None, "no atlas was built"
    return entry.meta, plan, cache


def page_data(folder: Path) -> dict:
    """The cells embedded in the one atlas page of a folder."""
    import json
    import re

    (page,) = folder.glob("*.html")
    found = re.search(
        r'<script type="application/json" id="atlas-data">(.*?)</script>', page.read_text()
    )
    assert found, f"no cell data in {page}"
    return json.loads(found[1])


def keras_attributions(model, photos: list[Path], where: np.ndarray) -> np.ndarray:
    """Plain Keras: for each (photo, y, x), sum over channels of the pw activation times
    the gradient of each class logit (the model's Dense before its softmax), one class at
    a time."""
    import keras
    import tensorflow as tf

    backbone = model.get_layer("backbone")
    dense = model.get_layer("classes")
    from atlas.data.images import load_array  # decoding is not what is tested here

    pixels = np.stack([load_array(p, (SIZE, SIZE)).astype(np.float32) for p in photos])
    rows = []
    for photo_index, y, x in where:
        image = tf.constant(pixels[photo_index][None] / 127.5 - 1.0)
        with tf.GradientTape(persistent=True) as tape:
            inner = keras.Model(backbone.inputs, backbone.get_layer("pw").output)(image)
            tape.watch(inner)
            pooled = tf.reduce_mean(inner, axis=[1, 2])
            logits = tf.matmul(pooled, dense.kernel) + dense.bias
            per_class = [logits[0, c] for c in range(logits.shape[-1])]
        activation = inner[0, y, x].numpy()
        rows.append(
            [float(activation @ tape.gradient(z, inner)[0, y, x].numpy()) for z in per_class]
        )
    return np.asarray(rows)


@pytest.mark.slow
def test_an_own_classifier_on_class_folders_labels_cells_with_the_datasets_classes(tmp_path):
    from own_models import ops_nested

    from atlas.plan.atlas import read_array

    model = ops_nested(outputs=3, seed=5)
    meta, plan, cache = built_atlas(write_folders_project(tmp_path, model, "dataset"))
    assert meta["label_kind"] == "class" and meta["cells"]
    page = page_data(tmp_path / "_site" / "models" / "mine" / "atlas")
    assert [(c["r"], c["c"]) for c in page["cells"]] == [
        (c["row"], c["col"]) for c in meta["cells"]
    ]
    # independent attributions for the vectors atlas chose per cell
    samples = cache.get(plan.samples.key)
    layout = cache.get(plan.layout.key)
    where = read_array(samples, "where.npy")
    names = samples.meta["photos"]
    files = [tmp_path / "photos" / f"{name}.jpg" for name in names]
    classes = ["cat", "dog", "fox"]  # the model's outputs: the sorted class folders
    for cell, chosen in zip(page["cells"], layout.meta["label_members"], strict=True):
        values = keras_attributions(model, files, where[chosen]).mean(axis=0)
        assert page["labels"][cell["l"]] == classes[int(np.argmax(values))]
        positive = np.maximum(values, 0)
        share = positive.max() / positive.sum() if positive.sum() > 0 else 0.0
        assert cell["s"] == pytest.approx(share, abs=2e-4)
    patch_images = {p["image"] for cell in meta["cells"] for p in cell["patches"]}
    assert patch_images <= set(names)
    assert {label for cell in meta["cells"] for label, _ in cell["top"]} <= {0, 1, 2}


@pytest.mark.slow
def test_a_feature_extractor_labels_cells_with_its_photos_classes(tmp_path):
    from own_models import feature_extractor

    meta, plan, _ = built_atlas(write_folders_project(tmp_path, feature_extractor(), None))
    assert meta["label_kind"] == "dataset"
    labels = {cell["label"] for cell in meta["cells"]}
    assert labels and labels <= {"cat", "dog", "fox"}
    for cell in meta["cells"]:
        assert 0 < cell["share"] <= 1


@pytest.mark.slow
def test_a_rebuild_with_atlases_renders_nothing_and_skips_tensorflow(tmp_path):
    """Every atlas key but the cells' is planned without the model, and the cells' from
    the cached layouts: a second build of the same inputs is a no-op without TensorFlow."""
    from own_models import feature_extractor
    from test_build import build_in_subprocess

    config = write_folders_project(tmp_path, feature_extractor(), None)
    first = build_in_subprocess(config, max_steps=4)
    assert first["rendered"].get("atlas") == 1 and first["rendered"].get("atlas_cell", 0) > 0
    again = build_in_subprocess(config, max_steps=4)
    assert {k: v for k, v in again["rendered"].items() if v} == {}
    assert (
        again["reused"]["atlas"] == 1
        and again["reused"]["atlas_cell"] == first["rendered"]["atlas_cell"]
    )
    assert again["tensorflow"] is False and again["keras"] is False


def test_an_atlas_pattern_that_matches_no_layer_is_a_warning_naming_it(small_config, caplog):
    from atlas.cache import open_cache
    from atlas.config.load import load_config
    from atlas.plan.context import StageTimer
    from atlas.prepare import BuildOptions, prepare

    config = load_config(small_config(atlas={"layers": ["conv", "no_such_layer"]}))
    with caplog.at_level("WARNING"):
        context, _ = prepare(config, open_cache(config.cache), BuildOptions(), StageTimer())
    assert list(context.models[0].atlas_plans) == ["conv"]
    (line,) = [r.getMessage() for r in caplog.records if "no_such_layer" in r.getMessage()]
    assert "models[0].atlas.layers[1]" in line and "matches none of the layers of tiny" in line
