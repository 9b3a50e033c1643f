"""Choosing the Keras backend (``render.backend``), and a whole build on JAX that never
imports TensorFlow. The numbers across backends: tests/test_backend_units.py (unit
pictures) and tests/test_backend_maps.py (activations, CAMs, predictions, scores)."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import write_project
from sitecheck import files_of

from atlas.config.load import load_config
from atlas.errors import ConfigError
from atlas.render import backend

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
ENV.pop("KERAS_BACKEND", None)

# A build in a fresh interpreter where TensorFlow cannot be imported at all: what a machine
# with JAX and no TensorFlow (pip install --no-deps) has.
NO_TENSORFLOW = """
import importlib.abc, json, sys

class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("TensorFlow is not installed on this machine")
        return None

sys.meta_path.insert(0, NoTensorFlow())
from atlas.build import BuildOptions, build
r = build(sys.argv[1], BuildOptions(progress=False, max_steps=2))
print(json.dumps({"rendered": r.rendered, "reused": r.reused,
                  "tensorflow": "tensorflow" in sys.modules,
                  "backend": sys.modules["keras"].backend.backend()}))
"""


def _build(config: Path, code: str, env: dict | None = None) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        capture_output=True,
        text=True,
        env=env or ENV,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _config(tmp_path: Path, tiny_keras_file: Path, **render) -> Path:
    return write_project(tmp_path / "project", tiny_keras_file, render=render)


# -- the setting ----------------------------------------------------------------------------


def test_render_backend_is_read_and_checked(tmp_path, tiny_keras_file):
    assert load_config(_config(tmp_path, tiny_keras_file)).backend == "tensorflow"
    path = _config(tmp_path, tiny_keras_file, backend="jax")
    assert load_config(path).backend == "jax"
    assert load_config(path).models[0].render.backend == "jax"  # one backend per build
    path.write_text(path.read_text().replace("backend: jax", "backend: jaxx"))
    with pytest.raises(ConfigError, match=r"render\.backend.*did you mean 'jax'"):
        load_config(path)


def test_a_models_own_backend_is_refused(tmp_path, tiny_keras_file):
    path = _config(tmp_path, tiny_keras_file)
    data = yaml.safe_load(path.read_text())
    data["models"][0]["render"] = {"backend": "jax"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"models\[0\]\.render\.backend.*: one backend renders"):
        load_config(path)


def test_auto_follows_keras_backend(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert backend.requested("auto") == "jax"
    assert backend.requested("tensorflow") == "tensorflow"
    monkeypatch.delenv("KERAS_BACKEND")
    assert backend.requested("auto") == "tensorflow"  # Keras' own default


def test_torch_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    with pytest.raises(ConfigError) as error:
        backend.choose("auto")
    assert str(error.value).count("\n") == 0
    assert "KERAS_BACKEND: 'torch'" in str(error.value) and "tensorflow or jax" in str(error.value)


def test_a_second_backend_in_one_process_is_refused(monkeypatch):
    import keras  # this test process runs Keras on TensorFlow

    assert keras.backend.backend() == "tensorflow"
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    with pytest.raises(ConfigError, match="already running on tensorflow"):
        backend.choose("jax")
    assert os.environ["KERAS_BACKEND"] == "tensorflow"  # unchanged by the refusal
    assert backend.choose("tensorflow") == "tensorflow"


def test_keras_backend_torch_on_the_command_line_is_one_line(tmp_path, tiny_keras_file):
    path = _config(tmp_path, tiny_keras_file, backend="auto")
    done = subprocess.run(
        [sys.executable, "-m", "atlas", "build", "-c", str(path)],
        capture_output=True,
        text=True,
        env={**ENV, "KERAS_BACKEND": "torch"},
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "KERAS_BACKEND" in lines[0] and "torch" in lines[0]
    assert "Traceback" not in done.stderr
    assert not (path.parent / "_site").exists()


def test_both_backend_modules_have_the_same_functions():
    """The two backend modules are twins: the same public names, the same arguments."""

    def signatures(name: str) -> dict:
        tree = ast.parse((ROOT / "atlas" / "render" / f"_backend_{name}.py").read_text())
        found = {}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                found[node.name] = [a.arg for a in node.args.args]
            elif isinstance(node, ast.Assign) and node.targets[0].id.isupper():
                found[node.targets[0].id] = "constant"
        return found

    assert signatures("tensorflow") == signatures("jax")


# -- a whole build on JAX --------------------------------------------------------------------


@pytest.mark.slow
def test_a_jax_build_never_imports_tensorflow_and_shares_the_cache(tmp_path, tiny_keras_file):
    """The tiny project on JAX, where TensorFlow cannot even be imported: every page,
    the model page and the ledger name JAX; then the same project on TensorFlow renders
    nothing: the two backends share the cache (no backend in any key)."""
    path = _config(tmp_path, tiny_keras_file, backend="jax")
    result = _build(path, NO_TENSORFLOW)
    assert result["tensorflow"] is False and result["backend"] == "jax"
    assert result["rendered"].get("unit", 0) > 0 and result["rendered"].get("image", 0) > 0
    site = path.parent / "_site"
    jax_files = files_of(site)
    model_page = (site / "models" / "tiny" / "index.html").read_text()
    assert re.search(r"rendered with</dt><dd[^>]*>jax \d", model_page)
    assert re.search(r'class="backend">jax \d', (site / "build.html").read_text())

    tf_project = tmp_path / "tf"
    shutil.copytree(path.parent, tf_project, symlinks=True)
    tf_config = tf_project / "site_config.yaml"
    tf_config.write_text(tf_config.read_text().replace("backend: jax", "backend: tensorflow"))
    shutil.rmtree(tf_project / "_site")
    code = (
        "import json, sys\nfrom atlas.build import BuildOptions, build\n"
        "r = build(sys.argv[1], BuildOptions(progress=False, max_steps=2))\n"
        "print(json.dumps({'rendered': r.rendered, 'reused': r.reused}))\n"
    )
    again = _build(tf_config, code)
    assert {k: n for k, n in again["rendered"].items() if n} == {}
    assert files_of(tf_project / "_site").keys() == jax_files.keys()


def _imported(path: Path) -> set[str]:
    """The top-level packages a module imports anywhere (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
            if node.module == "atlas.render._tensorflow":
                found.add("tensorflow")  # TensorFlow, quietly
    return found


def test_only_the_backend_modules_import_their_framework():
    """TensorFlow is imported by its two modules alone, JAX by its one: the renderer is on
    keras.ops, so a build on JAX never needs TensorFlow (and the reverse)."""
    allowed = {
        "tensorflow": {"_tensorflow.py", "_backend_tensorflow.py"},
        "jax": {"_backend_jax.py"},
    }
    for path in sorted((ROOT / "atlas").rglob("*.py")):
        imported = _imported(path)
        for framework, modules in allowed.items():
            if framework in imported:
                assert path.name in modules, f"{path.relative_to(ROOT)} imports {framework}"
