"""The default model's units: per-layer renderers (before issue 13) against runs of layers.

Run ``python bench/units_before_after.py [UNITS_PER_LAYER]`` (default 64). In one process,
one after the other: "before" renders each layer with its own renderer (its own trace,
batches of that layer only) and the inverse FFT as one op; "now" renders them the way a
build does (``run._unit_renderers``: runs of layers, one trace each, batches mixing
layers; the FFT split per core). Prints wall and CPU time of each and how far the
pictures and their own activations differ.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
import _tree  # noqa: E402, F401 - this checkout's atlas, whatever is installed
import numpy as np  # noqa: E402

from atlas.config.load import load_config  # noqa: E402
from atlas.config.methods import resolve_params  # noqa: E402
from atlas.plan.jobs import unit_seed  # noqa: E402
from atlas.render import filters, param, run  # noqa: E402
from atlas.render.load import load_model  # noqa: E402


def main() -> None:
    cap = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    config = load_config(ROOT / "site_config.yaml").models[0]
    config = dataclasses.replace(
        config, render=dataclasses.replace(config.render, units_per_layer=cap)
    )
    loaded = load_model(config)
    params = resolve_params("lucid", loaded.input_size[0], {}, "lucid")
    layers = [(layer.name, min(cap, layer.channels)) for layer in loaded.conv_layers()]

    def before() -> dict:
        param.FFT_PARTS = 1
        found = {}
        for name, count in layers:
            units = list(range(count))
            seeds = [unit_seed(0, name, unit) for unit in units]
            model = loaded.feature_model(name)
            for batch in filters.render_units(
                model, units, seeds, params, loaded.preprocess, eval_size=loaded.input_size[0]
            ):
                found.update({(name, result.unit): result for result in batch})
        return found

    def now() -> dict:
        param.FFT_PARTS = max(1, min(os.cpu_count() or 1, 8))
        loaded.renderers.clear()
        renderers = run._unit_renderers(loaded, params)
        runs: dict[int, tuple] = {}
        for name, count in layers:
            renderer, index = renderers[name]
            runs.setdefault(id(renderer), (renderer, []))[1].extend(
                (index, name, unit) for unit in range(count)
            )
        print("runs of layers:", [len(items) for _, items in runs.values()], flush=True)
        found = {}
        for renderer, items in runs.values():
            names = {index: name for index, name, _ in items}
            for batch in renderer.render(
                [unit for _, _, unit in items],
                [unit_seed(0, name, unit) for _, name, unit in items],
                [index for index, _, _ in items],
            ):
                found.update({(names[result.layer], result.unit): result for result in batch})
        return found

    results = {}
    for label, render in (("before", before), ("now", now)):
        cpu, wall = time.process_time(), time.perf_counter()
        results[label] = render()
        print(
            f"{label}: {len(results[label])} units, wall {time.perf_counter() - wall:.1f} s, "
            f"cpu {time.process_time() - cpu:.1f} s",
            flush=True,
        )
    ratios, differences = [], []
    for key, old in results["before"].items():
        new = results["now"][key]
        differences.append(np.abs(old.picture.astype(int) - new.picture.astype(int)).mean())
        if not old.dead and abs(old.own_activation) > 1e-6:
            ratios.append(new.own_activation / old.own_activation)
    print(
        f"own activation now/before: median {np.median(ratios):.4f}, 5th-95th percentile "
        f"{np.percentile(ratios, 5):.4f}-{np.percentile(ratios, 95):.4f}; mean picture "
        f"difference {np.mean(differences):.3f} of 255 (largest {np.max(differences):.2f})"
    )


if __name__ == "__main__":
    main()
