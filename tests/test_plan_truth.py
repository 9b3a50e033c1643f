"""``atlas plan`` before a long build (issue 26): every stage counted, nominal rates scaled to
this machine by a probe, deletion/insertion on a spread of layers, a warning for a long stage.

The tiny ``.keras`` model (3 conv layers) on four photos.
"""

from __future__ import annotations

import json
import logging
import math
import re

import keras
import pytest

from atlas import prepare
from atlas.build import BuildOptions, build
from atlas.cache import open_cache
from atlas.config.load import load_config
from atlas.errors import ConfigError
from atlas.plan import estimate, select

OPTIONS = BuildOptions(progress=False, max_steps=2)
STEPS = 16  # the deletion/insertion curves' steps (README, "CAM scores")


# -- pure parts -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("layers", "limit", "expected"),
    [
        (94, 12, [0, 8, 17, 25, 34, 42, 51, 59, 68, 76, 85, 93]),
        (5, 12, [0, 1, 2, 3, 4]),
        (5, None, [0, 1, 2, 3, 4]),
        (10, 1, [9]),
        (3, 2, [0, 2]),
    ],
)
def test_faithfulness_layers_spread_over_the_depth_with_the_deepest(layers, limit, expected):
    chosen = select.faithfulness_layers(layers, limit)
    assert chosen == expected
    assert chosen[-1] == layers - 1 and len(set(chosen)) == len(chosen)


def test_nominal_rates_scale_with_this_machines_probe():
    plain = estimate.Throughput({})
    base, measured = plain.seconds("unit", 10.0, 5)
    assert not measured
    twice_as_fast = plain.calibrated({"gflops": 2 * estimate.REFERENCE_PROBE_GFLOPS})
    assert twice_as_fast.seconds("unit", 10.0, 5)[0] == pytest.approx(base / 2)
    for broken in (None, {}, {"gflops": 0}, {"gflops": "fast"}):
        assert plain.calibrated(broken).scale == 1.0
    twice_as_fast.record("unit", seconds=8.0, gflop=4.0, jobs=4)  # a build's own record wins
    assert twice_as_fast.seconds("unit", 10.0, 5) == (20.0, True)
    assert twice_as_fast.updated(estimate.Throughput({})).scale == twice_as_fast.scale
    # deletion/insertion run in the scores tasks: their recorded rate per GFLOP
    twice_as_fast.record("scores", seconds=3.0, gflop=6.0, jobs=2)
    assert twice_as_fast.seconds("faithfulness", 4.0, 1) == (2.0, True)


@pytest.mark.parametrize(
    ("scores", "problem"),
    [
        ({"layers": 0}, "render.scores.layers"),
        ({"layers": "most"}, "render.scores.layers"),
        ({"layer": 3}, "render.scores.layer"),
    ],
)
def test_bad_score_layers_are_config_errors(small_config, scores, problem):
    with pytest.raises(ConfigError) as caught:
        load_config(small_config(render={"scores": scores}))
    assert problem in str(caught.value) and caught.value.exit_code == 2


def test_score_layers_and_warn_after_are_read(small_config):
    config = load_config(small_config(render={"scores": {"layers": "all"}, "warn_after": 2}))
    assert config.models[0].render.score_layers is None
    assert config.models[0].render.warn_after == 2.0
    assert load_config(small_config()).models[0].render.score_layers == 12
    with pytest.raises(ConfigError, match="warn_after"):
        load_config(small_config(render={"warn_after": -1}))


# -- the plan ------------------------------------------------------------------------------
def forward_flops(path) -> float:
    """Forward FLOPs of one image through a ``.keras`` model, counted from Keras' own
    layers: 2 x weights x output positions with weights, else output elements."""
    model = keras.saving.load_model(path, compile=False)
    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):  # the photo itself: no compute
            continue
        shape = [d for d in layer.output.shape[1:]]
        positions = math.prod(shape[:-1]) if len(shape) > 1 else 1
        weights = layer.count_params()
        total += 2.0 * weights * positions if weights else float(math.prod(shape))
    return total


@pytest.mark.slow
def test_plan_counts_every_stage_and_the_curves_of_the_scored_layers(small_config, monkeypatch):
    config = small_config(images=4, render={"faithfulness_photos": 2, "scores": {"layers": 2}})
    probes = []

    def probe():
        probes.append(1)
        return {"gflops": estimate.REFERENCE_PROBE_GFLOPS / 2}  # half the reference's speed

    monkeypatch.setattr(prepare, "_probe", probe)
    data = json.loads(prepare.run_plan(config, as_json=True))
    rows = {(r["model"], r["kind"]): r for r in data["rows"]}
    for kind in ("predict", "image", "localisation", "faithfulness", "unit", "load"):
        assert ("tiny", kind) in rows, kind
    faithful = rows[("tiny", "faithfulness")]
    assert faithful["jobs"] == 2 and faithful["cached"] == 0
    # 2 photos: the photo, black and blurred, then 15 inner points of both curves for 2 of
    # the 3 layers and each of the 4 CAM methods
    passes = 3 + 2 * (STEPS - 1) * 2 * 4
    flops = forward_flops(config.parent / "tiny.keras")
    assert faithful["gflop"] == pytest.approx(2 * passes * flops / 1e9, rel=1e-6)
    assert not faithful["measured"]
    # nominal: at half the reference's speed, twice the reference's nominal time
    per_photo = estimate.NOMINAL_SECONDS_PER_JOB["faithfulness"]  # the curves' inputs
    nominal = faithful["gflop"] / estimate.NOMINAL_GFLOPS + 2 * per_photo
    assert faithful["seconds"] == pytest.approx(2 * nominal)
    # an image's maps include Score-CAM's masked copies: 6 channels x 3 layers, whole model
    assert rows[("tiny", "image")]["gflop"] >= 4 * 6 * 3 * flops / 1e9
    load = rows[("tiny", "load")]
    assert load["jobs"] == 1 and load["seconds"] > 0
    assert probes == [1]
    recorded = json.loads((config.parent / ".atlas-cache" / estimate.CALIBRATION).read_text())
    assert recorded["gflops"] == estimate.REFERENCE_PROBE_GFLOPS / 2
    text = prepare.run_plan(config)  # the probe is recorded: not run again
    assert probes == [1]
    assert re.search(r"^time by stage: .*CAM scores \(deletion/insertion\)", text, re.M)


@pytest.mark.slow
def test_deletion_and_insertion_run_on_the_chosen_layers_named_on_the_page(small_config):
    config = small_config(images=4, render={"faithfulness_photos": 2, "scores": {"layers": 2}})
    report = build(config, OPTIONS)
    cache = open_cache(config.parent / ".atlas-cache")
    context, _ = prepare.prepare(load_config(config), cache, OPTIONS, prepare.StageTimer())
    (model,) = context.models
    names = [layer["name"] for layer in model.layers]
    faithful = [cache.get(job.key).meta for job in model.scores if job.extra["faithful"]]
    assert len(faithful) == 2
    for meta in faithful:
        assert meta["faith_layers"] == [0, 2]
        for method, values in meta["deletion"].items():
            assert values[1] is None, method  # the middle layer is not scored
            assert all(isinstance(v, float) for v in (values[0], values[2])), method
    page = (report.output / "models" / "tiny" / "index.html").read_text(encoding="utf-8")
    named = re.search(r'<span class="scored-layers">(.*?)</span>', page, re.S).group(1)
    assert "2 of the 3 layers" in named and "render.scores.layers: all" in named
    assert names[0] in named and names[2] in named and names[1] not in named
    table = page[page.index('<table class="data compact scores">') :]
    rows = re.findall(r"<tr><td>([^<]*)</td>(.*?)</tr>", table, re.S)
    skipped = {name: cells.count("not-scored") for name, cells in rows}
    assert skipped == {names[0]: 0, names[1]: 2 * 4, names[2]: 0}  # del and ins, 4 methods


@pytest.mark.slow
def test_a_long_stage_is_announced_before_rendering(small_config, caplog):
    config = small_config(images=4, render={"warn_after": 0.0001})  # 6 ms
    caplog.set_level(logging.WARNING, logger="atlas.build")
    build(config, OPTIONS)
    lines = [r.getMessage() for r in caplog.records if "render.warn_after" in r.getMessage()]
    assert any(
        line.startswith("model tiny: unit pictures estimated at")
        and "render.units_per_layer" in line
        for line in lines
    ), lines
    caplog.clear()
    quiet = small_config(images=4, render={"warn_after": 0, "seed": 1})  # 0: never
    build(quiet, OPTIONS)
    assert not [r for r in caplog.records if "render.warn_after" in r.getMessage()]


@pytest.mark.slow
def test_the_speed_probe_runs_in_a_fresh_process():
    found = prepare._probe()
    assert found is not None and found["gflops"] >= found["median"] > 0
    scale = estimate.Throughput({}).calibrated(found).scale
    assert scale == pytest.approx(estimate.REFERENCE_PROBE_GFLOPS / found["gflops"])
