"""Tests for atlas.data.images: every odd file kind decodes to RGB or fails with a reason."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atlas.data.images import (
    encode_jpeg,
    encode_png,
    encode_webp,
    file_digest,
    load_array,
    open_rgb,
)
from atlas.errors import BadImageError


def _gradient(width: int = 40, height: int = 30) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 6 % 256, y * 8 % 256, (x + y) * 3 % 256], axis=-1).astype(np.uint8)


def _png_with_size(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose IHDR claims another size: cheap to make, huge if decoded."""
    Image.new("1", (1, 1)).save(path, format="PNG")
    data = bytearray(path.read_bytes())
    ihdr_start = 8 + 8  # signature, then chunk length + type
    data[ihdr_start : ihdr_start + 8] = struct.pack(">II", width, height)
    body = bytes(data[12 : ihdr_start + 13])  # type + 13 data bytes
    data[ihdr_start + 13 : ihdr_start + 17] = struct.pack(">I", zlib.crc32(body))
    path.write_bytes(bytes(data))
    return path


def _assert_rgb(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    assert image.mode == "RGB"
    assert image.size == size
    array = np.asarray(image)
    assert array.dtype == np.uint8 and array.shape == (size[1], size[0], 3)
    return array


def test_file_digest_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "blob.bin"
    path.write_bytes(b"x" * 3_000_000)
    assert file_digest(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


def test_png_bytes_under_jpg_name(tmp_path: Path) -> None:
    path = tmp_path / "Abyssinian_1.jpg"
    Image.fromarray(_gradient()).save(path, format="PNG")
    array = _assert_rgb(open_rgb(path), (40, 30))
    assert np.array_equal(array, _gradient())


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(path, format="JPEG", quality=95)
    array = _assert_rgb(open_rgb(path), (20, 10))
    red, green, blue = array.reshape(-1, 3).mean(axis=0)
    assert red > 200 and green < 60 and blue < 60


@pytest.mark.parametrize(
    ("mode", "color", "expected"),
    [
        ("L", 100, (100, 100, 100)),
        ("1", 1, (255, 255, 255)),
        ("RGBA", (255, 0, 0, 0), (255, 255, 255)),  # fully transparent: the white background
        ("RGBA", (255, 0, 0, 255), (255, 0, 0)),
        ("LA", (0, 128), (127, 127, 127)),  # black at half opacity over white
    ],
)
def test_modes_convert_to_rgb(tmp_path: Path, mode: str, color: object, expected: tuple) -> None:
    path = tmp_path / f"{mode}.png"
    Image.new(mode, (8, 6), color).save(path, format="PNG")
    array = _assert_rgb(open_rgb(path), (8, 6))
    assert np.abs(array.astype(int) - np.array(expected)).max() <= 1


def test_palette_with_transparency(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    image = Image.new("P", (4, 2), 0)
    image.putpalette([0, 0, 255] + [255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    image.info["transparency"] = 0  # index 0 (blue) is transparent
    image.save(path, format="PNG", transparency=0)
    array = _assert_rgb(open_rgb(path), (4, 2))
    assert tuple(array[0, 0]) == (255, 0, 0)
    assert tuple(array[1, 3]) == (255, 255, 255)


def test_palette_gif_without_transparency(tmp_path: Path) -> None:
    path = tmp_path / "palette.jpg"
    Image.fromarray(_gradient()).convert("P").save(path, format="GIF")
    _assert_rgb(open_rgb(path), (40, 30))


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.linspace(0, 65535, 64 * 16).reshape(16, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path, format="PNG")
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    array = _assert_rgb(open_rgb(path), (64, 16))
    assert abs(array.mean() - values.mean() / 257) < 1.0
    assert array.min() == 0 and array.max() == 255


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    image = Image.fromarray(_gradient(40, 30))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(path, format="JPEG", exif=exif.tobytes())
    _assert_rgb(open_rgb(path), (30, 40))


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"this is not a picture\n" * 20, "not an image"),
        ("noise.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, None),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: bytes, reason: str | None) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadImageError) as caught:
        open_rgb(path)
    assert name in str(caught.value)
    if reason is not None:
        assert caught.value.reason == reason


def test_truncated_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    Image.fromarray(_gradient(200, 150)).save(path, format="JPEG", quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError) as caught:
        open_rgb(path)
    assert caught.value.reason == "truncated JPEG data"
    assert "cut.jpg" in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadImageError, match="file not found"):
        open_rgb(tmp_path / "gone.jpg")


@pytest.mark.filterwarnings("error")  # Pillow's bomb warning must not escape either
@pytest.mark.parametrize(("side", "needle"), [(20000, "400000000 pixels"), (9500, "9500x9500")])
def test_huge_image_is_refused_before_decoding(tmp_path: Path, side: int, needle: str) -> None:
    path = _png_with_size(tmp_path / "huge.png", side, side)
    with pytest.raises(BadImageError) as caught:
        open_rgb(path)
    assert "huge.png" in str(caught.value)
    assert needle in caught.value.reason and "90000000 allowed" in caught.value.reason


def test_max_pixels_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.fromarray(_gradient(40, 30)).save(path)
    with pytest.raises(BadImageError, match="40x30 pixels, more than the 1000 allowed"):
        open_rgb(path, max_pixels=1000)


def test_load_array_resizes_height_width(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    Image.fromarray(_gradient(40, 30)).save(path, format="JPEG")
    array = load_array(path, (16, 24))
    assert array.shape == (16, 24, 3) and array.dtype == np.uint8
    expected = np.asarray(open_rgb(path).resize((24, 16), Image.BILINEAR))
    assert np.array_equal(array, expected)


@pytest.mark.parametrize("encode", [encode_jpeg, encode_png, encode_webp])
def test_encoders_are_deterministic(encode, tmp_path: Path) -> None:
    pixels = _gradient()
    first = encode(pixels)
    assert first == encode(pixels.copy()) == encode(Image.fromarray(pixels))
    (tmp_path / "out").write_bytes(first)
    with Image.open(tmp_path / "out") as decoded:
        assert decoded.size == (40, 30)


def test_encoders_drop_metadata() -> None:
    image = Image.fromarray(_gradient())
    image.info["icc_profile"] = b"fake profile"
    exif = image.getexif()
    exif[0x0132] = "2024:01:01 00:00:00"  # DateTime
    image.info["exif"] = exif.tobytes()
    assert encode_jpeg(image) == encode_jpeg(_gradient())
    assert encode_png(image) == encode_png(_gradient())


def test_encoders_accept_grey_and_alpha_arrays() -> None:
    grey = _gradient()[:, :, 0]
    rgba = np.dstack([_gradient(), np.full((30, 40), 128, np.uint8)])
    for pixels in (grey, rgba):
        assert encode_jpeg(pixels)[:2] == b"\xff\xd8"
        assert encode_png(pixels)[:4] == b"\x89PNG"
        assert encode_webp(pixels)[8:12] == b"WEBP"
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32))
