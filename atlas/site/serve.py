"""``atlas serve``: preview the built site over HTTP on this machine only (by default).

With a :class:`Reloader` (``atlas serve --watch``, see :mod:`atlas.watch`), every HTML page
is served with a small script that polls ``/__atlas__/version`` and reloads the page when
a rebuild has changed the version, as ``mkdocs serve`` does.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import logging
import os
import threading
from pathlib import Path

from atlas.errors import AtlasError

log = logging.getLogger(__name__)


VERSION_PATH = "/__atlas__/version"
_SCRIPT = """<script>/* atlas serve --watch: reload after a rebuild */
(function () {
  var seen = %d;
  function poll() {
    fetch("%s", {cache: "no-store"}).then(function (r) { return r.json(); })
      .then(function (d) { if (d.version !== seen) { location.reload(); } })
      .catch(function () {}).then(function () { setTimeout(poll, 1000); });
  }
  setTimeout(poll, 1000);
})();
</script>
"""


class Reloader:
    """The site's version: a counter that each successful rebuild increases."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.version = 0

    def bump(self) -> int:
        with self._lock:
            self.version += 1
            return self.version

    def inject(self, html: bytes) -> bytes:
        """The page with the polling script before ``</body>`` (or at its end)."""
        script = (_SCRIPT % (self.version, VERSION_PATH)).encode()
        at = html.rfind(b"</body>")
        return html + script if at < 0 else html[:at] + script + html[at:]


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files of one folder; the standard handler already refuses paths outside it."""

    def __init__(self, *args, reloader: Reloader | None = None, **kwargs) -> None:
        self.reloader = reloader  # set first: the base class handles the request at once
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.reloader is not None and self.path.split("?")[0] == VERSION_PATH:
            self._send(
                200, "application/json", json.dumps({"version": self.reloader.version}).encode()
            )
            return
        super().do_GET()

    def send_head(self):
        """As the standard handler, but HTML pages get the reload script when watching."""
        if self.reloader is None:
            return super().send_head()
        path = self.translate_path(self.path)
        if os.path.isdir(path) and self.path.split("?")[0].endswith("/"):
            path = os.path.join(path, "index.html")
        if not path.endswith(".html") or not os.path.isfile(path):
            return super().send_head()  # other files, redirects, 404
        try:
            with open(path, "rb") as handle:
                body = self.reloader.inject(handle.read())
        except OSError:
            return super().send_head()
        self._send(200, "text/html; charset=utf-8", body, write=False)
        return io.BytesIO(body)

    def _send(self, code: int, kind: str, body: bytes, write: bool = True) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if write and self.command != "HEAD":
            self.wfile.write(body)

    def translate_path(self, path: str) -> str:
        # The standard handler keeps ".." out but follows symbolic links: a link inside
        # the site must not serve a file from elsewhere.
        local = super().translate_path(path)
        root = os.path.realpath(self.directory)
        real = os.path.realpath(local)
        if real != root and not real.startswith(root + os.sep):
            return os.path.join(root, "index.html", "outside")  # cannot exist: a 404
        return local

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s - %s", self.address_string(), format % args)

    def send_error(self, code, message=None, explain=None):
        not_found = Path(self.directory) / "404.html"
        if code == 404 and not_found.is_file():
            body = not_found.read_bytes()
            self.send_response(404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        super().send_error(code, message, explain)


def make_server(
    site: Path, bind: str = "127.0.0.1", port: int = 8000, reloader: Reloader | None = None
) -> http.server.ThreadingHTTPServer:
    """An HTTP server for the site folder (port 0 picks a free port).

    Args:
        reloader: when given, pages reload themselves after each rebuild.
    """
    site = Path(site).resolve()
    if not (site / "index.html").is_file():
        raise AtlasError(f"no site in {site}: run `atlas build` first")
    handler = functools.partial(_Handler, directory=str(site), reloader=reloader)
    try:
        server = http.server.ThreadingHTTPServer((bind, port), handler)
    except (OSError, OverflowError) as error:  # OverflowError: a port over 65535
        raise AtlasError(
            f"cannot listen on {bind}:{port}: {getattr(error, 'strerror', None) or error}"
        ) from None
    server.daemon_threads = True
    return server


def serve(site: Path, bind: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the site until Ctrl-C."""
    server = make_server(site, bind, port)
    host, real_port = server.server_address[:2]
    try:  # Ctrl-C may come as soon as the address is printed
        print(f"serving {site} on http://{host}:{real_port}/ (Ctrl-C stops)")
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nstopped")
    finally:
        server.server_close()
