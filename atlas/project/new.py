"""``atlas new DIR``: a project folder that builds the embedded default site offline.

Every file is derived from the default site shipped with atlas (``resources.default_site``)
so the scaffold follows it when the default changes: its ``site_config.yaml`` with each
``data/...`` path turned into ``atlas:data/...`` (the installed package's copy; kept as
``data/...`` with ``--copy-data``, which copies the data), its ``notes/``, a
``.gitignore`` for the site and the cache, and the GitHub Pages workflow. No existing file
is ever overwritten.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from atlas import __version__
from atlas.errors import AtlasError, ConfigError
from atlas.project import resources

log = logging.getLogger(__name__)

CONFIG = "site_config.yaml"
WORKFLOW = Path(".github/workflows/pages.yml")
# A value that is a path into the default site's data/ folder (a key, then the path).
_DATA_VALUE = re.compile(r"^(\s*(?:-\s+)?[A-Za-z_]+:\s+)([\"']?)data/", re.MULTILINE)

HEADER = f"""\
# atlas site configuration, made by `atlas new` (atlas {__version__}); `atlas build` renders
# it. Every key is documented in atlas's README ("Configuration"). Paths are relative to
# this file, except those written atlas:data/..., which name the data shipped inside the
# installed atlas: the MobileNet weights, the ImageNet class index, the breed map and the
# 111-photo Oxford-IIIT Pet sample. So this project builds offline with nothing else
# installed (`atlas new --copy-data` copies that data into data/ instead). Replace the
# model and the photos with your own.
"""


@dataclass
class Scaffold:
    """What ``atlas new`` wrote, and which files it found and kept as they were."""

    folder: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def scaffold_config(copy_data: bool) -> str:
    """The project's ``site_config.yaml``: the default one, its paths made to work from
    any folder (``atlas:data/...``) unless the data is copied beside it."""
    source = resources.default_site() / CONFIG
    text = source.read_text(encoding="utf-8")
    body = "".join(line for line in text.splitlines(keepends=True)[_header_lines(text) :])
    if not copy_data:
        body = _DATA_VALUE.sub(lambda m: f"{m[1]}{m[2]}{resources.SHIPPED_PREFIX}data/", body)
    left = [value for value in _strings(yaml.safe_load(body)) if value.startswith("data/")]
    if left and not copy_data:  # a path form the rewrite does not know: a bug, not the user's
        raise AtlasError(f"atlas new cannot rewrite {left[0]!r} of {source}")
    return HEADER + body


def _header_lines(text: str) -> int:
    lines = text.splitlines()
    count = 0
    while count < len(lines) and lines[count].startswith("#"):
        count += 1
    return count


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return [value] if isinstance(value, str) else []


def scaffold_workflow() -> str:
    """The GitHub Pages workflow of ``docs/github-pages.yml``, made for a project that
    installs atlas rather than being its checkout."""
    text = (resources.default_site() / "docs" / "github-pages.yml").read_text(encoding="utf-8")
    install = "      - run: pip install .\n"
    check = "      - run: python tests/sitecheck.py _site\n"
    if install not in text:
        raise AtlasError("atlas new: docs/github-pages.yml has no `pip install .` step")
    text = text.replace(
        install,
        f'      - run: pip install "keras-atlas=={__version__}"  # or '
        "pip install git+<the atlas repository>\n",
    )
    text = text.replace(check, "")
    lines = text.splitlines(keepends=True)
    return (
        "# Builds this atlas and publishes it with GitHub Pages (made by `atlas new`).\n"
        "# Settings -> Pages -> Source: GitHub Actions.\n" + "".join(lines[_header_lines(text) :])
    )


def _gitignore(config_text: str) -> str:
    data = yaml.safe_load(config_text) or {}
    output = (data.get("site") or {}).get("output", "_site")
    cache = data.get("cache", ".atlas-cache")
    return (
        "# made by atlas new: the built site and the asset cache are rebuilt by "
        f"atlas build\n/{output.strip('/')}/\n/{cache.strip('/')}/\n"
    )


def new_project(
    folder: Path, *, copy_data: bool = False, force: bool = False, config_text: str | None = None
) -> Scaffold:
    """Write a new atlas project into ``folder``.

    Args:
        folder: created if missing; must be empty unless ``force``.
        copy_data: copy the default data into ``folder/data`` (about 12 MB).
        force: add the files to a folder that is not empty; existing files are kept.
        config_text: the project's config (``atlas new --model --photos``); None: the
            default site's, with its notes.

    Raises:
        ConfigError: ``folder`` is a file, or not empty without ``force`` (exit 2).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError([("", f"{folder} exists and is not a folder")])
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise ConfigError(
            [
                (
                    "",
                    f"{folder} is not empty; choose a new folder, or add "
                    "--force to add atlas's files (existing files are kept)",
                )
            ]
        )
    result = Scaffold(folder)
    config = config_text if config_text is not None else scaffold_config(copy_data)
    files: dict[Path, str] = {
        Path(CONFIG): config,
        Path(".gitignore"): _gitignore(config),
        WORKFLOW: scaffold_workflow(),
    }
    default = resources.default_site()
    for note in sorted((default / "notes").glob("*.md")) if config_text is None else []:
        files[Path("notes") / note.name] = note.read_text(encoding="utf-8")
    for relative, text in files.items():
        _write_new(folder / relative, text.encode("utf-8"), result)
    if copy_data:
        for source in sorted((default / "data").rglob("*")):
            if source.is_file():
                _write_new(folder / "data" / source.relative_to(default / "data"), source, result)
    return result


def _write_new(target: Path, content: bytes | Path, result: Scaffold) -> None:
    """Create ``target`` with ``content`` (bytes, or a file to copy) unless it exists."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(target, "xb") as handle:  # "x": never overwrite, even in a race
            if isinstance(content, Path):
                with open(content, "rb") as source:
                    shutil.copyfileobj(source, handle)
            else:
                handle.write(content)
    except FileExistsError:
        result.kept.append(target)
        log.info("kept %s (it exists)", target)
        return
    result.written.append(target)
