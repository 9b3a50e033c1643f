"""The cost of each unit view (issue 14): channel, negative and diversity pictures on the
default model's renderers, one batch at a time, and the diversity term's effect.

    python bench/unit_views.py [BATCHES]

Loads the default config's first model, builds its renderers as a build does (one traced
renderer per run of layers, ``run.unit_groups``) and renders, after one warm-up batch of
each kind, BATCHES batches of 64 pictures of each kind: channel pictures (sign +1),
negative pictures (sign -1) and diversity pictures (16 groups of 4), for the units a
default build gives the costly views (4 per layer, spread evenly). Prints seconds per
batch and pictures per second, and the diversity pictures' mean pairwise Gram cosine with
and without the diversity term (lambda ``DIVERSITY_WEIGHT`` against 0) with their mean
unit activation. Timings on a shared machine are noisy: compare the rows, run it twice.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
import _tree  # noqa: E402, F401 - this checkout's atlas, whatever is installed


def _jobs(loaded, renderers) -> dict[int, list[tuple[int, int]]]:
    """Per renderer, its (output index, unit) pairs with the costly views."""
    from atlas.config.views import DEFAULT_UNITS, costly_units

    chosen = defaultdict(list)
    for layer in loaded.conv_layers():
        renderer, index = renderers[layer.name]
        for unit in costly_units(layer.channels, DEFAULT_UNITS):
            chosen[id(renderer)].append((index, unit))
    return chosen


def _time(renderer, pairs, kind: str, batches: int) -> tuple[float, list]:
    """Seconds per batch of 64 pictures of a kind (after a warm-up batch), and results."""
    size = 64
    if kind == "diversity":
        pairs = [pair for pair in pairs for _ in range(4)]
    pairs = (pairs * (1 + (batches + 1) * size // len(pairs)))[: (batches + 1) * size]
    units = [u for _, u in pairs]
    layers = [k for k, _ in pairs]
    seeds = list(range(1000, 1000 + len(pairs)))
    signs = [-1.0 if kind == "negative" else 1.0] * len(pairs)
    groups = [i // 4 if kind == "diversity" else -1 for i in range(len(pairs))]
    seconds, results = [], []
    for start in range(0, len(pairs), size):
        began = time.perf_counter()
        found = [
            r
            for batch in renderer.render(
                units[start : start + size],
                seeds[start : start + size],
                layers[start : start + size],
                signs=signs[start : start + size],
                groups=groups[start : start + size],
                batch_size=size,
            )
            for r in batch
        ]
        seconds.append(time.perf_counter() - began)
        results += found
    return float(np.mean(seconds[1:] or seconds)), results


def _gram_cosine(loaded, renderer, results) -> float:
    """Mean pairwise Gram cosine within each group of 4, at the model's input size."""
    from atlas.render._tensorflow import tf

    values = []
    for start in range(0, len(results) - 3, 4):
        group = results[start : start + 4]
        pictures = tf.image.resize(
            np.stack([r.picture for r in group]).astype(np.float32),
            loaded.input_size,
            antialias=True,
        )
        outputs = renderer.model(loaded.preprocess(pictures))
        outputs = outputs if isinstance(outputs, list) else [outputs]
        act = np.asarray(outputs[group[0].layer])
        flat = act.reshape(4, -1, act.shape[-1])
        grams = np.einsum("bpc,bpd->bcd", flat, flat).reshape(4, -1)
        grams /= np.linalg.norm(grams, axis=1, keepdims=True) + 1e-12
        cos = grams @ grams.T
        values.append((cos.sum() - np.trace(cos)) / 12)
    return float(np.mean(values))


def main(batches: int = 2) -> None:
    from atlas.config.load import load_config
    from atlas.plan import jobs as plan
    from atlas.render import filters, run
    from atlas.render.load import load_model

    config = load_config(ROOT / "site_config.yaml")
    model = config.models[0]
    loaded = load_model(model)
    params = plan.unit_params(model, 0, loaded.input_size)
    renderers = run._unit_renderers(loaded, params)
    owners = {id(r): r for r, _ in renderers.values()}
    print(f"{model.id}: {len(owners)} renderers, lambda {filters.DIVERSITY_WEIGHT}")
    for ident, pairs in _jobs(loaded, renderers).items():
        renderer = owners[ident]
        print(f"renderer of {len(renderer.channels)} layers, {len(pairs)} units with views")
        for kind in ("unit", "negative", "diversity"):
            seconds, results = _time(renderer, pairs, kind, batches)
            line = f"  {kind:9s} {seconds:6.2f} s per batch of 64, {64 / seconds:5.1f} pictures/s"
            if kind == "diversity":
                plain = filters.UnitRenderer(
                    renderer.model,
                    params,
                    loaded.preprocess,
                    eval_size=loaded.input_size[0],
                    diversity_weight=0.0,
                )
                _, without = _time(plain, pairs, kind, 0)
                line += (
                    f"; Gram cosine {_gram_cosine(loaded, renderer, results[:64]):.3f} "
                    f"(lambda 0: {_gram_cosine(loaded, plain, without):.3f}), mean unit "
                    f"{np.mean([r.own_activation for r in results[:64]]):.2f} "
                    f"(lambda 0: {np.mean([r.own_activation for r in without]):.2f})"
                )
            print(line, flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
