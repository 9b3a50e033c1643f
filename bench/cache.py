"""Cold build vs no-op rebuild of the default site (the cache's whole point).

Builds the shipped site_config.yaml into a temporary cache and output twice, each in a
fresh process, and prints one table: the cold build against the no-op rebuild (whole
process, wall clock: the target is 1 s, pages included), the pages each wrote, the peak
memory, and whether the no-op rebuild imported TensorFlow.

    python bench/cache.py [--units-per-layer N]   # N caps units per layer for a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_NOOP_SECONDS = 1.0
TARGET_PEAK_MB = 2048

_CHILD = """
import json, sys
from atlas.build import BuildOptions, build
report = build(sys.argv[1], BuildOptions(progress=False))
print(json.dumps({"seconds": report.seconds, "rendered": report.rendered,
                  "tensorflow": "tensorflow" in sys.modules, "pages": report.pages,
                  "bytes": report.site_bytes, "written": report.pages_written,
                  "peak": report.peak_rss_bytes}))
"""


def _config(folder: Path, units_per_layer: int | None) -> Path:
    text = (ROOT / "site_config.yaml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^  output: \S+", f"  output: {folder / 'site'}", text)
    text = re.sub(r"(?m)^cache: \S+", f"cache: {folder / 'cache'}", text)
    for relative in ("data/", "notes/"):
        text = text.replace(f" {relative}", f" {ROOT}/{relative}")
    if units_per_layer:
        text = text.replace("  # units_per_layer: 64", f"  units_per_layer: {units_per_layer}")
    path = folder / "site_config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _build(config: Path) -> tuple[float, dict]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(config)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"build failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - began, json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units-per-layer", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = _config(Path(folder), args.units_per_layer)
        cold_wall, cold = _build(config)
        warm_wall, warm = _build(config)
    units = f"{args.units_per_layer} units per layer" if args.units_per_layer else "every unit"
    print(
        f"default site ({units}): {warm['pages']:,} pages, {warm['bytes'] / 1e6:.1f} MB, "
        f"{os.cpu_count()} cores\n"
    )
    print("| measure | cold build | no-op rebuild | ratio | target | ok |")
    print("| --- | --- | --- | --- | --- | --- |")
    ok = warm_wall <= TARGET_NOOP_SECONDS
    print(
        f"| whole process, wall (s) | {cold_wall:.1f} | {warm_wall:.2f} | "
        f"{cold_wall / warm_wall:.0f}x | no-op <= {TARGET_NOOP_SECONDS:.0f} s | "
        f"{'yes' if ok else 'NO'} |"
    )
    print(
        f"| pages written | {cold['written']:,} | {warm['written']:,} | | 0 | "
        f"{'yes' if not warm['written'] else 'NO'} |"
    )
    peak = cold["peak"] / 2**20
    print(
        f"| peak memory (MB) | {peak:,.0f} | {warm['peak'] / 2**20:,.0f} | | "
        f"cold <= {TARGET_PEAK_MB:,} | {'yes' if peak <= TARGET_PEAK_MB else 'NO'} |"
    )
    print(
        f"| assets rendered | {sum(cold['rendered'].values()):,} | "
        f"{sum(warm['rendered'].values())} | | 0 | "
        f"{'yes' if not warm['rendered'] else 'NO'} |"
    )
    print(
        f"| TensorFlow imported | {cold['tensorflow']} | {warm['tensorflow']} | | no | "
        f"{'yes' if not warm['tensorflow'] else 'NO'} |"
    )
    print("\ncold build, seconds per stage:\n")
    print("| stage | seconds |")
    print("| --- | --- |")
    for name, seconds in cold["seconds"].items():
        print(f"| {name} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
