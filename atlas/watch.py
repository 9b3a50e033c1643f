"""``atlas serve --watch``: build, serve, and rebuild when the config, notes or templates
change; open pages reload themselves (the script :class:`atlas.site.serve.Reloader` injects).

The files are polled (no dependency, works on every file system): the config file, the
notes files it names, the ``site.templates`` folder and atlas's own templates. A rebuild
that fails is reported in one line and the previous site stays served; the next change
tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from atlas.build import BuildOptions, BuildReport, build
from atlas.config.load import load_config
from atlas.errors import AtlasError
from atlas.project import resources
from atlas.site.serve import Reloader, make_server

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]


def watched(config_path: Path) -> tuple[list[Path], list[Path]]:
    """(files, folders) whose changes trigger a rebuild; only the config file itself while
    the config cannot be loaded."""
    files, folders = [Path(config_path)], []
    try:
        config = load_config(config_path)
        folders.append(resources.templates())
    except AtlasError:
        return files, folders
    files += [n for n in [config.site.notes, *(m.notes for m in config.models)] if n]
    if config.site.templates:
        folders.append(config.site.templates)
    return files, folders


def fingerprint(files: list[Path], folders: list[Path]) -> Fingerprint:
    """(path, mtime, size) of every watched file; a missing file counts as (-1, -1)."""
    found = []
    for path in files + sorted(p for folder in folders for p in folder.rglob("*")):
        try:
            status = path.stat()
        except OSError:
            found.append((str(path), -1, -1))
            continue
        if not path.is_dir():
            found.append((str(path), status.st_mtime_ns, status.st_size))
    return tuple(found)


class Watcher(threading.Thread):
    """Polls the watched files and calls ``rebuild`` after each change."""

    def __init__(self, config_path: Path, rebuild: Callable[[], None], interval: float = 0.5):
        super().__init__(name="atlas-watch", daemon=True)
        self.config_path = Path(config_path)
        self.rebuild = rebuild
        self.interval = interval
        self.stopped = threading.Event()
        # Taken now, not when the thread starts: a change made meanwhile is not missed.
        self.seen = fingerprint(*watched(self.config_path))

    def run(self) -> None:
        seen = self.seen
        while not self.stopped.wait(self.interval):
            now = fingerprint(*watched(self.config_path))
            if now != seen:
                self.stopped.wait(self.interval)  # let an editor finish saving
                seen = fingerprint(*watched(self.config_path))
                self.rebuild()

    def stop(self) -> None:
        self.stopped.set()


class LiveSite:
    """The site of one config, built, served and rebuilt on change.

    Args:
        config_path: the site config.
        bind, port: where to listen (127.0.0.1 unless asked; port 0 picks a free one).
        options: build options for the first build and every rebuild.
        interval: seconds between polls.
    """

    def __init__(
        self,
        config_path: Path,
        bind: str = "127.0.0.1",
        port: int = 8000,
        options: BuildOptions | None = None,
        interval: float = 0.5,
    ):
        self.config_path = Path(config_path)
        self.options = options = options or BuildOptions()
        self.reloader = Reloader()
        # Watched from before the first build: a change during it triggers a rebuild.
        self.watcher = Watcher(self.config_path, self.rebuild, interval)
        report = build(self.config_path, options)  # a failing first build is the user's error
        self.server = make_server(report.output, bind, port, self.reloader)
        self.rebuilds = 0
        self._serving: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def rebuild(self) -> BuildReport | None:
        """Build again; on success pages reload, on failure one line and the old site."""
        log.info("change detected: rebuilding")
        try:
            report = build(
                self.config_path,
                BuildOptions(progress=False, max_steps=self.options.max_steps, wait=30.0),
            )
        except AtlasError as error:
            log.error(
                "rebuild failed (the previous site is still served): %s",
                str(error).replace("\n", " "),
            )
            return None
        except Exception as error:  # e.g. a template error: keep watching, say it in a line
            log.debug("rebuild failed", exc_info=True)
            log.error(
                "rebuild failed (the previous site is still served): %s: %s",
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
            )
            return None
        self.rebuilds += 1
        log.info("rebuilt: %d pages; reloading open pages", report.pages)
        self.reloader.bump()
        return report

    def start(self) -> None:
        """Serve and watch in background threads."""
        self._serving = threading.Thread(
            target=self.server.serve_forever, name="atlas-serve", daemon=True
        )
        self._serving.start()
        self.watcher.start()

    def serve_forever(self) -> None:
        """Watch in the background and serve until Ctrl-C."""
        try:  # Ctrl-C may come as soon as the address is printed
            self.watcher.start()
            print(
                f"serving {self.url} and rebuilding on changes to the config, notes and "
                "templates (Ctrl-C stops)"
            )
            self.server.serve_forever()
        except KeyboardInterrupt:
            print("\nstopped")
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop watching and serving (a rebuild under way finishes in its thread)."""
        self.watcher.stop()
        if self._serving is not None:  # serving in the background: end that loop
            self.server.shutdown()
            self._serving.join()
        self.server.server_close()
