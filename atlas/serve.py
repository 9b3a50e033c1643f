"""``atlas serve``: preview the built site over HTTP on this machine only (by default)."""

from __future__ import annotations

import functools
import http.server
import logging
import os
from pathlib import Path

from atlas.errors import AtlasError

log = logging.getLogger(__name__)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files of one folder; the standard handler already refuses paths outside it."""

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


def make_server(site: Path, bind: str = "127.0.0.1", port: int = 8000
                ) -> http.server.ThreadingHTTPServer:
    """An HTTP server for the site folder (port 0 picks a free port)."""
    site = Path(site).resolve()
    if not (site / "index.html").is_file():
        raise AtlasError(f"no site in {site}: run `atlas build` first")
    handler = functools.partial(_Handler, directory=str(site))
    try:
        return http.server.ThreadingHTTPServer((bind, port), handler)
    except OSError as error:
        raise AtlasError(f"cannot listen on {bind}:{port}: {error.strerror}") from None


def serve(site: Path, bind: str = "127.0.0.1", port: int = 8000) -> None:
    server = make_server(site, bind, port)
    host, real_port = server.server_address[:2]
    print(f"serving {site} on http://{host}:{real_port}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
