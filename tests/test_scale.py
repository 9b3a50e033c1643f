"""Beyond one process: ``atlas plan``, the site budget, shards (``--shard I/N``).

The tiny ``.keras`` model on four photos: 3 conv layers x 2 units.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sitecheck import edit_config, files_of

from atlas.build import BuildOptions, build
from atlas.cli import main
from atlas.config import sizes
from atlas.execute import shards, tasks
from atlas.plan import estimate
from atlas.plan.jobs import Job

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
OPTIONS = BuildOptions(progress=False, max_steps=2)
LEDGER = "build.html"


def atlas(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "atlas", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def without_ledger(files: dict) -> dict:
    return {name: data for name, data in files.items() if name != LEDGER}


# -- pure parts -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500MB", 500 * 10**6),
        ("1GB", 10**9),
        ("1.5 GB", 15 * 10**8),
        ("2KiB", 2048),
        ("123", 123),
        (4096, 4096),
        ("10kB", 10**4),
        ("1 gib", 2**30),
    ],
)
def test_parse_size(text, expected):
    assert sizes.parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1MB", "1XB", "", True])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError):
        sizes.parse_size(text)


def test_flops_of_a_conv_by_hand():
    # 3x3 conv, 3 -> 4 channels on 32x32: (27 weights + 1 bias) x 4 = 112 params.
    layers = [
        {"name": "pixels", "output_shape": [None, 32, 32, 3], "params": 0},
        {"name": "conv", "output_shape": [None, 32, 32, 4], "params": 112},
        {"name": "relu", "output_shape": [None, 32, 32, 4], "params": 0},
    ]
    prefix = estimate.prefix_flops({"input_size": [32, 32], "layers": layers})
    assert prefix["conv"] == 3072 + 2 * 112 * 1024
    assert prefix["relu"] == prefix["conv"] + 4096
    facts = {"input_size": [32, 32], "layers": layers}
    assert estimate.job_gflop("unit", facts, prefix, layer="conv", steps=10) == pytest.approx(
        30 * prefix["conv"] / 1e9
    )
    # fully convolutional: spatial sizes from the planned input size
    free = {"name": "c", "output_shape": [None, None, None, 8], "params": 10}
    assert estimate.layer_flops(free, (16, 16)) == 2 * 10 * 256


def test_throughput_record_and_estimate():
    throughput = estimate.Throughput.from_json("not json")
    nominal = 10.0 / estimate.NOMINAL_GFLOPS + 5 * estimate.NOMINAL_SECONDS_PER_JOB["unit"]
    assert throughput.seconds("unit", 10.0, 5) == (pytest.approx(nominal), False)
    throughput.record("unit", seconds=8.0, gflop=4.0, jobs=4)
    assert throughput.seconds("unit", 10.0, 5) == (20.0, True)
    throughput.record("photo", seconds=1.0, gflop=0.0, jobs=10)
    assert throughput.seconds("photo", 0.0, 30) == (3.0, True)
    again = estimate.Throughput.from_json(throughput.to_json())
    assert again.kinds == throughput.kinds
    newer = estimate.Throughput({})
    newer.record("unit", seconds=2.0, gflop=4.0, jobs=4)
    combined = throughput.updated(newer)  # the old record weighs half: (4 + 2) / (2 + 4)
    assert combined.seconds("unit", 6.0, 1) == (6.0, True)
    combined.record("unit:vgg", seconds=10.0, gflop=1.0, jobs=1)  # a model's own record first
    assert combined.seconds("unit", 2.0, 1, "vgg") == (20.0, True)
    assert combined.seconds("unit", 2.0, 1, "other") == (2.0, True)


def _task(name: str, gflop: float) -> tasks.Task:
    return tasks.Task("unit", None, (Job("unit", "m", name * 8),), gflop=gflop)


def test_split_covers_each_task_once_balanced_and_deterministic():
    throughput = estimate.Throughput({})
    tasks = [_task(chr(97 + i), g) for i, g in enumerate([9, 7, 6, 5, 4, 3, 3, 2, 1, 1])]
    shares = shards.split(tasks, 3, throughput)
    names = sorted(t.name for share in shares for t in share)
    assert names == sorted(t.name for t in tasks)
    loads = [sum(t.gflop for t in share) for share in shares]
    assert max(loads) - min(loads) <= 1  # 41 GFLOP: 14 / 14 / 13
    assert shards.split(list(reversed(tasks)), 3, throughput) == shares


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_bad_shard_is_a_usage_error(small_config, text, capsys):
    assert main(["build", "-c", str(small_config()), "--shard", text]) == 2
    assert "--shard" in capsys.readouterr().err


# -- plan and budget ------------------------------------------------------------------------
@pytest.mark.slow
def test_plan_counts_jobs_then_cached_without_tensorflow(small_config, tmp_path):
    config = small_config(images=4)
    cold = json.loads(atlas("plan", "-c", str(config), "--json").stdout)
    rows = {(r["model"], r["kind"]): r for r in cold["rows"]}
    expected = {"predict": 4, "image": 4, "unit": 6, "grid": 3, "exemplars": 3}
    assert {kind: rows[("tiny", kind)]["jobs"] for kind in expected} == expected
    assert rows[("(photos)", "photo")]["jobs"] == 4
    assert all(r["cached"] == 0 for r in cold["rows"])
    assert rows[("tiny", "unit")]["gflop"] > 0 and cold["fits"]
    report = build(config, OPTIONS)
    code = (
        "import json, sys; from atlas.prepare import run_plan; "
        "d = json.loads(run_plan(sys.argv[1], as_json=True)); "
        "print(json.dumps([d, 'tensorflow' in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    warm, tensorflow = json.loads(done.stdout)
    assert not tensorflow
    assert all(r["cached"] == r["jobs"] and r["gflop"] == 0 for r in warm["rows"])
    # the throughput of the cold build is recorded and now used
    recorded = json.loads((config.parent / ".atlas-cache" / estimate.THROUGHPUT).read_text())
    assert recorded["unit"]["jobs"] == 6 and recorded["unit"]["seconds"] > 0
    # assets projected from the cached entries' sizes: the site's assets; pages: nominal
    site = report.output
    assets = sum(p.stat().st_size for p in (site / "assets").iterdir())
    html = sum(p.stat().st_size for p in site.rglob("*.html"))
    projected = {r["kind"]: r["site_bytes"] for r in warm["rows"]}
    assert sum(v for k, v in projected.items() if k != "html") == pytest.approx(assets, rel=0.05)
    # (fitted on the default site: ~3 % there; the tiny site's pages are leaner)
    assert html / 2.5 < projected["html"] < html * 2.5


@pytest.mark.slow
def test_over_budget_stops_before_rendering(small_config):
    config = small_config(images=4, site={"max_size": "20kB"})
    done = atlas("build", "-c", str(config), "--no-progress")
    assert done.returncode == 1, done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert "site.max_size (20.0 kB)" in message and "projected site" in message
    assert "render.units_per_layer" in message and "dataset.detailed" in message
    cache = config.parent / ".atlas-cache"
    metas = [json.loads(p.read_text()) for p in cache.glob("*/*/meta.json")]
    assert len(metas) == 1 and "layers" in metas[0]  # the model facts only: nothing rendered
    assert not (config.parent / "_site").exists()


def test_bad_max_size_is_a_config_error(small_config, capsys):
    config = small_config(site={"max_size": "lots"})
    assert main(["build", "-c", str(config)]) == 2
    assert "site.max_size" in capsys.readouterr().err


# -- shards ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_shards_then_assembly_equal_one_build(project_factory, tmp_path):
    one = project_factory(tmp_path / "one", images=4)
    single = build(one, OPTIONS)
    sharded = project_factory(tmp_path / "sharded", images=4)
    shards = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "atlas",
                "build",
                "-c",
                str(sharded),
                "--no-progress",
                "--max-steps",
                "2",
                "--shard",
                f"{i}/2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for i in (1, 2)
    ]
    outputs = [process.communicate(timeout=300) for process in shards]
    assert [p.returncode for p in shards] == [0, 0], outputs
    assert all("no site written" in out for out, _ in outputs)
    assert not (sharded.parent / "_site").exists()
    split = list((sharded.parent / ".atlas-cache" / "shards").glob("*-2.json"))
    shares = json.loads(split[0].read_text())
    assert len(split) == 1 and all(shares) and not set(shares[0]) & set(shares[1])
    assembled = build(sharded, OPTIONS)
    assert assembled.rendered.get("unit", 0) == 0
    assert set(assembled.rendered) <= {"exemplars", "grid"}
    assert without_ledger(files_of(assembled.output)) == without_ledger(files_of(single.output))


@pytest.mark.slow
def test_a_late_shard_takes_its_share_of_the_recorded_split(project_factory, tmp_path):
    config = project_factory(tmp_path / "p", images=4)
    first = build(config, BuildOptions(progress=False, max_steps=2, shard=(1, 2)))
    assert first.output is None and sum(first.rendered.values()) > 0
    # shard 2 starts after shard 1 finished: the jobs missing now are only shard 2's,
    # and it must not split them again
    second = build(config, BuildOptions(progress=False, max_steps=2, shard=(2, 2)))
    assert sum(second.rendered.values()) > 0
    edit_config(config, lambda data: None)
    assembled = build(config, OPTIONS)
    assert not {"unit", "image", "predict", "photo"} & set(assembled.rendered)
