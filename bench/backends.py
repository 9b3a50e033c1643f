"""atlas on TensorFlow against atlas on JAX, and against tf-keras-vis, side by side.

    python bench/backends.py [--quick]

Each backend runs in a fresh interpreter of its own (Keras picks its backend once per
process: ``--worker tensorflow`` / ``--worker jax``), one after the other, on the same
units, seeds, steps and sizes of the embedded MobileNet (the default site's model):

* unit pictures, Lucid's method and the classic one: seconds per unit with the first
  batch's compilation (cold) and without it (warm, the same units with other seeds),
  rendered through the build's own runs of layers, and each picture's own activation
  (the unit's spatial mean on its picture at the model's input size, as the build
  measures it);
* activations + Grad-CAM, Grad-CAM++, LayerCAM and Score-CAM of 32 photos at each
  layer of :data:`LAYERS`: seconds per photo (warm), the maps and the top-1 classes;
* the peer a Keras user would otherwise pick: tf-keras-vis' ``ActivationMaximization``
  on the same units, steps and picture size (its own default jitter, rotation and
  regularisers and optimiser, as a user would call it, one truncated model per layer),
  its pictures' own activations measured the same way (TensorFlow only: tf-keras-vis has no JAX).

The table: seconds per unit and per photo, and JAX's activations and maps against
TensorFlow's (median ratio of the units' own activations; the CAMs' median correlation;
top-1 agreement). This is the JAX column of ``bench/renderers.py`` (whose baselines are
TensorFlow code): a script of its own because a process has one Keras backend.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
import _tree  # noqa: E402, F401 - this checkout's atlas, whatever is installed

# receptive fields above a quarter of the input: the standard recipe, no small-field one
LAYERS = ("conv_pw_5", "conv_pw_9", "conv_pw_13")
PHOTOS = 32


def _loaded():
    from atlas.config.load import load_config
    from atlas.render.load import load_model

    return load_model(load_config(ROOT / "site_config.yaml").models[0])


def _units(loaded, method: str, count: int, seed: int) -> tuple[float, np.ndarray]:
    """Seconds and own activations of ``count`` units of each layer of :data:`LAYERS`,
    rendered the way a build renders them: through the build's own runs of layers
    (``run._unit_renderers``: one traced renderer per run, batches mixing its layers)."""
    from atlas.config.methods import resolve_params
    from atlas.render.run import _unit_renderers

    params = resolve_params(method, loaded.input_size[0], {}, method)
    renderers = _unit_renderers(loaded, params)
    by_renderer: dict[int, list] = {}
    for k, layer in enumerate(LAYERS):
        renderer, index = renderers[layer]
        chosen = by_renderer.setdefault(id(renderer), [renderer, [], [], []])
        for unit in range(count):
            chosen[1].append(unit)
            chosen[2].append(index)
            chosen[3].append(seed * 100_000 + k * count + unit)
    began, own = time.perf_counter(), []
    for renderer, units, layers, seeds in by_renderer.values():
        own += [r.own_activation for b in renderer.render(units, seeds, layers) for r in b]
    return time.perf_counter() - began, np.array(own)


def _photos(loaded) -> np.ndarray:
    """The first photos of the default site, resized to the model's input (uint8)."""
    from PIL import Image

    names = sorted((ROOT / "data" / "oxford-pets" / "images").glob("*.jpg"))[:PHOTOS]
    side = tuple(loaded.input_size)
    return np.stack(
        [np.asarray(Image.open(n).convert("RGB").resize(side, Image.BILINEAR)) for n in names]
    )


def _maps(loaded, photos: np.ndarray) -> tuple[float, dict]:
    from atlas.render.maps import MapRenderer

    model = loaded.graph.submodel(loaded.unit_tensors(list(LAYERS)), with_logits=True)
    renderer = MapRenderer(
        model, loaded.preprocess, 8, gradcam=True, score_channels=6,
        probabilities=loaded.probabilities,
    )  # fmt: skip
    renderer.run(photos[:8])  # compiled: the first pass aside
    began = time.perf_counter()
    results = renderer.run(photos)
    seconds = time.perf_counter() - began
    arrays = {"top1": np.array([int(np.argmax(r.logits)) for r in results])}
    for method in results[0].method_cams:
        arrays[method] = np.stack(
            [np.concatenate([c.ravel() for c in r.method_cams[method][0]]) for r in results]
        )
    return seconds, arrays


def _peer(loaded, count: int, seed: int) -> tuple[float, np.ndarray]:
    """tf-keras-vis' ActivationMaximization on the same units, steps and size as Lucid."""
    import keras
    import tensorflow as tf
    from tf_keras_vis.activation_maximization import ActivationMaximization

    from atlas.config.methods import resolve_params

    params = resolve_params("lucid", loaded.input_size[0], {}, "lucid")
    size, own = params.size, []
    began = time.perf_counter()
    for k, layer in enumerate(LAYERS):
        features = loaded.feature_model(layer)
        pixels = keras.Input((size, size, 3))
        model = keras.Model(pixels, features(loaded.preprocess(pixels)))
        units = tf.one_hot(range(count), features.output_shape[-1])
        rng = np.random.default_rng(seed + k)
        pictures = ActivationMaximization(model, clone=False)(
            lambda output, units=units: tf.reduce_sum(tf.reduce_mean(output, (1, 2)) * units, 1),
            seed_input=rng.uniform(96, 160, (count, size, size, 3)).astype(np.float32),
            steps=params.steps,
        )
        shown = tf.image.resize(np.asarray(pictures, np.float32), loaded.input_size)
        means = tf.reduce_mean(features(loaded.preprocess(shown)), (1, 2)).numpy()
        own += [float(means[i, i]) for i in range(count)]
    return time.perf_counter() - began, np.array(own)


def worker(backend: str, quick: bool, out: Path) -> None:
    from atlas.render.backend import choose

    choose(backend)
    loaded = _loaded()
    count = 4 if quick else 16
    report, arrays = {"backend": backend}, {}
    for method in ("lucid", "classic"):
        cold, _ = _units(loaded, method, count, seed=1)
        warm, own = _units(loaded, method, count, seed=2)
        report[method] = {
            "cold": cold / (count * len(LAYERS)),
            "warm": warm / (count * len(LAYERS)),
        }
        arrays[f"own_{method}"] = own
    seconds, maps = _maps(loaded, _photos(loaded))
    report["photo"] = seconds / len(maps["top1"])
    arrays.update({f"map_{k}": v for k, v in maps.items()})
    if backend == "tensorflow":
        seconds, own = _peer(loaded, count, seed=2)
        report["peer"] = seconds / (count * len(LAYERS))
        arrays["own_peer"] = own
    np.savez(out, **arrays)
    print(json.dumps(report))


def _run(backend: str, quick: bool, out: Path) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, __file__, "--worker", backend, "--out", str(out)]
    done = subprocess.run(
        command + (["--quick"] if quick else []), capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"the {backend} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    rows = [np.corrcoef(x, y)[0, 1] for x, y in zip(a, b, strict=True) if x.std() and y.std()]
    return float(np.median(rows)) if rows else float("nan")


def table(quick: bool) -> str:
    folder = Path(tempfile.mkdtemp())
    found = {b: _run(b, quick, folder / f"{b}.npz") for b in ("tensorflow", "jax")}
    tf_a, jax_a = (np.load(folder / f"{b}.npz") for b in ("tensorflow", "jax"))
    tf_r, jax_r = found["tensorflow"], found["jax"]
    lines = [
        "| measure | TensorFlow | JAX | JAX / TensorFlow |",
        "| --- | --- | --- | --- |",
    ]
    for method in ("lucid", "classic"):
        for when in ("cold", "warm"):
            t, j = tf_r[method][when] * 1e3, jax_r[method][when] * 1e3
            lines.append(f"| {method} units, ms/unit ({when}) | {t:.0f} | {j:.0f} | {j / t:.2f} |")
        ratio = np.median(jax_a[f"own_{method}"] / np.maximum(tf_a[f"own_{method}"], 1e-9))
        lines.append(f"| {method}: own activation, median JAX/TF per unit | | | {ratio:.3f} |")
    t, j = tf_r["photo"] * 1e3, jax_r["photo"] * 1e3
    lines.append(f"| activations + 4 CAMs, ms/photo (warm) | {t:.0f} | {j:.0f} | {j / t:.2f} |")
    for method in sorted(k[4:] for k in tf_a.files if k.startswith("map_") and k != "map_top1"):
        corr = _correlation(tf_a[f"map_{method}"], jax_a[f"map_{method}"])
        lines.append(f"| {method}: median correlation of the maps | | | {corr:.4f} |")
    agree = float(np.mean(tf_a["map_top1"] == jax_a["map_top1"]))
    lines.append(f"| top-1 agreement ({len(tf_a['map_top1'])} photos) | | | {agree:.0%} |")
    peer = tf_r["peer"] * 1e3
    lucid = tf_r["lucid"]["warm"] * 1e3
    ratio = np.median(tf_a["own_lucid"]) / max(np.median(tf_a["own_peer"]), 1e-9)
    lines += [
        "",
        "| peer (TensorFlow) | tf-keras-vis ActivationMaximization | atlas lucid | speed-up |",
        "| --- | --- | --- | --- |",
        f"| ms/unit, same units, steps, size | {peer:.0f} | {lucid:.0f} | {peer / lucid:.1f}x |",
        f"| median own activation | {np.median(tf_a['own_peer']):.3f} "
        f"| {np.median(tf_a['own_lucid']):.3f} | {ratio:.2f}x |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 units a layer instead of 16")
    parser.add_argument("--worker", choices=("tensorflow", "jax"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.quick, args.out)
    else:
        print(table(args.quick))


if __name__ == "__main__":
    main()
