"""Robust image decoding and deterministic encoding.

Every image atlas reads goes through :func:`open_rgb`, which turns the odd files a real
dataset holds (PNG data under a ``.jpg`` name, CMYK JPEGs, 16-bit greyscale, palettes with
transparency, EXIF-rotated photos) into plain 8-bit RGB, and turns every file it cannot read
(truncated, empty, not an image, absurdly large) into one :class:`~atlas.errors.BadImageError`
with a short reason, so that a build can skip the file with a warning.

The encoders write no metadata, so the same pixels always give the same bytes: assets are
stored in a content-addressed cache.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from atlas.cache.keys import file_digest  # noqa: F401  (re-exported: the scan and models use it)
from atlas.errors import BadImageError

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 90_000_000
"""Largest image (width x height) decoded; the biggest Oxford-IIIT Pet photo is far smaller."""

TRANSPARENT_BACKGROUND = (255, 255, 255)
"""Transparent pixels are composited over white: that is how a browser shows the picture on
the site's white pages, so the network sees what the reader sees next to the heatmaps."""


# ``warnings.catch_warnings`` swaps a process-wide filter list; two threads entering it at
# once can leave the wrong filters behind, so the (cheap, header-only) open is serialised.
_OPEN_LOCK = threading.Lock()

_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def open_rgb(
    path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, at_least: int | None = None
) -> Image.Image:
    """Decode an image file completely into an 8-bit RGB image.

    The format is detected from the content, not the name. EXIF orientation is applied;
    alpha is composited over :data:`TRANSPARENT_BACKGROUND`; 16-bit data is scaled (not
    clipped) to 8 bits; CMYK, greyscale and palette images are converted. Truncated files
    are errors: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone.

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels than this, before decoding them.
        at_least: a JPEG may be decoded at a reduced scale (1/2, 1/4, 1/8: the decoder's
            own DCT scaling, several times faster) as long as both sides stay at least
            this many pixels; None decodes at full size.

    Returns:
        A loaded ``RGB`` image, detached from the file.

    Raises:
        BadImageError: the file is missing, empty, not an image, truncated, corrupt or too
            large; ``reason`` says which in a few words.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImageError(path, "empty file")
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except OSError as error:
        raise BadImageError(path, f"cannot read file ({error.strerror or error})") from None

    with _open_checked(path, max_pixels) as image:
        kind = image.format or "image"
        if at_least is not None and kind == "JPEG":
            image.draft("RGB", (at_least, at_least))
        try:
            image.load()
        except Exception as error:  # plugins raise many types on bad data
            raise BadImageError(path, _load_failure_reason(kind, error)) from None
        image = _apply_orientation(path, image)
        try:
            return _to_rgb(image)
        except (ValueError, OSError) as error:
            raise BadImageError(path, f"cannot convert {image.mode} image ({error})") from None


def load_array(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode an image and resize it bilinearly for a network input.

    Args:
        path: the image file.
        size: ``(height, width)`` of the result.

    Returns:
        A ``uint8`` array of shape ``(height, width, 3)``.

    Raises:
        BadImageError: the file cannot be decoded (see :func:`open_rgb`).
    """
    height, width = size
    image = open_rgb(path, at_least=max(height, width))
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    return np.array(image, dtype=np.uint8)


def encode_jpeg(array_or_image: np.ndarray | Image.Image, quality: int = 85) -> bytes:
    """Encode pixels as a baseline JPEG without metadata.

    Args:
        array_or_image: ``uint8`` pixels (H, W), (H, W, 3) or (H, W, 4), or a PIL image.
            Alpha is composited over :data:`TRANSPARENT_BACKGROUND`.
        quality: JPEG quality, 1-95.

    Returns:
        The file bytes; the same pixels always give the same bytes.

    Raises:
        ValueError: the array has an unsupported dtype or shape.
    """
    image = _as_image(array_or_image)
    if image.mode != "L":
        image = _to_rgb(image)
    return _save(image, "JPEG", quality=quality, optimize=False, progressive=False, subsampling=2)


def encode_png(array_or_image: np.ndarray | Image.Image, compress_level: int = 6) -> bytes:
    """Encode pixels as a PNG without text, time or colour-profile chunks.

    Args:
        array_or_image: ``uint8`` pixels (H, W), (H, W, 3) or (H, W, 4), or a PIL image.
        compress_level: zlib level, 0-9.

    Returns:
        The file bytes; the same pixels always give the same bytes.

    Raises:
        ValueError: the array has an unsupported dtype or shape.
    """
    image = _as_image(array_or_image)
    return _save(image, "PNG", compress_level=compress_level, optimize=False)


def encode_webp(
    array_or_image: np.ndarray | Image.Image, quality: int = 80, lossless: bool = False
) -> bytes:
    """Encode pixels as a WebP without EXIF, XMP or ICC data.

    Args:
        array_or_image: ``uint8`` pixels (H, W), (H, W, 3) or (H, W, 4), or a PIL image.
        quality: lossy quality (or effort when ``lossless``), 0-100.
        lossless: use lossless compression.

    Returns:
        The file bytes; the same pixels always give the same bytes.

    Raises:
        ValueError: the array has an unsupported dtype or shape.
    """
    image = _as_image(array_or_image)
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    # method is pinned because libwebp's default may change between releases.
    return _save(image, "WEBP", quality=quality, lossless=lossless, method=4, exact=False)


@contextlib.contextmanager
def _open_checked(path: Path, max_pixels: int) -> Iterator[Image.Image]:
    """``Image.open`` (header only) with the size checked before any pixel is decoded."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            # Pillow's own guard only warns below twice its limit; ours below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image") from None
    except Image.DecompressionBombError as error:
        found = _BOMB_PIXELS.search(str(error))
        pixels = f"{found.group(1)} pixels" if found else "too many pixels"
        raise BadImageError(
            path, f"image has {pixels}, more than the {max_pixels} allowed"
        ) from None
    except Exception as error:  # header parsers raise many types
        raise BadImageError(path, f"unreadable image header ({error})") from None
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise BadImageError(path, f"image has an invalid size {width}x{height}")
        if width * height > max_pixels:
            raise BadImageError(
                path, f"image is {width}x{height} pixels, more than the {max_pixels} allowed"
            )
        yield image


def _load_failure_reason(kind: str, error: Exception) -> str:
    message = str(error)
    if "truncated" in message or isinstance(error, EOFError):
        return f"truncated {kind} data"
    if isinstance(error, Image.DecompressionBombError):
        return "image is too large to decode safely"
    return f"corrupt {kind} data ({message or type(error).__name__})"


def _apply_orientation(path: Path, image: Image.Image) -> Image.Image:
    try:
        # Pillow warns about a corrupt EXIF block on stderr; the photo is still usable, so
        # that is not worth a line in the build's output (the lock: see _OPEN_LOCK).
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.getexif()  # parsed once and kept: exif_transpose reuses it
        return ImageOps.exif_transpose(image)
    except Exception as error:  # a broken EXIF block should not lose the photo
        log.debug("%s: ignoring unreadable EXIF orientation (%s)", path, error)
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB (see :func:`open_rgb` for the rules)."""
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(image)
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*TRANSPARENT_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # CMYK (Pillow undoes Adobe's inverted CMYK), YCbCr, LAB, HSV, L, 1, P.
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer or float greyscale to 8 bits by range, not by clipping."""
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        # Float images are 0..1 when they look like it, otherwise 0..255.
        scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
        values = np.nan_to_num(values) * scale
    else:
        # "I;16*" is 16-bit; "I" holds 16-bit PNG/TIFF data in practice, so it is read as
        # 0..65535 too and anything beyond is clipped.
        values = np.clip(values, 0, 65535) / 257.0
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _as_image(array_or_image: np.ndarray | Image.Image) -> Image.Image:
    if isinstance(array_or_image, Image.Image):
        return array_or_image
    array = np.asarray(array_or_image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(
            f"expected pixels shaped (H, W), (H, W, 3) or (H, W, 4), got {array.shape}"
        )
    return Image.fromarray(np.ascontiguousarray(array))


def _save(image: Image.Image, file_format: str, **options: object) -> bytes:
    # Pillow copies image.info (EXIF, ICC, text) into the output unless told otherwise.
    clean = image.copy()
    clean.info = {}
    buffer = io.BytesIO()
    clean.save(buffer, format=file_format, **options)
    return buffer.getvalue()
