"""What activation atlases add to a cold build of the default site, side by side.

Builds the default site (``site_config.yaml``) twice into fresh caches, one after the
other in fresh processes: with ``atlas: {layers: none}`` and with the default atlases.
Prints each build's wall and CPU time, the atlas stages' times (from the build's own
stage timer), the atlas pages' cells, and a cell picture's cost against a unit picture's
(each stage's seconds over its pictures).

    python bench/atlas_cost.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
ATLAS_STAGES = (
    "render atlas samples",
    "atlas layouts",
    "render atlas labels",
    "render atlas cells",
    "atlas pictures",
)


def config(folder: Path, atlas: bool) -> Path:
    data = yaml.safe_load((REPO / "site_config.yaml").read_text(encoding="utf-8"))
    data["site"]["output"] = str(folder / "site")
    data["cache"] = str(folder / "cache")
    for key in ("notes",):
        data["site"][key] = str(REPO / data["site"][key])
    for key in ("images", "annotations", "class_index", "breeds"):
        data["dataset"][key] = str(REPO / data["dataset"][key])
    for model in data["models"]:
        for key in ("weights", "file", "notes"):
            if key in model:
                model[key] = str(REPO / model[key])
    if not atlas:
        data["atlas"] = {"layers": "none"}
    path = folder / "site_config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def build(path: Path) -> dict:
    """One cold build in a fresh process: its wall time and its stage lines."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "atlas", "build", "--no-progress", "-c", str(path)],
        capture_output=True,
        text=True,
        env=ENV,
        check=True,
    )
    wall = time.perf_counter() - started
    stages = {}
    for line in done.stdout.splitlines() + done.stderr.splitlines():
        found = re.match(r"\s+(.+?)\s{2,}([\d.]+) s", line)
        if found:
            stages[found[1]] = float(found[2])
    cpu = re.search(r"\(CPU ([\d,.]+) s\)", done.stdout + done.stderr)
    rendered = re.search(r"rendered: (.*)", done.stdout + done.stderr)
    return {
        "wall": wall,
        "cpu": float(cpu[1].replace(",", "")) if cpu else None,
        "stages": stages,
        "rendered": rendered[1] if rendered else "",
    }


def counts(rendered: str) -> dict[str, int]:
    return {kind: int(n) for kind, n in re.findall(r"(\w+) (\d+)", rendered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build here and keep the folders")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="atlas-cost-"))
    results = {}
    try:
        for name, atlas in (("without atlases", False), ("with atlases", True)):
            folder = root / name.replace(" ", "-")
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            results[name] = build(config(folder, atlas))
            print(f"{name}: {results[name]['wall']:.0f} s", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print("| build | wall s | CPU s | " + " | ".join(ATLAS_STAGES) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in ATLAS_STAGES) + " |")
    for name, result in results.items():
        cells = " | ".join(f"{result['stages'].get(stage, 0.0):.1f}" for stage in ATLAS_STAGES)
        print(f"| {name} | {result['wall']:.0f} | {result['cpu'] or 0:.0f} | {cells} |")
    with_atlas = results["with atlases"]
    made = counts(with_atlas["rendered"])
    unit_seconds = with_atlas["stages"].get("render units", 0.0)
    cell_seconds = with_atlas["stages"].get("render atlas cells", 0.0)
    units = made.get("unit", 0) + made.get("negative", 0) + 4 * made.get("diversity", 0)
    print()
    print(f"rendered with atlases: {with_atlas['rendered']}")
    if units and made.get("atlas_cell"):
        cell_ms = 1000 * cell_seconds / made["atlas_cell"]
        print(
            f"per picture: unit {1000 * unit_seconds / units:.0f} ms ({units} pictures, "
            f"beside the other stages), atlas cell {cell_ms:.0f} ms ({made['atlas_cell']} cells)"
        )
    added = with_atlas["wall"] - results["without atlases"]["wall"]
    print(
        f"added wall time: {added:.0f} s ({100 * added / results['without atlases']['wall']:.0f} %)"
    )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
