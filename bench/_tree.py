"""Makes a bench script measure the atlas of the checkout it lives in.

Imported first by the scripts in ``bench/`` (``import _tree``: their folder is the first
entry of ``sys.path`` when run as ``python bench/NAME.py``). It puts this checkout on
``sys.path`` and takes off ``sys.meta_path`` the import finder of an editable install of
keras-atlas (``pip install -e``). That finder maps ``atlas`` to the checkout it was
installed from, ahead of ``sys.path`` and ``PYTHONPATH``: without this, a script run from
another worktree (a "before" commit, measured side by side) silently measures the
installed checkout instead. Exits with one line if ``atlas`` still comes from elsewhere.

The processes some scripts start (``cache.py``, ``distributed.py``, ``predict.py``,
``plan_accuracy.py``, ``atlas_cost.py`` build sites in subprocesses) get the finder again
from site-packages: compare commits with those from the installed checkout, or install
the one to measure.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.meta_path[:] = [
    finder for finder in sys.meta_path if "keras_atlas" not in getattr(finder, "__module__", "")
]
for name in [n for n in sys.modules if n == "atlas" or n.startswith("atlas.")]:
    del sys.modules[name]  # imported before this module: from the installed checkout

import atlas  # noqa: E402

if not Path(atlas.__file__).resolve().is_relative_to(ROOT):
    sys.exit(f"bench: atlas comes from {atlas.__file__}, not from this checkout ({ROOT})")
