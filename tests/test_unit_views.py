"""Unit pages like Distill's appendix: negative and diversity pictures, most and least
exciting photos, class selectivity and ``render.unit_views`` (atlas.analysis.unit_views)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from sitecheck import check_site

from atlas.analysis.unit_views import most_and_least, nearest
from atlas.build import BuildOptions, build
from atlas.config.views import costly_units
from atlas.render.objectives import group_batches

REPO = Path(__file__).resolve().parents[1]
ENV = {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
OPTIONS = BuildOptions(progress=False, max_steps=4)


# -- the renderer ---------------------------------------------------------------------------
def _tiny(size: int = 32):
    """Conv -> conv, tanh (a unit's mean can go down as well as up), seeded weights."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="tanh", name="first")(inputs)
    x = keras.layers.Conv2D(5, 3, strides=2, padding="same", activation="tanh", name="second")(x)
    return keras.Model(inputs, x)


def _scale(images):
    return images / 127.5 - 1.0


def _pictures(renderer, units, seeds, **kwargs) -> list:
    return [r for batch in renderer.render(units, seeds, **kwargs) for r in batch]


def _published(picture: np.ndarray) -> np.ndarray:
    """A picture as the site publishes it: Pillow's WebP at quality 70 (method 4), decoded."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "WEBP", quality=70, method=4)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _means(model, pictures: np.ndarray) -> np.ndarray:
    """Plain Keras: every channel's spatial mean on the pictures (batch, channels)."""
    return np.asarray(model(_scale(pictures.astype(np.float32)))).mean(axis=(1, 2))


@pytest.mark.parametrize("method", ["lucid", "classic"])
def test_the_negative_picture_drives_the_unit_down(method):
    from atlas.render.filters import ClassicParams, LucidParams, UnitRenderer

    model = _tiny()
    params = (
        LucidParams(size=32, steps=16, learning_rate=0.1, jitter=2)
        if method == "lucid"
        else ClassicParams(
            start_size=16, upscale_steps=1, upscale_factor=2.0, steps_per_size=6, step_size=3.0
        )
    )
    renderer = UnitRenderer(model, params, _scale)
    units, seeds = [1, 3], [21, 22]
    start = _pictures(renderer, units, seeds, signs=[-1, -1], max_steps=0)
    negative = _pictures(renderer, units, seeds, signs=[-1, -1])
    positive = _pictures(renderer, units, [5, 6])
    on = {
        name: _means(model, np.stack([r.picture for r in found]))
        for name, found in (("start", start), ("negative", negative), ("positive", positive))
    }
    for i, unit in enumerate(units):
        assert on["negative"][i, unit] < on["start"][i, unit] - 1e-3
        assert on["negative"][i, unit] < on["positive"][i, unit] - 1e-3
        # the renderer's own measure agrees with plain Keras on the picture as published
        shown = _published(negative[i].picture)
        assert negative[i].own_activation == pytest.approx(
            _means(model, shown[None])[0, unit], abs=1e-3
        )


def _gram_cosine(activations: np.ndarray) -> float:
    """Mean pairwise cosine of the pictures' Gram matrices (numpy, as Lucid defines them)."""
    flat = activations.reshape(len(activations), -1, activations.shape[-1])
    grams = np.einsum("bpc,bpd->bcd", flat, flat).reshape(len(activations), -1)
    grams /= np.linalg.norm(grams, axis=1, keepdims=True) + 1e-12
    cosines = grams @ grams.T
    count = len(activations)
    return float((cosines.sum() - np.trace(cosines)) / (count * (count - 1)))


def test_diversity_makes_the_pictures_less_alike_and_each_still_rises():
    from atlas.render.filters import LucidParams, UnitRenderer

    model = _tiny()
    params = LucidParams(size=32, steps=24, learning_rate=0.1, jitter=2)
    seeds, unit = [31, 32, 33, 34], 2
    found = {}
    for weight in (0.0, 20.0):
        renderer = UnitRenderer(model, params, _scale, diversity_weight=weight)
        found[weight] = _pictures(renderer, [unit] * 4, seeds, groups=[0] * 4)
    start = _pictures(UnitRenderer(model, params, _scale), [unit] * 4, seeds, max_steps=0)
    activations = {
        w: np.asarray(model(_scale(np.stack([r.picture for r in pictures]).astype(np.float32))))
        for w, pictures in found.items()
    }
    assert _gram_cosine(activations[20.0]) < _gram_cosine(activations[0.0]) - 0.01
    start_means = _means(model, np.stack([r.picture for r in start]))[:, unit]
    diverse_means = activations[20.0].mean(axis=(1, 2))[:, unit]
    assert (diverse_means > start_means + 1e-3).all(), (diverse_means, start_means)


def test_a_diversity_group_is_never_split_and_padding_joins_no_group():
    groups = [-1, 0, 0, 0, 0, -1, 1, 1, 1, 1]
    layers = [0] * 10
    batches = list(group_batches(groups, layers, 4))
    assert batches == [(0, 1), (1, 5), (5, 6), (6, 10)]
    assert list(group_batches(groups, layers, 7)) == [(0, 6), (6, 10)]
    with pytest.raises(ValueError, match="more than a batch"):
        list(group_batches(groups, layers, 3))
    with pytest.raises(ValueError, match="not contiguous"):
        list(group_batches([0, -1, 0], [0, 0, 0], 4))
    from atlas.render.objectives import Batch

    padded = Batch([1, 1], [0, 0], [5, 6], [1.0, 1.0], [0, 0]).padded(4)
    assert padded.groups == [0, 0, -1, -1] and padded.units == [1, 1, 1, 1]


def test_costly_units_are_spread_evenly_and_nearest_links_to_one():
    assert costly_units(32, 4) == [0, 8, 16, 24]
    assert costly_units(3, 4) == [0, 1, 2]
    assert costly_units(10, None) == list(range(10)) and costly_units(10, 0) == []
    assert nearest(13, [0, 8, 16, 24]) == 16 and nearest(12, [0, 8, 16, 24]) == 8
    assert nearest(3, []) is None


def test_most_and_least_are_disjoint_and_ordered():
    means = {"a": [3.0], "b": [1.0], "c": [2.0], "d": [0.5], "e": [2.5]}
    assert most_and_least(means, 1, most=2, least=2) == {0: ["a", "e", "d", "b"]}
    assert most_and_least(means, 1, most=4, least=4) == {0: ["a", "e", "c", "b", "d"]}


# -- config ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"units": -1}, "render.unit_views.units"),
        ({"units": "some"}, "render.unit_views.units"),
        ({"views": ["negative", "negatives"]}, "unknown view 'negatives'"),
        ({"views": "negative"}, "render.unit_views.views"),
        ({"colour": 1}, "render.unit_views.colour"),
    ],
)
def test_bad_unit_views_exit_2_with_one_line(small_config, value, fragment):
    config = small_config(render={"unit_views": value})
    done = subprocess.run(
        [sys.executable, "-m", "atlas", "build", "-c", str(config)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in done.stderr, lines
    assert not (config.parent / "_site").exists()


def test_a_model_overrides_unit_views(small_config):
    from atlas.config.load import load_config

    config = small_config(render={"unit_views": {"units": 2}})
    data = yaml.safe_load(config.read_text())
    data["models"][0]["render"] = {"unit_views": {"views": ["dataset"]}}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    views = load_config(config).models[0].render.unit_views
    assert views.views == ("dataset",) and views.units == 2


# -- a tiny build ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory, project_factory):
    """A tiny build with every view, costly views for 1 unit per layer, 9 photos."""
    root = tmp_path_factory.mktemp("views")
    config = project_factory(root, images=9, render={"unit_views": {"units": 1}})
    report = build(config, OPTIONS)
    return config, report


def _unit_page(report, layer: str, unit: int) -> str:
    return (report.output / f"models/tiny/layers/{layer}/units/{unit}.html").read_text()


def _section(html: str, start: str, end: str = "<h2") -> str:
    return html.split(start, 1)[1].split(end, 1)[0]


def _photo_means(config: Path, layer: str) -> dict[str, np.ndarray]:
    """Plain Keras: each photo's per-channel spatial mean of the layer (the tiny model's
    conv layers carry their activation: read at their output)."""
    import keras

    from atlas.data.batches import iter_batches
    from atlas.data.scan import scan_dataset

    model = keras.saving.load_model(config.parent / "tiny.keras", safe_mode=True)
    sub = keras.Model(model.input, model.get_layer(layer).output)
    scan = scan_dataset(config.parent / "images", None)
    means = {}
    for images, batch in iter_batches(scan.images, (32, 32)):
        values = np.asarray(sub(batch.astype(np.float32))).mean(axis=(1, 2))
        means.update({image.name: row for image, row in zip(images, values, strict=True)})
    return means


def test_the_unit_page_shows_every_view_and_its_links_resolve(built):
    config, report = built
    assert report.rendered["negative"] == 3 and report.rendered["diversity"] == 3
    html = _unit_page(report, "conv", 0)
    views = _section(html, 'id="views"')
    assert views.count("Diversity picture") == 4 and "drives unit 0 of conv down" in views
    assert _section(html, "excite it most").count("<figure>") == 4
    assert _section(html, "excite it least").count("<figure>") == 4
    assert _section(html, "Breeds it prefers", "</table>").count("<tr><td>") == 5
    other = _unit_page(report, "conv", 1)
    assert 'id="views"' in other and '<a href="0.html">unit 0</a> has them' in other
    assert "Diversity picture" not in other
    assert check_site(report.output) == []


def test_most_and_least_exciting_photos_match_plain_keras(built):
    config, report = built
    means = _photo_means(config, "conv")
    names = sorted(means)
    for unit in (0, 1):
        html = _unit_page(report, "conv", unit)
        shown = {
            part: re.findall(r"<figcaption>(\S+) · mean", _section(html, title))
            for part, title in (("most", "excite it most"), ("least", "excite it least"))
        }
        ranked = sorted(names, key=lambda n: (-means[n][unit], n))
        assert shown["most"] == ranked[:4]
        assert shown["least"] == sorted(ranked[4:], key=lambda n: (means[n][unit], n))[:4]


def test_preferred_breeds_match_numpy(built):
    config, report = built
    means = _photo_means(config, "separable")
    by_breed: dict[str, list] = {}
    for name, values in means.items():
        by_breed.setdefault(name.rsplit("_", 1)[0].lower(), []).append(values)
    for unit in (0, 1):
        expected = sorted(by_breed, key=lambda b: (-np.mean(by_breed[b], axis=0)[unit], b))[:5]
        table = _section(_unit_page(report, "separable", unit), "Breeds it prefers", "</table>")
        rows = re.findall(r"<tr><td>([^<]+)</td><td>([-\d.]+)</td>", table)
        assert [title.lower().replace(" ", "_") for title, _ in rows] == expected
        for (_, shown), breed in zip(rows, expected, strict=True):
            assert float(shown) == pytest.approx(np.mean(by_breed[breed], axis=0)[unit], abs=2e-3)


def test_the_search_index_lists_units_by_their_preferred_breeds(built):
    _, report = built
    text = (report.output / "search-index.js").read_text()
    index = json.loads(text.split("=", 1)[1].rstrip(";\n"))
    html = _unit_page(report, "separable", 0)
    top = re.findall(r"<tr><td>([^<]+)</td>", _section(html, "Breeds it prefers", "</table>"))
    [units] = [layer[3] for layer in index["layers"] if layer[1] == "separable"]
    assert [index["labels"][b] for b in units[0][1:]] == top[:3]


def test_views_off_render_no_files_and_no_sections(tmp_path, project_factory):
    config = project_factory(
        tmp_path / "off", images=4, render={"unit_views": {"views": [], "units": "all"}}
    )
    report = build(config, OPTIONS)
    assert not {"negative", "diversity", "exemplars"} & set(report.rendered)
    cache = config.parent / ".atlas-cache"
    assert not [p for p in cache.rglob("*.webp") if p.name.startswith(("negative", "diversity"))]
    html = _unit_page(report, "conv", 0)
    for absent in ('id="views"', "excite it most", "excite it least", "Breeds it prefers"):
        assert absent not in html
    assert check_site(report.output) == []


@pytest.mark.slow
def test_shards_render_the_views_and_the_assembling_build_renders_no_picture(
    tmp_path, project_factory
):
    config = project_factory(tmp_path / "s", images=4, render={"unit_views": {"units": 1}})
    rendered: dict[str, int] = {}
    for index in (1, 2):
        shard = build(config, BuildOptions(progress=False, max_steps=2, shard=(index, 2)))
        for kind, count in shard.rendered.items():
            rendered[kind] = rendered.get(kind, 0) + count
    assert rendered["negative"] == 3 and rendered["diversity"] == 3 and rendered["unit"] == 6
    assembled = build(config, BuildOptions(progress=False, max_steps=2))
    assert set(assembled.rendered) <= {"exemplars", "grid"}
    assert "Diversity picture" in _unit_page(assembled, "conv", 0)


def test_plan_counts_the_view_jobs(small_config):
    config = small_config(render={"unit_views": {"units": 1}})
    done = subprocess.run(
        [sys.executable, "-m", "atlas", "plan", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = {(row["model"], row["kind"]): row for row in json.loads(done.stdout)["rows"]}
    assert rows[("tiny", "negative")]["jobs"] == 3 and rows[("tiny", "diversity")]["jobs"] == 3
    assert rows[("tiny", "diversity")]["gflop"] > 3 * rows[("tiny", "negative")]["gflop"]
