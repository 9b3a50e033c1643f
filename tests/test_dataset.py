"""Tests for atlas.data.scan: annotations, the folder scan and batch streaming."""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import atlas.data.images as images
from atlas.cache.keys import file_digest
from atlas.data.batches import iter_batches
from atlas.data.oxford import (
    Annotation,
    breed_from_filename,
    breed_title,
    read_annotation_list,
    read_splits,
)
from atlas.data.scan import scan_dataset
from atlas.errors import AtlasError, BadImageError

PETS = Path(__file__).resolve().parents[1] / "data" / "oxford-pets"
LIST = PETS / "annotations" / "list.txt"


def _jpeg(path: Path, color: tuple[int, int, int] = (200, 120, 40), size=(32, 24)) -> Path:
    Image.new("RGB", size, color).save(path, format="JPEG")
    return path


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_shipped_list_txt() -> None:
    annotations = read_annotation_list(LIST)
    assert len(annotations) == 7349
    species_of = {a.breed: a.species for a in annotations.values()}
    assert len(species_of) == 37
    assert Counter(species_of.values()) == {"cat": 12, "dog": 25}
    for breed, species in species_of.items():
        assert species == ("cat" if breed[0].isupper() else "dog"), breed
    assert annotations["Abyssinian_100"] == Annotation(1, "cat", 1, "Abyssinian")
    assert annotations["american_pit_bull_terrier_13"] == Annotation(
        3, "dog", 2, "american_pit_bull_terrier"
    )
    # One class id per breed, whatever the header claims about the ranges.
    ids = {(a.breed, a.class_id) for a in annotations.values()}
    assert len(ids) == 37 and {i for _, i in ids} == set(range(1, 38))


def test_splits() -> None:
    splits = read_splits(PETS / "annotations")
    assert Counter(splits.values()) == {"trainval": 3680, "test": 3669}
    assert splits["Abyssinian_100"] == "trainval"
    assert splits["Abyssinian_201"] == "test"
    assert read_splits(PETS / "no-such-folder") == {}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Abyssinian_1 1 1", "line 2: expected 4 fields"),
        ("Abyssinian_1 x 1 1", "line 2: CLASS-ID and BREED-ID"),
        ("Abyssinian_1 1 3 1", "line 2: SPECIES must be 1 (cat) or 2 (dog)"),
        ("Abyssinian 1 1 1", "line 2: image name 'Abyssinian' is not"),
    ],
)
def test_bad_annotation_lines(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "list.txt"
    path.write_text(f"#Image CLASS-ID SPECIES BREED ID\n{line}\n")
    with pytest.raises(AtlasError) as caught:
        read_annotation_list(path)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(AtlasError, match="cannot read annotation list"):
        read_annotation_list(tmp_path / "list.txt")


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("Abyssinian_101", ("Abyssinian", "cat")),
        ("american_pit_bull_terrier_13", ("american_pit_bull_terrier", "dog")),
        ("British_Shorthair_7", ("British_Shorthair", "cat")),
        ("Ünïcorn_cat_3", ("Ünïcorn_cat", "cat")),
    ],
)
def test_breed_from_filename(stem: str, expected: tuple[str, str]) -> None:
    assert breed_from_filename(stem) == expected


@pytest.mark.parametrize("stem", ["Abyssinian", "_12", "12_3", "holiday photo"])
def test_breed_from_filename_refuses_unlabelled_names(stem: str) -> None:
    with pytest.raises(AtlasError, match="does not say the breed"):
        breed_from_filename(stem)


def test_breed_title() -> None:
    assert breed_title("american_pit_bull_terrier") == "American Pit Bull Terrier"
    assert breed_title("Abyssinian") == "Abyssinian"
    assert breed_title("British_Shorthair") == "British Shorthair"


def test_scan_shipped_sample() -> None:
    scan = scan_dataset(PETS / "images", LIST)
    assert len(scan.images) == 111 and scan.skipped == ()
    assert all(image.annotated for image in scan.images)
    assert set(Counter(image.breed for image in scan.images).values()) == {3}
    names = [image.name for image in scan.images]
    assert names == sorted(names)
    first = scan.images[0]
    with Image.open(first.path) as raw:
        assert (first.width, first.height) == raw.size
    assert first.split in ("trainval", "test") and len(first.digest) == 64


@pytest.fixture
def salted(tmp_path: Path) -> Path:
    """A folder with good images, bad ones and things that are not candidates at all."""
    folder = tmp_path / "images"
    folder.mkdir()
    _jpeg(folder / "Abyssinian_1.jpg")
    _jpeg(folder / "beagle_2.JPG", (10, 20, 30), size=(24, 32))
    Image.new("RGB", (8, 8)).save(folder / "pug_3.jpg", format="PNG")  # PNG under .jpg
    _jpeg(folder / "Ragdoll_4.jpeg")
    (folder / "Bengal_5.jpg").write_bytes(b"")
    (folder / "boxer_6.jpg").write_text("not an image")
    data = _jpeg(folder / "Sphynx_7.jpg", size=(300, 200)).read_bytes()
    (folder / "Sphynx_7.jpg").write_bytes(data[: len(data) // 2])
    _jpeg(folder / "abyssinian_1.jpg")  # differs from Abyssinian_1 only by case
    _jpeg(folder / "holiday.jpg")  # no breed in the name, not annotated
    _jpeg(folder / "Siamese_8.jpg")
    os.symlink(folder / "Siamese_8.jpg", folder / "Siamese_9.jpg")  # inside: fine
    outside = _jpeg(tmp_path / "outside.jpg")
    os.symlink(outside, folder / "Persian_10.jpg")
    _jpeg(folder / "Maine_Coon_11.jpg")
    (folder / ".hidden_12.jpg").write_bytes(b"")
    (folder / "Abyssinian_13.mat").write_bytes(b"MATLAB")
    (folder / "notes.txt").write_text("hello")
    (folder / "samoyed_14.jpg").mkdir()
    _jpeg(folder / "Sphynx_ünïcode_15.jpg")
    return folder


def _annotations(tmp_path: Path) -> Path:
    path = tmp_path / "list.txt"
    path.write_text("#Image CLASS-ID SPECIES BREED ID\nAbyssinian_1 1 1 1\nbeagle_2 6 2 4\n")
    (tmp_path / "test.txt").write_text("beagle_2 6 2 4\n")
    return path


def test_scan_salted_folder(salted: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="atlas.data.scan")
    scan = scan_dataset(salted, _annotations(salted.parent))
    kept = {image.name: image for image in scan.images}
    assert list(kept) == [
        "Abyssinian_1",
        "Maine_Coon_11",
        "Ragdoll_4",
        "Siamese_8",
        "Siamese_9",
        "Sphynx_ünïcode_15",
        "beagle_2",
        "pug_3",
    ]
    assert kept["Abyssinian_1"].annotated and not kept["Ragdoll_4"].annotated
    assert kept["beagle_2"].split == "test" and kept["Abyssinian_1"].split is None
    assert (kept["beagle_2"].width, kept["beagle_2"].height) == (24, 32)
    assert kept["Maine_Coon_11"].breed == "Maine_Coon" and kept["pug_3"].species == "dog"
    reasons = {item.path.name: item.reason for item in scan.skipped}
    assert reasons["Bengal_5.jpg"] == "empty file"
    assert reasons["boxer_6.jpg"] == "not an image"
    assert reasons["Sphynx_7.jpg"] == "truncated JPEG data"
    assert "letter case" in reasons["abyssinian_1.jpg"]
    assert "does not say the breed" in reasons["holiday.jpg"]
    assert "outside the image folder" in reasons["Persian_10.jpg"]
    assert len(reasons) == 6
    warnings = _warnings(caplog)
    assert len(warnings) == 6
    for name in reasons:
        assert sum(name in message for message in warnings) == 1


def test_undecodable_file_name_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    try:
        _jpeg(Path(os.fsdecode(os.fsencode(folder) + b"/pug_\xff_1.jpg")))
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    _jpeg(folder / "pug_2.jpg")
    scan = scan_dataset(folder, None)
    assert [image.name for image in scan.images] == ["pug_2"]
    assert scan.skipped[0].reason == "file name is not valid UTF-8"


def test_known_memo_avoids_decoding(salted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    known: dict[str, dict] = {}
    first = scan_dataset(salted, None, known=known)
    # Six distinct contents: the many identical test JPEGs share one entry.
    assert len(known) == 6
    assert any(not record["ok"] for record in known.values())

    def explode(path: Path, **_: object) -> Image.Image:
        raise AssertionError(f"decoded {path} although its digest is known")

    monkeypatch.setattr(images, "open_rgb", explode)  # the scan imports it when decoding
    again = scan_dataset(salted, None, known=known)
    assert again == first

    _jpeg(salted / "Birman_16.jpg", (1, 2, 3))
    with pytest.raises(AssertionError, match="Birman_16"):
        scan_dataset(salted, None, known=known)


def test_damaged_memo_entries_are_misses(salted: Path) -> None:
    digest = file_digest(salted / "Ragdoll_4.jpeg")
    known: dict[str, dict] = {digest: {"ok": True}}
    scan = scan_dataset(salted, None, known=known)
    assert known[digest]["width"] == 32
    assert "Ragdoll_4" in {image.name for image in scan.images}


def test_scan_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(AtlasError, match="image folder not found"):
        scan_dataset(tmp_path / "nope", None)


def test_iter_batches_shapes_and_order() -> None:
    images = scan_dataset(PETS / "images", LIST).images[:23]
    batches = list(iter_batches(images, (20, 30), batch_size=10, workers=3))
    assert [len(names) for names, _ in batches] == [10, 10, 3]
    assert [image for names, _ in batches for image in names] == list(images)
    for names, array in batches:
        assert array.shape == (len(names), 20, 30, 3) and array.dtype == np.uint8


def test_iter_batches_leaves_out_files_gone_bad(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "images"
    shutil.copytree(PETS / "images", folder)
    images = scan_dataset(folder, LIST).images[:7]
    images[2].path.write_bytes(b"garbage now")
    images[5].path.unlink()
    caplog.set_level(logging.WARNING, logger="atlas.data.scan")
    batches = list(iter_batches(images, (16, 16), batch_size=3, workers=2))
    kept = [image for names, _ in batches for image in names]
    assert kept == [images[i] for i in (0, 1, 3, 4, 6)]
    assert [array.shape[0] for _, array in batches] == [3, 2]
    warnings = _warnings(caplog)
    assert len(warnings) == 2 and images[2].name in warnings[0] and images[5].name in warnings[1]


def test_iter_batches_stops_early_without_hanging() -> None:
    images = scan_dataset(PETS / "images", LIST).images
    stream = iter_batches(images, (16, 16), batch_size=4)
    names, array = next(stream)
    assert array.shape == (4, 16, 16, 3)
    stream.close()


def test_iter_batches_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        list(iter_batches([], (8, 8), batch_size=0))
    assert list(iter_batches([], (8, 8))) == []


def test_bad_image_error_is_what_load_raises(tmp_path: Path) -> None:
    (tmp_path / "pug_1.jpg").write_text("nope")
    with pytest.raises(BadImageError):
        images.load_array(tmp_path / "pug_1.jpg", (8, 8))
