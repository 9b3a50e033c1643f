"""Do the unit pictures beat the photos? Quality against cost of the lucid settings.

For a fixed, seeded sample of units (8 per layer, every conv layer of the embedded MobileNet
of the default site), renders each unit's picture at several settings through atlas's own
renderers (the same traced groups of layers a build uses) and prints, per layer group and
per layer, the median activation ratio (the unit's mean activation on its picture as
published, over its highest mean activation on the default site's detailed photos: what the
unit pages show), the share of units above 1, units the optimiser left dead, and CPU
seconds per unit (tracing included, as in a build).

The photos' activations are read from the default site's cache: build it first
(``atlas build``).

    python bench/quality.py [--units 8] [--settings default,steps44,...] [--layers all]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
import zlib
from pathlib import Path

import _tree  # noqa: F401 - this checkout's atlas, whatever is installed
import numpy as np

REPO = Path(__file__).resolve().parents[1]
# name -> changes to the default lucid parameters (atlas.config.methods.DEFAULT_LUCID)
SETTINGS: dict[str, dict] = {
    "default": {},
    # the settings before issue 25: every layer at 96 px with Lucid's spectrum and jitter
    "no-small-field": {"small_field": 0.0},
    "steps44": {"steps": 44},
    "size64": {"size": 64},
    "size64-steps44": {"size": 64, "steps": 44},
    "lr0.1": {"learning_rate": 0.1},
    "lr0.4": {"learning_rate": 0.4},
    "jitter2": {"jitter": 2},
    "no-scale": {"scales": (1.0,)},
    "draft": "draft",
    "fine-steps64": {"size": 128, "steps": 64},
    # seen zoomed by ~128/96 while optimised: the scale at which the ratio is measured
    "zoom1.33": {"scales": (1.3, 1.333, 1.366)},
}
GROUPS = (("early", 7), ("middle", 13), ("deep", None))  # layers per group, in order


def peaks(context, model_plan) -> dict[str, np.ndarray]:
    """Per layer, each unit's highest spatial-mean activation over the detailed photos."""
    best: dict[str, np.ndarray] = {}
    names = [layer["name"] for layer in model_plan.layers]
    for job in model_plan.images:
        entry = context.cache.get(job.key)
        if entry is None:
            sys.exit("bench/quality.py: build the default site first (atlas build)")
        for name, means in zip(names, entry.meta["channel_mean"], strict=True):
            values = np.asarray(means, np.float64)
            best[name] = values if name not in best else np.maximum(best[name], values)
    return best


def sample(layers: list[dict], count: int, seed: int = 0) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    return {
        layer["name"]: sorted(
            rng.choice(layer["channels"], min(count, layer["channels"]), replace=False).tolist()
        )
        for layer in layers
    }


def params_for(name: str):
    from atlas.config import methods

    change = SETTINGS[name]
    if isinstance(change, str):
        return methods.QUALITY_PRESETS[change][1]
    return dataclasses.replace(methods.DEFAULT_LUCID, **change)


def render(loaded, params, units: dict[str, list[int]]) -> tuple[dict, float]:
    """{layer: [(unit, own activation, dead)]} and the CPU seconds it took."""
    from atlas.render.run import _unit_renderers

    start = time.process_time()
    renderers = _unit_renderers(loaded, params)
    found: dict[str, list] = {}
    for name, chosen in units.items():
        renderer, index = renderers[name]
        seeds = [zlib.crc32(f"{name}/{unit}".encode()) % 2**31 for unit in chosen]
        for results in renderer.render(chosen, seeds, [index] * len(chosen)):
            found.setdefault(name, []).extend((r.unit, r.own_activation, r.dead) for r in results)
    return found, time.process_time() - start


def summary(found: dict, best: dict, names: list[str]) -> dict[str, dict]:
    rows = {}
    for name in names:
        ratios, dead = [], 0
        for unit, own, is_dead in found[name]:
            dead += bool(is_dead)
            if best[name][unit] > 0 and not is_dead:
                ratios.append(own / best[name][unit])
        rows[name] = {"ratios": ratios, "dead": dead, "units": len(found[name])}
    return rows


def group_rows(rows: dict, names: list[str]) -> list[tuple[str, list[str]]]:
    groups, start = [], 0
    for label, size in GROUPS:
        chosen = names[start : start + size] if size else names[start:]
        groups.append((label, chosen))
        start += size or len(names)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    args = parser.parse_args()

    from atlas.build import BuildOptions
    from atlas.cache import open_cache
    from atlas.config.load import load_config
    from atlas.plan.context import StageTimer
    from atlas.prepare import prepare
    from atlas.render.load import load_model

    config = load_config(REPO / "site_config.yaml")
    cache = open_cache(config.cache)
    context, _ = prepare(config, cache, BuildOptions(progress=False), StageTimer())
    model_plan = context.models[0]
    best = peaks(context, model_plan)
    names = [layer["name"] for layer in model_plan.layers]
    units = sample(model_plan.layers, args.units)
    loaded = load_model(model_plan.config)
    results = {}
    for name in args.settings.split(","):
        params = params_for(name)
        found, cpu = render(loaded, params, units)
        count = sum(len(v) for v in found.values())
        results[name] = (summary(found, best, names), cpu / count, params)
        print(f"rendered {name}: {count} units, {cpu / count * 1000:.0f} CPU-ms/unit", flush=True)

    print("\n| setting | group | median ratio | share > 1 | dead | CPU-ms / unit |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (rows, per_unit, _) in results.items():
        for label, chosen in group_rows(rows, names):
            ratios = [r for n in chosen for r in rows[n]["ratios"]]
            dead = sum(rows[n]["dead"] for n in chosen)
            share = sum(r > 1 for r in ratios) / max(1, len(ratios))
            median = statistics.median(ratios) if ratios else float("nan")
            print(
                f"| {name} | {label} | {median:.2f} | {share:.0%} | {dead} | "
                f"{per_unit * 1000:.0f} |"
            )
    print("\nmedian ratio per layer:\n")
    print("| layer | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for layer in names:
        cells = []
        for rows, _, _ in results.values():
            ratios = rows[layer]["ratios"]
            cells.append(f"{statistics.median(ratios):.2f}" if ratios else "-")
        print(f"| {layer} | " + " | ".join(cells) + " |")
    for name, (_, _, params) in results.items():
        print(f"\n{name}: {params!r}")


if __name__ == "__main__":
    main()
