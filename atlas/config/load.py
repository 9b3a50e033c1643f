"""``site_config.yaml``: a declared schema, validated completely before any work starts.

Every problem is collected as a ``(key path, message)`` pair, with the YAML line where
known, and reported together in one :class:`~atlas.errors.ConfigError` (exit code 2).
Nothing falls back to a default silently: an unknown key is an error with a suggestion.
Paths in the file are relative to the file's folder.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import yaml

from atlas.config.atlas import AtlasSettings, parse_atlas
from atlas.config.dataset import parse_dataset
from atlas.config.models import _models, _render
from atlas.config.schema import Checker, KeyLines, kind_of, why
from atlas.config.settings import Config, RenderSettings, SiteConfig
from atlas.config.sizes import parse_size
from atlas.errors import ConfigError
from atlas.project.folders import CACHE_MARKER, SITE_MARKER, folder_problem

log = logging.getLogger(__name__)


def load_config(path: Path | str) -> Config:
    """Read and validate a site config file.

    Args:
        path: the YAML file.

    Returns:
        The validated configuration, with every path resolved.

    Raises:
        ConfigError: listing every problem found, each with its key path and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([("", f"config file not found: {path}")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([("", f"cannot read config file {path}: {error}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError([(where, f"invalid YAML: {problem}")], source=str(path)) from None
    except (ValueError, RecursionError) as error:  # e.g. the date 2024-13-45, deep nesting
        raise ConfigError([("", f"invalid YAML value: {why(error)}")], source=str(path)) from None
    check = Checker(KeyLines(text), path.resolve().parent)
    if not isinstance(data, dict):
        raise ConfigError(
            [("", f"expected a mapping at the top level, got {kind_of(data)}")], source=str(path)
        )
    check.mapping(data, "", ("site", "cache", "dataset", "render", "atlas", "models"))
    site = _site(check, data.get("site"))
    cache = _cache(check, check.typed(data, "cache", "", str, ".atlas-cache"))
    dataset = parse_dataset(check, data.get("dataset"))
    render = _render(check, data.get("render"), "render", RenderSettings())
    atlas = parse_atlas(check, data.get("atlas"), "atlas", AtlasSettings())
    models = _models(check, data.get("models"), render, atlas)
    if not any(key.startswith(("site.output", "cache")) for key, _ in check.problems):
        _check_output(
            check, site.output, path.resolve().parent, cache if isinstance(cache, Path) else None
        )
    if check.problems:
        raise ConfigError(check.problems, source=str(path))
    return Config(
        path=path.resolve(),
        site=site,
        cache=cache,
        dataset=dataset,
        models=models,
        backend=render.backend,
    )


def _site(check: Checker, value: Any) -> SiteConfig:
    data = check.mapping(
        value,
        "site",
        ("title", "output", "base_path", "notes", "templates", "timestamp", "max_size"),
    )
    base_path = check.typed(data, "base_path", "site", str, "")
    output = check.resolve(check.typed(data, "output", "site", str, "_site"), "site.output")
    return SiteConfig(
        title=check.typed(data, "title", "site", str, "atlas"),
        output=output or check.root / "_site",  # unusable: already a problem
        base_path=base_path,
        notes=check.path(data, "notes", "site"),
        templates=check.path(data, "templates", "site", is_dir=True),
        timestamp=check.typed(data, "timestamp", "site", bool, False),
        max_size=_max_size(check, data.get("max_size", "1GB")),
    )


def _max_size(check: Checker, value: Any) -> int:
    try:
        size = parse_size(value)
    except (ValueError, TypeError) as error:
        check.problem("site.max_size", str(error))
        return 10**9
    if size <= 0:
        check.problem("site.max_size", f"must be more than 0, got {value!r}")
    return size


def _cache(check: Checker, value: str) -> Path | str | None:
    """A folder (relative to the config file) or an fsspec URL, kept as written."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
        if value.split("://", 1)[1].strip("/") == "":
            check.problem("cache", f"{value!r} names no bucket or folder")
        return value.rstrip("/")
    return check.resolve(value, "cache")


def _check_output(check: Checker, output: Path, project: Path, cache: Path | None) -> None:
    """The two folders atlas writes: never a user's folder (see atlas.project.folders), never
    one inside the other."""
    output_problem = folder_problem("site.output", output, project, SITE_MARKER)
    cache_problem = None if cache is None else folder_problem("cache", cache, project, CACHE_MARKER)
    if output_problem:
        check.problem("site.output", output_problem)
    if cache_problem:
        check.problem("cache", cache_problem)
    if output_problem or cache_problem or cache is None:
        return
    if output in cache.parents or output == cache:
        check.problem("site.output", "the output folder must not contain the cache folder")
    elif cache in output.parents:
        check.problem("site.output", "the output folder must not be inside the cache folder")


def fetch_folder(path: Path | str) -> Path:
    """``dataset.fetch_to`` of a config whose dataset may not exist yet (for fetch-data).

    Raises:
        ConfigError: the file cannot be read or has no ``dataset.fetch_to``.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError) as error:
        raise ConfigError([("", f"cannot read {path}: {error}")]) from None
    dataset = data.get("dataset") if isinstance(data, dict) else None
    value = dataset.get("fetch_to") if isinstance(dataset, dict) else None
    if not isinstance(value, str):
        raise ConfigError(
            [("dataset.fetch_to", "is required for fetch-data -c (or use --to)")], source=str(path)
        )
    check = Checker(KeyLines(""), path.resolve().parent)
    folder = check.resolve(value, "dataset.fetch_to")
    if folder is None:
        raise ConfigError(check.problems, source=str(path))
    return folder
