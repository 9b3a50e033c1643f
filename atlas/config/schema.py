"""Reading a YAML mapping against declared keys, collecting every problem with its line.

The machinery behind :mod:`atlas.config.load`: ``KeyLines`` maps key paths such as
``models[1].layers[0]`` to YAML line numbers, and ``Checker`` reads values of declared
types, resolving paths relative to the config file, and records ``(key path, message)``
problems instead of stopping at the first.
"""

from __future__ import annotations

import difflib
import errno
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from atlas.errors import AtlasError
from atlas.project import resources


class KeyLines:
    """Key path -> YAML line number, from the composed node tree."""

    def __init__(self, text: str):
        self.lines: dict[str, int] = {}
        self._seen: set[int] = set()
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except (yaml.YAMLError, RecursionError):
            return
        if node is not None:
            self._walk(node, "")

    def _walk(self, node: yaml.Node, path: str) -> None:
        self.lines[path] = node.start_mark.line + 1
        if id(node) in self._seen:
            return  # an alias: walking it again could take exponential time
        self._seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                self.lines[child] = key.start_mark.line + 1
                self._walk(value, child)
                self.lines[child] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, f"{path}[{index}]")

    def at(self, path: str) -> str:
        parent = path
        while parent:
            if parent in self.lines:
                return f"{path} (line {self.lines[parent]})"
            shorter = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", parent)
            if shorter == parent:  # a top-level key the file lacks: no line to give
                break
            parent = shorter
        return ""


class Checker:
    """Collects problems while reading a mapping against its declared keys."""

    def __init__(self, lines: KeyLines, root: Path):
        self.lines = lines
        self.root = root
        self.problems: list[tuple[str, str]] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append((self.lines.at(path) or path, message))

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping, got {kind_of(value)}")
            return {}
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                where = f"{path}.{key}" if path else str(key)
                self.problem(
                    where, f"unknown key{suggestion}; expected one of: " + ", ".join(allowed)
                )
        return value

    def typed(
        self,
        data: dict,
        key: str,
        path: str,
        kind: type | tuple,
        default: Any,
        required: bool = False,
    ) -> Any:
        where = f"{path}.{key}" if path else key
        if key not in data or data[key] is None:
            if required:
                self.problem(where, "is required")
            return default
        value = data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            self.problem(where, f"expected {_names(kinds)}, got {value!r}")
            return default
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kinds):
            self.problem(where, f"expected {_names(kinds)}, got {kind_of(value)} {value!r}")
            return default
        return value

    def resolve(self, value: str, where: str) -> Path | None:
        """``value`` relative to the config's folder, or None (a problem) if unusable.

        ``atlas:REL`` names REL in the default site shipped with atlas (read-only: refused
        for the folders atlas writes, ``site.output``, ``cache`` and ``*.fetch_to``).
        """
        try:
            if resources.is_shipped(value):
                if where in ("site.output", "cache") or where.endswith("fetch_to"):
                    self.problem(
                        where,
                        f"{value!r}: atlas: paths name atlas's own read-only "
                        "files; atlas cannot write there",
                    )
                    return None
                return resources.shipped_path(value).resolve()
            return (self.root / Path(value).expanduser()).resolve()
        except AtlasError as error:  # a broken installation without its default site
            self.problem(where, str(error))
        except RuntimeError:  # "~user" of an unknown user
            self.problem(where, f"cannot expand {value!r}: no such user")
        except (OSError, ValueError) as error:  # e.g. an embedded NUL character
            self.problem(where, f"not a usable path: {value!r} ({why(error)})")
        return None

    def path(
        self,
        data: dict,
        key: str,
        path: str,
        must_exist: bool = True,
        required: bool = False,
        is_dir: bool = False,
    ) -> Path | None:
        value = self.typed(data, key, path, str, None, required=required)
        if value is None:
            return None
        where = f"{path}.{key}"
        resolved = self.resolve(value, where)
        if resolved is None or not must_exist:
            return resolved
        found, folder, error = lookup(resolved)
        if error:
            self.problem(where, f"cannot use {value!r}: {error}")
        elif not found:
            self.problem(
                where, f"file not found: {value} (looked in {resolved})" + _siblings_hint(resolved)
            )
        elif is_dir and not folder:
            self.problem(where, f"expected a folder: {value}")
        return resolved


def _siblings_hint(path: Path) -> str:
    """`` (did you mean NAME?)`` for the entry beside a missing path most like its name."""
    try:
        names = [entry.name for entry in path.parent.iterdir()]
    except (OSError, ValueError):
        return ""
    hint = difflib.get_close_matches(path.name, names, n=1)
    return f" (did you mean {hint[0]}?)" if hint else ""


def why(error: BaseException) -> str:
    """The short reason an OSError (or other error) gives."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def lookup(path: Path) -> tuple[bool, bool, str | None]:
    """(exists, is a folder, why it cannot be looked up) without raising."""
    try:
        status = path.stat()
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return False, False, None
        return False, False, why(error)
    except ValueError as error:
        return False, False, why(error)
    return True, stat.S_ISDIR(status.st_mode), None


def kind_of(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)


def _names(kinds: tuple) -> str:
    return " or ".join(
        {
            str: "a string",
            int: "an integer",
            float: "a number",
            bool: "true/false",
            dict: "a mapping",
            list: "a list",
        }[k]
        for k in kinds
    )
