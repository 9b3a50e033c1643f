"""Tests for atlas.data.fetch against a local HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atlas.data.fetch import ArchiveInfo, fetch_dataset
from atlas.data.masks import find_trimaps
from atlas.errors import AtlasError

ARCHIVES = ("images.tar.gz", "annotations.tar.gz")
TIMEOUT = 5


@dataclass
class ServerState:
    """What the test server serves and what it was asked."""

    files: dict[str, bytes] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)  # first request only
    honour_range: bool = True
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    base_url: str = ""


class _Handler(BaseHTTPRequestHandler):
    state: ServerState

    def do_GET(self) -> None:  # the name http.server dispatches to
        state = self.server.state  # type: ignore[attr-defined]
        name = self.path.rsplit("/", 1)[-1]
        wanted = self.headers.get("Range")
        state.requests.append((name, wanted))
        data = state.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if wanted and state.honour_range:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = state.drop_after.pop(name, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ServerState]:
    state = ServerState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = state  # type: ignore[attr-defined]
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/data/"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(TIMEOUT)


def _jpeg_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _tar(entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
                continue
            name, data = entry
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.array([[1, 2], [3, 1]], np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = {f"images/{name}.jpg": _jpeg_bytes(i) for i, name in enumerate(["Abyssinian_1", "pug_2"])}
LIST_TXT = b"#Image CLASS-ID SPECIES BREED ID\nAbyssinian_1 1 1 1\npug_2 30 2 20\n"
ANNOTATIONS = {
    "annotations/list.txt": LIST_TXT,
    "annotations/trainval.txt": b"Abyssinian_1 1 1 1\n",
    "annotations/test.txt": b"pug_2 30 2 20\n",
    # the trimaps atlas scores heat maps against (the real archive has one per photo)
    "annotations/trimaps/Abyssinian_1.png": _png_bytes(),
}


def _serve_dataset(server: ServerState) -> dict[str, ArchiveInfo]:
    server.files["images.tar.gz"] = _tar(list(IMAGES.items()))
    server.files["annotations.tar.gz"] = _tar(list(ANNOTATIONS.items()))
    return {
        name: ArchiveInfo(len(data), hashlib.sha256(data).hexdigest())
        for name, data in server.files.items()
    }


def _fetch(server: ServerState, dest: Path, **options: object) -> Path:
    options.setdefault("progress", False)
    return fetch_dataset(dest, base_url=server.base_url, timeout=TIMEOUT, **options)


def _assert_extracted(dest: Path) -> None:
    for name, data in {**IMAGES, **ANNOTATIONS}.items():
        assert (dest / name).read_bytes() == data, name


def test_happy_path_then_idempotent(
    server: ServerState, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = _serve_dataset(server)
    dest = tmp_path / "pets"
    assert _fetch(server, dest, expected=expected) == dest
    _assert_extracted(dest)
    assert [name for name, _ in server.requests] == list(ARCHIVES)
    assert not list(dest.glob("*.tar.gz*"))  # archives removed after extraction
    assert (dest / ".complete-images").is_file() and (dest / ".complete-annotations").is_file()
    found = find_trimaps(dest / "annotations" / "list.txt", ["Abyssinian_1", "pug_2"])
    assert found == {"Abyssinian_1": dest / "annotations" / "trimaps" / "Abyssinian_1.png"}

    server.requests.clear()
    caplog.set_level("INFO", logger="atlas.data.fetch")
    _fetch(server, dest, expected=expected)
    assert server.requests == []
    assert sum("already present" in record.getMessage() for record in caplog.records) == 2


def test_size_check_only_when_no_checksum(server: ServerState, tmp_path: Path) -> None:
    _serve_dataset(server)
    _fetch(server, tmp_path / "pets", expected={}, keep_archives=True)
    _assert_extracted(tmp_path / "pets")
    assert (tmp_path / "pets" / "images.tar.gz").read_bytes() == server.files["images.tar.gz"]


@pytest.mark.parametrize("honour_range", [True, False])
def test_dropped_connection_is_resumed(
    server: ServerState, tmp_path: Path, honour_range: bool
) -> None:
    expected = _serve_dataset(server)
    size = len(server.files["images.tar.gz"])
    server.drop_after["images.tar.gz"] = size // 3
    server.honour_range = honour_range
    _fetch(server, tmp_path / "pets", expected=expected)
    _assert_extracted(tmp_path / "pets")
    image_requests = [wanted for name, wanted in server.requests if name == "images.tar.gz"]
    assert image_requests == [None, f"bytes={size // 3}-"]


def test_interrupted_run_is_resumed_by_the_next_run(server: ServerState, tmp_path: Path) -> None:
    expected = _serve_dataset(server)
    cut = len(server.files["images.tar.gz"]) // 2
    server.drop_after["images.tar.gz"] = cut
    dest = tmp_path / "pets"
    with pytest.raises(AtlasError, match="run the command again to resume"):
        _fetch(server, dest, expected=expected, retries=0)
    assert (dest / "images.tar.gz.part").stat().st_size == cut
    assert not (dest / "images").exists()

    server.requests.clear()
    _fetch(server, dest, expected=expected)
    assert server.requests[0] == ("images.tar.gz", f"bytes={cut}-")
    _assert_extracted(dest)


def test_wrong_checksum_extracts_nothing(server: ServerState, tmp_path: Path) -> None:
    expected = _serve_dataset(server)
    expected["images.tar.gz"] = ArchiveInfo(expected["images.tar.gz"].size, "0" * 64)
    dest = tmp_path / "pets"
    with pytest.raises(AtlasError, match="sha256 mismatch") as caught:
        _fetch(server, dest, expected=expected)
    assert "images.tar.gz" in str(caught.value)
    assert sorted(path.name for path in dest.iterdir()) == []


def test_wrong_size_is_refused(server: ServerState, tmp_path: Path) -> None:
    expected = _serve_dataset(server)
    expected["images.tar.gz"] = ArchiveInfo(size=12345)
    with pytest.raises(AtlasError, match="expected 12345"):
        _fetch(server, tmp_path / "pets", expected=expected)
    assert not (tmp_path / "pets" / "images").exists()


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("entries", "member"),
    [
        ([("images/ok.jpg", b"x"), ("../evil.txt", b"owned")], "../evil.txt"),
        ([("images/ok.jpg", b"x"), ("images/../../evil.txt", b"owned")], "images/../../evil.txt"),
        ([("/tmp/atlas-test-evil.txt", b"owned")], "/tmp/atlas-test-evil.txt"),
        ([_link("images/etc", "/etc"), ("images/etc/evil.txt", b"owned")], "images/etc"),
        ([_link("images/up", "../../..")], "images/up"),
        ([_link("images/hard", "../evil.txt", tarfile.LNKTYPE)], "images/hard"),
    ],
)
def test_escaping_members_are_refused(
    server: ServerState, tmp_path: Path, entries: list, member: str
) -> None:
    server.files["images.tar.gz"] = _tar(entries)
    dest = tmp_path / "sandbox" / "pets"
    with pytest.raises(AtlasError) as caught:
        _fetch(server, dest, expected={}, archives=("images.tar.gz",))
    message = str(caught.value)
    assert "images.tar.gz" in message and repr(member) in message
    assert not (tmp_path / "sandbox" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/atlas-test-evil.txt").exists()
    assert not (dest / "images").exists()  # checked before anything is written
    assert not (dest / ".complete-images").exists()


def test_corrupt_archive(server: ServerState, tmp_path: Path) -> None:
    server.files["images.tar.gz"] = b"\x1f\x8b" + b"not really gzip" * 10
    with pytest.raises(AtlasError, match="images.tar.gz: cannot extract"):
        _fetch(server, tmp_path / "pets", expected={}, archives=("images.tar.gz",))


def test_missing_file_on_server(server: ServerState, tmp_path: Path) -> None:
    with pytest.raises(AtlasError, match="HTTP 404") as caught:
        _fetch(server, tmp_path / "pets", expected={})
    assert "annotations.tar.gz" in str(caught.value)


def test_unreachable_server(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dest = tmp_path / "pets"
    with pytest.raises(AtlasError) as caught:
        fetch_dataset(dest, base_url=f"http://127.0.0.1:{port}/", progress=False, timeout=TIMEOUT)
    message = str(caught.value)
    for needle in ("images.tar.gz", "annotations.tar.gz", "cannot connect", str(dest)):
        assert needle in message
    assert "https://www.robots.ox.ac.uk/~vgg/data/pets/" in message


def test_extraction_without_the_data_filter(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pythons before 3.11.4 have no tarfile filters; the member checks alone must hold."""
    monkeypatch.delattr(tarfile, "data_filter")
    expected = _serve_dataset(server)
    _fetch(server, tmp_path / "pets", expected=expected)
    _assert_extracted(tmp_path / "pets")
    server.files["images.tar.gz"] = _tar([_link("images/etc", "/etc")])
    with pytest.raises(AtlasError, match="absolute path /etc"):
        _fetch(server, tmp_path / "other", expected={}, archives=("images.tar.gz",))


@pytest.mark.parametrize("extra", [0, 7])
def test_leftover_part_file(server: ServerState, tmp_path: Path, extra: int) -> None:
    """A whole .part (rename missed) is kept; a too-long one is downloaded again."""
    _serve_dataset(server)
    dest = tmp_path / "pets"
    dest.mkdir()
    data = server.files["images.tar.gz"]
    (dest / "images.tar.gz.part").write_bytes(data + b"x" * extra)
    _fetch(server, dest, expected={}, archives=("images.tar.gz",))
    for name, image in IMAGES.items():
        assert (dest / name).read_bytes() == image
    ranges = [wanted for _, wanted in server.requests]
    assert ranges == ([f"bytes={len(data)}-"] if not extra else [f"bytes={len(data) + 7}-", None])
