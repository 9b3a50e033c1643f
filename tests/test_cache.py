"""The content-addressed cache: stable keys, atomic writes, damage is a miss, one lock."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atlas.cache import store as cache_module
from atlas.cache.keys import canonical_json, make_key
from atlas.cache.store import META, Cache
from atlas.errors import CacheError

REPO = Path(__file__).resolve().parents[1]
KEY = make_key({"kind": "unit", "layer": "conv", "unit": 3})

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_key_does_not_depend_on_key_order(description):
    reordered = dict(reversed(list(description.items())))
    assert make_key(reordered) == make_key(description)
    assert len(make_key(description)) == 64


def test_key_changes_with_any_value_and_is_stable():
    base = {"kind": "unit", "layer": "conv", "unit": 3, "size": (32, 32)}
    assert make_key(base) == make_key(
        {"size": [32, 32], "unit": 3, "layer": "conv", "kind": "unit"}
    )
    assert make_key(base) != make_key({**base, "unit": 4})
    assert make_key(base) != make_key({**base, "size": (32, 33)})
    # A known value: keys must not change between runs or Python versions.
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert make_key({"a": 1}) == (
        "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
    )


def test_key_refuses_values_without_one_json_text():
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        make_key({"f": lambda x: x})


def test_put_get_round_trip(tmp_path):
    cache = Cache(tmp_path)
    meta = {"objective": 1.5, "top": [3, 1]}
    cache.put(KEY, meta, {"unit.webp": b"RIFF-picture", "raw.png": b"\x89PNG"})
    entry = cache.get(KEY)
    assert entry is not None and entry.path == tmp_path / KEY[:2] / KEY
    assert entry.meta["objective"] == 1.5 and entry.meta["top"] == [3, 1]
    assert entry.read("unit.webp") == b"RIFF-picture" and entry.read("raw.png") == b"\x89PNG"
    assert entry.meta["_files"]["unit.webp"]["size"] == len(b"RIFF-picture")
    assert cache.has(KEY) and cache.keys() == [KEY]
    assert cache.get(make_key({"other": 1})) is None
    assert (cache.hits, cache.misses, cache.written) == (2, 1, 1)  # has() verifies too


def test_a_warm_check_stats_but_does_not_read_or_hash(tmp_path, monkeypatch):
    cache = Cache(tmp_path)
    cache.lock()
    cache.put(KEY, {"n": 1}, {"a.bin": b"first"})  # its checksum is known from the bytes
    cache.unlock()
    monkeypatch.setattr(cache_module, "sha256_file", lambda path: pytest.fail("re-hashed"))
    monkeypatch.setattr(json, "load", lambda handle: pytest.fail("read meta.json"))
    warm = Cache(tmp_path)
    assert warm.has(KEY) and warm.stamp(KEY).startswith(f"{META}:")


def test_a_replaced_file_of_the_same_size_is_caught_by_its_stamp(tmp_path, caplog):
    cache = Cache(tmp_path)
    cache.lock()
    cache.put(KEY, {"n": 1}, {"a.bin": b"first"})
    stamp = cache.stamp(KEY)
    cache.unlock()
    replacement = tmp_path / "other.bin"
    replacement.write_bytes(b"FIRST")  # same size, new inode
    os.replace(replacement, cache.path_of(KEY) / "a.bin")
    with caplog.at_level(logging.WARNING):
        warm = Cache(tmp_path)
        assert not warm.has(KEY) and warm.stamp(KEY) is None
    assert "does not match its checksum" in caplog.text and stamp is not None


def test_put_keeps_an_existing_entry(tmp_path):
    cache = Cache(tmp_path)
    cache.put(KEY, {"n": 1}, {"a.bin": b"first"})
    cache.put(KEY, {"n": 2}, {"a.bin": b"second"})
    assert cache.get(KEY).read("a.bin") == b"first"
    assert [p.name for p in (tmp_path / KEY[:2]).iterdir()] == [KEY]  # no temp left


@pytest.mark.parametrize("name", ["../escape.bin", ".hidden", META, "a/b.png"])
def test_put_refuses_bad_file_names(tmp_path, name):
    with pytest.raises(ValueError, match="bad asset file name"):
        Cache(tmp_path).put(KEY, {}, {name: b"x"})
    assert not (tmp_path / KEY[:2] / KEY).exists()
    assert not list((tmp_path / KEY[:2]).glob(".tmp-*"))


def test_leftover_temp_folder_is_ignored_then_removed_by_lock(tmp_path):
    cache = Cache(tmp_path)
    cache.put(KEY, {"n": 1})
    # What a build killed between writing and renaming leaves behind.
    temp = tmp_path / KEY[:2] / ".tmp-0123abcd"
    temp.mkdir()
    (temp / "unit.webp").write_bytes(b"half")
    assert cache.keys() == [KEY]
    assert cache.get(make_key({"x": 1})) is None
    cache.lock()
    try:
        assert not temp.exists()
        assert cache.get(KEY) is not None
    finally:
        cache.unlock()


def truncate(entry: Path) -> None:
    picture = entry / "unit.webp"
    picture.write_bytes(picture.read_bytes()[:3])


def same_size_edit(entry: Path) -> None:
    picture = entry / "unit.webp"
    picture.write_bytes(picture.read_bytes().replace(b"pixels", b"PIXELS"))


def edit_meta(entry: Path) -> None:
    meta = json.loads((entry / META).read_text())
    meta["_files"]["unit.webp"]["size"] = 999
    (entry / META).write_text(json.dumps(meta))


def garbage_meta(entry: Path) -> None:
    (entry / META).write_bytes(b"\x00\xffnot json{")


def meta_not_mapping(entry: Path) -> None:
    (entry / META).write_text("[1, 2, 3]")


def files_not_mapping(entry: Path) -> None:
    (entry / META).write_text('{"_files": {"unit.webp": 5}}')


def missing_file(entry: Path) -> None:
    (entry / "unit.webp").unlink()


def missing_meta(entry: Path) -> None:
    (entry / META).unlink()


@pytest.mark.parametrize(
    "damage",
    [
        truncate,
        same_size_edit,
        edit_meta,
        garbage_meta,
        meta_not_mapping,
        files_not_mapping,
        missing_file,
        missing_meta,
    ],
)
def test_damaged_entry_is_a_miss_with_a_warning_and_is_removed(tmp_path, caplog, damage):
    cache = Cache(tmp_path)
    cache.put(KEY, {"objective": 2.0}, {"unit.webp": b"RIFF some pixels here"})
    damage(tmp_path / KEY[:2] / KEY)
    cache = Cache(tmp_path)  # the next build: nothing verified yet
    with caplog.at_level(logging.WARNING, logger="atlas.cache.store"):
        assert cache.get(KEY) is None
    assert any("damaged" in r.getMessage() and KEY in r.getMessage() for r in caplog.records)
    assert not (tmp_path / KEY[:2] / KEY).exists()
    assert not cache.has(KEY)
    cache.put(KEY, {"objective": 2.0}, {"unit.webp": b"RIFF again"})  # re-render works
    assert cache.get(KEY).read("unit.webp") == b"RIFF again"


def test_second_lock_in_the_same_process_is_refused(tmp_path):
    first, second = Cache(tmp_path), Cache(tmp_path)
    first.lock()
    try:
        with pytest.raises(CacheError, match="in use by another atlas build") as caught:
            second.lock()
        assert str(tmp_path) in str(caught.value) and "--wait" in str(caught.value)
    finally:
        first.unlock()
    second.lock()  # free again once the first build is done
    second.unlock()


def test_lock_held_by_another_process(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from atlas.cache.store import Cache; "
            "c = Cache(sys.argv[1]); c.lock();"
            " print('locked', flush=True); time.sleep(30)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CacheError, match="in use by another atlas build"):
            Cache(tmp_path).lock()
        holder.kill()  # a killed build's lock goes with its process
        holder.wait(10)
        cache = Cache(tmp_path)
        cache.lock(wait=5)
        cache.unlock()
    finally:
        holder.kill()
        holder.wait(10)


def test_lock_wait_gets_the_lock_once_it_is_released(tmp_path):
    first = Cache(tmp_path)
    first.lock()
    timer = threading.Timer(0.5, first.unlock)
    timer.start()
    second = Cache(tmp_path)
    start = time.monotonic()
    try:
        second.lock(wait=10)
        assert 0.3 < time.monotonic() - start < 5
    finally:
        second.unlock()
        timer.cancel()


def test_lock_wait_gives_up_after_the_timeout(tmp_path):
    first = Cache(tmp_path)
    first.lock()
    try:
        start = time.monotonic()
        with pytest.raises(CacheError, match="in use"):
            Cache(tmp_path).lock(wait=0.5)
        assert 0.4 < time.monotonic() - start < 3
    finally:
        first.unlock()


# Tests run as root, which ignores permission bits: the OS errors are injected instead.
@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        (errno.ENOSPC, "is full"),
        (errno.EACCES, "cannot write to the cache folder"),
        (errno.EROFS, "cannot write to the cache folder"),
        (errno.EIO, "cache "),
    ],
)
def test_write_errors_become_cache_errors(tmp_path, monkeypatch, code, fragment):
    cache = Cache(tmp_path)

    def failing_write(path, data):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(cache_module, "_write_synced", failing_write)
    with pytest.raises(CacheError, match=fragment) as caught:
        cache.put(KEY, {"n": 1}, {"unit.webp": b"x"})
    assert str(tmp_path) in str(caught.value)
    assert not (tmp_path / KEY[:2] / KEY).exists()
    assert not list((tmp_path / KEY[:2]).glob(".tmp-*"))  # nothing half-written left


def test_rename_error_becomes_a_cache_error(tmp_path, monkeypatch):
    def failing_rename(source, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.os, "rename", failing_rename)
    with pytest.raises(CacheError, match="full"):
        Cache(tmp_path).put(KEY, {"n": 1})
    assert not list((tmp_path / KEY[:2]).glob(".tmp-*"))


def test_unwritable_cache_folder_at_lock(tmp_path, monkeypatch):
    real_open = open

    def refusing_open(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    with pytest.raises(CacheError, match="cannot write to the cache folder"):
        Cache(tmp_path / "cache").lock()


def test_prune_keeps_only_referenced_keys(tmp_path):
    cache = Cache(tmp_path)
    keys = [make_key({"n": n}) for n in range(5)]
    for n, key in enumerate(keys):
        cache.put(key, {"n": n}, {"a.bin": b"x" * (n + 1)})
    (tmp_path / "scan-memo.json").write_text("{}")  # other files in the root stay
    removed, freed = cache.prune({keys[1], keys[3]})
    assert removed == 3 and freed > 1 + 3 + 5
    assert cache.keys() == sorted([keys[1], keys[3]])
    assert cache.get(keys[1]).read("a.bin") == b"xx"
    assert (tmp_path / "scan-memo.json").exists()
    assert cache.prune(set())[0] == 2 and cache.keys() == []


def test_empty_or_missing_cache_folder(tmp_path):
    cache = Cache(tmp_path / "not-yet")
    assert cache.keys() == [] and cache.get(KEY) is None and cache.prune(set()) == (0, 0)
