"""Prediction throughput: atlas's streamed, batched predictions vs one predict() per image.

Runs each variant in its own subprocess (so peak memory is its own) on the embedded
MobileNet over N images (the 111-image sample repeated), and prints one table.

    python bench/predict.py [--images 2000] [--baseline-images 200]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _tree  # noqa: F401 - this checkout's atlas, whatever is installed

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATE, TARGET_SPEEDUP, TARGET_MEMORY_MB = 250.0, 5.0, 2048.0


def _images(count: int):
    from atlas.data.scan import scan_dataset

    scan = scan_dataset(
        ROOT / "data/oxford-pets/images", ROOT / "data/oxford-pets/annotations/list.txt"
    )
    base = list(scan.images)
    return [base[i % len(base)] for i in range(count)]


def _load():
    from atlas.config.load import load_config
    from atlas.render.load import load_model

    return load_model(load_config(ROOT / "site_config.yaml").models[0])


def run_atlas(count: int) -> dict:
    """The build's own path: iter_batches (parallel decoding) + run_predictions + cache."""
    from atlas.cache.store import Cache
    from atlas.plan.jobs import Job
    from atlas.render.run import run_predictions

    loaded = _load()
    images = _images(count)
    named = {}
    jobs = []
    for index, image in enumerate(images):
        name = f"{image.name}#{index}"
        named[name] = image.__class__(**{**image.__dict__, "name": name})
        jobs.append(Job("predict", "mobilenet", f"{index:064x}", image=name))
    with tempfile.TemporaryDirectory() as folder:
        cache = Cache(Path(folder))
        run_predictions(loaded, jobs[:64], named, cache, lambda n: None)  # warm-up trace
        cache = Cache(Path(folder) / "timed")
        start = time.perf_counter()
        run_predictions(loaded, jobs, named, cache, lambda n: None)
        seconds = time.perf_counter() - start
    return {"images": count, "seconds": seconds}


def run_loop(count: int) -> dict:
    """The classic script: load one image, call model.predict on a batch of one."""
    import numpy as np

    from atlas.data.images import load_array

    loaded = _load()
    images = _images(count)
    model = loaded.keras_model
    first = load_array(images[0].path, loaded.input_size)[None].astype(np.float32)
    model.predict(loaded.preprocess(first), verbose=0)
    start = time.perf_counter()
    for image in images:
        x = load_array(image.path, loaded.input_size)[None].astype(np.float32)
        model.predict(loaded.preprocess(x), verbose=0)
    seconds = time.perf_counter() - start
    return {"images": count, "seconds": seconds}


def _child(variant: str, count: int) -> None:
    result = {"atlas": run_atlas, "loop": run_loop}[variant](count)
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _measure(variant: str, count: int) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, __file__, "--child", variant, str(count)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--baseline-images", type=int, default=200)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return
    atlas = _measure("atlas", args.images)
    loop = _measure("loop", args.baseline_images)
    atlas_rate = atlas["images"] / atlas["seconds"]
    loop_rate = loop["images"] / loop["seconds"]
    rows = [
        (
            "images/s, atlas (streamed batches of 64)",
            f"{loop_rate:.0f} (loop)",
            f"{atlas_rate:.0f}",
            f"{atlas_rate / loop_rate:.1f}x",
            f">= {TARGET_RATE:.0f}/s and >= {TARGET_SPEEDUP:.0f}x",
            atlas_rate >= TARGET_RATE and atlas_rate / loop_rate >= TARGET_SPEEDUP,
        ),
        (
            "peak memory (MB, whole process with TF)",
            f"{loop['peak_mb']:.0f}",
            f"{atlas['peak_mb']:.0f}",
            "",
            f"< {TARGET_MEMORY_MB:.0f}",
            atlas["peak_mb"] < TARGET_MEMORY_MB,
        ),
    ]
    print(
        f"embedded MobileNet, {atlas['images']} images (atlas) / {loop['images']} "
        f"(one predict() per image), {os.cpu_count()} cores\n"
    )
    print("| comparison | baseline | atlas | ratio | target | ok |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row[:5]) + f" | {'yes' if row[5] else 'NO'} |")


if __name__ == "__main__":
    main()
