"""Where atlas finds the files it ships: its templates and the embedded default site.

Two layouts hold the same files:

- an installed wheel: ``atlas/templates/`` and ``atlas/default_site/`` (the default
  ``site_config.yaml``, its ``notes/``, its ``data/`` and the GitHub Pages workflow);
- a checkout (``pip install -e .`` or ``PYTHONPATH``): ``templates/`` and the repository
  root, beside the ``atlas/`` package, which is where the wheel's files are taken from
  (see ``[tool.setuptools]`` in ``pyproject.toml``).

In config files, a path written ``atlas:data/...`` means a file of the embedded default
site of the installed atlas (:func:`shipped_path`), so a project made by ``atlas new``
builds offline without a copy of the 12 MB of data.
"""

from __future__ import annotations

import logging
from pathlib import Path

from atlas.errors import AtlasError

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parents[1]  # atlas/, beside project/
CHECKOUT = PACKAGE.parent
SHIPPED_PREFIX = "atlas:"


def _located(installed: Path, checkout: Path, probe: str, what: str) -> Path:
    """The installed folder if present, else the checkout's; an error if neither holds
    ``probe`` (a broken installation)."""
    for folder in (installed, checkout):
        if (folder / probe).exists():
            return folder
    raise AtlasError(
        f"atlas's {what} are missing (looked for {installed / probe} and "
        f"{checkout / probe}); reinstall atlas (pip install --force-reinstall)"
    )


def templates() -> Path:
    """The folder of atlas's own page templates (and their ``static/`` files)."""
    return _located(PACKAGE / "templates", CHECKOUT / "templates", "base.html", "templates")


def default_site() -> Path:
    """The folder of the embedded default site: ``site_config.yaml``, ``notes/``,
    ``data/`` and ``docs/github-pages.yml``."""
    return _located(PACKAGE / "default_site", CHECKOUT, "site_config.yaml", "default site files")


def is_shipped(value: str) -> bool:
    """Whether a config path is written in the ``atlas:`` form."""
    return value.startswith(SHIPPED_PREFIX)


def shipped_path(value: str) -> Path:
    """The file an ``atlas:REL`` config path names: REL inside :func:`default_site`.

    Raises:
        ValueError: REL is absolute or climbs out of the default site with ``..``.
    """
    relative = Path(value[len(SHIPPED_PREFIX) :])
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(
            f"{SHIPPED_PREFIX} paths name a file inside atlas's default site, "
            "e.g. atlas:data/breeds.json"
        )
    return default_site() / relative
