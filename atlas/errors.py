"""The one exception family atlas raises for problems a user can fix.

The CLI maps each to a one-line message and an exit code; anything else is a bug and
gets a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUILD_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class AtlasError(Exception):
    """A problem the user can act on: bad input, a missing file, an offline download."""

    exit_code = EXIT_BUILD_FAILED


class ConfigError(AtlasError):
    """The configuration (or the command line) is invalid; nothing was rendered or written.

    Args:
        problems: every ``(key path, message)`` pair found, reported together.
        source: the config file the problems are in, if any.
    """

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            key, message = self.problems[0]
            text = f"{where}{key}: {message}" if key else f"{where}{message}"
        else:
            lines = [f"{where}{len(self.problems)} problems:"]
            lines += [
                f"  - {key}: {message}" if key else f"  - {message}"
                for key, message in self.problems
            ]
            text = "\n".join(lines)
        super().__init__(text)


class ModelError(AtlasError):
    """A model cannot be built or its weights cannot be loaded."""


class BadImageError(AtlasError):
    """One image cannot be read; the build skips it with a warning."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CacheError(AtlasError):
    """The cache folder cannot be used (read-only, full disk, locked by another build)."""
