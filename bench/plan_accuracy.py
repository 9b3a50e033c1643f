"""Does ``atlas plan`` come true? Plan, then build cold, and compare per stage.

For each config (the default site, and three models with a big application: the default two
and InceptionV3 at ``weights: none`` on 19 layers, one unit per layer at 16 lucid steps, one
detailed photo per breed), into
a fresh cache and site folder: ``atlas plan --json`` (which computes the model facts and runs
the speed probe, as a user's first plan does), then ``atlas build``, each in a fresh process.
Prints per stage the plan's estimate against the build's own stage timer, and the plan's
expected build time against the build's wall time (target: within +-30 %).

The unit pictures render in a thread beside the other stages, so the measured stage times
overlap and sum to more than the wall time; the plan's "expected build time" accounts for
that (atlas.plan.report.wall_seconds).

    python bench/plan_accuracy.py [--only default|inception] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
# plan kinds -> the build timer's stage (atlas.execute.tasks.LABELS, build.py)
STAGES = {
    "predict": "render predictions",
    "image": "render activations + Grad-CAM",
    "localisation": "render CAM scores",
    "faithfulness": "render CAM scores",
    "unit": "render units",
    "negative": "render units",
    "diversity": "render units",
    "exemplars": "render unit exemplars",
    "grid": "render grids",
    "load": "load models",
    "photo": "render photos",
    "html": "pages",
}
INCEPTION = {
    "id": "inceptionv3",
    "title": "InceptionV3 (random weights)",
    "application": "InceptionV3",
    "weights": "none",
    # 19 of its 94 conv layers, spread over the depth, one unit each, 16 lucid steps: a
    # cold build of minutes on 2 cores (every layer at the default steps: ~2 hours)
    "layers": ["conv2d_?", "conv2d_?0"],
    "render": {
        "units_per_layer": 1,
        "unit_views": {"units": "none"},
        "lucid": {"steps": 16},
        "faithfulness_photos": 2,  # 2 x 1,443 forward passes at 299 px (12 scored layers)
    },
}


def configs(root: Path) -> dict[str, dict]:
    base = yaml.safe_load((REPO / "site_config.yaml").read_text(encoding="utf-8"))
    inception = json.loads(json.dumps(base))
    inception["models"].append(INCEPTION)
    inception["dataset"]["detailed"] = {"per_breed": 1}
    return {"default": base, "inception": inception}


def write(name: str, data: dict, root: Path) -> Path:
    """The config beside the repository's (its relative paths hold), with its own cache and
    site under ``root``."""
    data = json.loads(json.dumps(data))
    data["cache"] = str(root / name / "cache")
    data["site"]["output"] = str(root / name / "site")
    path = REPO / f".plan-accuracy-{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


BUILD = (
    "import json, sys\n"
    "from atlas.build import BuildOptions, build\n"
    "r = build(sys.argv[1], BuildOptions(progress=False))\n"
    "print(json.dumps({'seconds': r.seconds, 'wall': r.wall_seconds}))\n"
)


def run(name: str, config: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "atlas", "plan", "--json", "-c", str(config)],
        capture_output=True, text=True, env=ENV, check=True,
    )  # fmt: skip
    plan_wall = time.perf_counter() - start
    plan = json.loads(done.stdout)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", BUILD, str(config)],
        capture_output=True, text=True, env=ENV, check=True,
    )  # fmt: skip
    process = time.perf_counter() - start
    built = json.loads(done.stdout.strip().splitlines()[-1])
    return {"name": name, "plan": plan, "build": built, "plan_wall": plan_wall, "process": process}


def table(result: dict) -> str:
    planned: dict[str, float] = {}
    for row in result["plan"]["rows"]:
        if row["jobs"] - row["cached"] > 0:
            stage = STAGES.get(row["kind"], row["kind"])
            planned[stage] = planned.get(stage, 0.0) + row["seconds"]
    measured = result["build"]["seconds"]
    lines = [f"## {result['name']}", "", "| stage | plan (s) | build (s) | plan / build |"]
    lines.append("|---|---:|---:|---:|")
    for stage in sorted(set(planned) | set(measured), key=lambda s: -planned.get(s, 0.0)):
        plan, build = planned.get(stage), measured.get(stage)
        ratio = f"{plan / build:.2f}" if plan and build else "-"
        lines.append(
            f"| {stage} | {plan if plan is None else f'{plan:.1f}'} | "
            f"{build if build is None else f'{build:.1f}'} | {ratio} |"
        )
    expected, wall = result["plan"]["wall_seconds"], result["build"]["wall"]
    lines += [
        "",
        f"plan: expected build time {expected:.0f} s (stages summed {result['plan']['seconds']:.0f}"
        f" s); build wall {wall:.0f} s (process {result['process']:.0f} s): "
        f"plan / build {expected / wall:.2f} ({(expected / wall - 1) * 100:+.0f} %)",
        f"`atlas plan` itself took {result['plan_wall']:.0f} s (model facts and the speed probe)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["default", "inception"])
    parser.add_argument("--keep", type=Path, help="build into this folder and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="atlas-plan-accuracy-"))
    written = []
    try:
        for name, data in configs(root).items():
            if args.only and name != args.only:
                continue
            shutil.rmtree(root / name, ignore_errors=True)
            config = write(name, data, root)
            written.append(config)
            print(table(run(name, config)), flush=True)
            print()
    finally:
        for config in written:
            config.unlink(missing_ok=True)
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
