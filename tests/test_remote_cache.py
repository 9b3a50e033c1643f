"""The cache at an fsspec URL: manifest last, exclusive create, races, S3 (moto, 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sitecheck import files_of

from atlas.cache import open_cache
from atlas.cache.remote import MIRROR_ENV, RemoteCache
from atlas.cache.store import Cache

pytest.importorskip("fsspec")
REPO = Path(__file__).resolve().parents[1]
KEY = "ab" * 32


@pytest.fixture(autouse=True)
def mirror(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "mirror"))
    return tmp_path / "mirror"


@pytest.fixture
def memory_url(request) -> str:
    import fsspec

    url = f"memory://atlas-{request.node.name}/cache"
    yield url
    memory = fsspec.filesystem("memory")
    bucket = url.split("://")[1].split("/")[0]
    if memory.exists(bucket):
        memory.rm(bucket, recursive=True)


def fresh(url: str, mirror: Path, name: str) -> RemoteCache:
    """A cache object with its own empty mirror: what another machine sees."""
    return RemoteCache(url, mirror=mirror / name)


def test_round_trip_through_a_fresh_mirror(memory_url, mirror):
    writer = open_cache(memory_url)
    assert isinstance(writer, RemoteCache)
    writer.put(KEY, {"objective": 1.5}, {"unit.webp": b"picture"})
    reader = fresh(memory_url, mirror, "other")
    assert reader.has(KEY) and reader.keys() == [KEY]
    entry = reader.get(KEY)
    assert entry.meta["objective"] == 1.5 and entry.read("unit.webp") == b"picture"
    assert entry.path.is_relative_to(mirror / "other")  # the site is written from local files


def test_files_without_a_manifest_are_missing(memory_url, mirror):
    cache = open_cache(memory_url)
    cache.fs.pipe_file(cache._entry(KEY, "token", "unit.webp"), b"half written")
    reader = fresh(memory_url, mirror, "other")
    assert not reader.has(KEY) and reader.get(KEY) is None and reader.keys() == []


def test_a_damaged_file_is_a_miss_with_a_warning(memory_url, mirror, caplog):
    cache = open_cache(memory_url)
    cache.put(KEY, {}, {"unit.webp": b"picture"})
    token = json.loads(cache.fs.cat_file(cache._entry(KEY, "meta.json")))["_dir"]
    cache.fs.pipe_file(cache._entry(KEY, token, "unit.webp"), b"pictura")  # same size
    assert fresh(memory_url, mirror, "other").get(KEY) is None
    assert "does not match its checksum" in caplog.text
    assert fresh(memory_url, mirror, "third").keys() == []  # removed: rendered again


def test_the_first_manifest_wins_a_race(memory_url, mirror):
    first, second = fresh(memory_url, mirror, "a"), fresh(memory_url, mirror, "b")
    first.put(KEY, {"n": 1}, {"unit.webp": b"first"})
    entry = second.put(KEY, {"n": 2}, {"unit.webp": b"second"})
    assert entry.meta["n"] == 1 and entry.read("unit.webp") == b"first"  # adopted
    files = [p for p in first.fs.find(first.base) if p.endswith("unit.webp")]
    assert len(files) == 1  # the loser removed its own files


def test_small_shared_files(memory_url):
    cache = open_cache(memory_url)
    assert cache.read_aux("throughput.json") is None
    cache.write_aux("throughput.json", b"{}")
    assert cache.read_aux("throughput.json") == b"{}"
    assert cache.create_exclusive("shards/a.json", b"1")
    assert not cache.create_exclusive("shards/a.json", b"2")
    assert cache.read_aux("shards/a.json") == b"1"


RACER = """
import sys, time
from atlas.cache import open_cache
location, start, key, data = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
cache = open_cache(location)
while time.time() < start:
    pass
cache.put(key, {"writer": data}, {"unit.webp": data.encode() * 50000})
"""


@pytest.mark.parametrize("kind", ["folder", "file-url"])
def test_two_processes_racing_for_one_key_leave_one_intact_entry(tmp_path, kind):
    location = str(tmp_path / "cache") if kind == "folder" else f"file://{tmp_path}/store"
    start = time.time() + 2.0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, location, str(start), KEY, word],
            env={**env, MIRROR_ENV: str(tmp_path / f"mirror-{word}")},
        )
        for word in ("first", "second")
    ]
    assert [racer.wait(timeout=60) for racer in racers] == [0, 0]
    reader = (
        Cache(Path(location))
        if kind == "folder"
        else RemoteCache(location, mirror=tmp_path / "mirror-reader")
    )
    assert reader.keys() == [KEY]
    entry = reader.get(KEY)
    data = entry.read("unit.webp")
    assert data == entry.meta["writer"].encode() * 50000
    assert hashlib.sha256(data).hexdigest() == entry.meta["_files"]["unit.webp"]["sha256"]


# -- S3 (moto's server on 127.0.0.1) --------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on 127.0.0.1, with the environment s3fs reads its endpoint from."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir("atlas-test")
        yield env
    finally:
        server.terminate()
        server.wait(timeout=10)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.mark.slow
def test_s3_cache_end_to_end(s3_server, small_config, tmp_path, monkeypatch):
    from atlas.build import BuildOptions, build

    config = small_config(images=4, cache="s3://atlas-test/e2e")
    options = BuildOptions(progress=False, max_steps=2)
    cold = build(config, options)
    assert cold.rendered.get("unit") == 6
    store = RemoteCache("s3://atlas-test/e2e", mirror=tmp_path / "look")
    assert len(store.keys()) == sum(cold.rendered.values())
    first = files_of(cold.output)
    # another machine: an empty mirror; everything comes from S3, nothing is rendered
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "second-machine"))
    warm = build(config, options)
    assert sum(warm.rendered.values()) == 0
    second = files_of(warm.output)
    assert {k: v for k, v in first.items() if k != "build.html"} == {
        k: v for k, v in second.items() if k != "build.html"
    }
