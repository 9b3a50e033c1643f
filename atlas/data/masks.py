"""Where the masks of the photos are (the Oxford-IIIT Pet trimaps beside ``list.txt``, or
``dataset.masks``: PNGs named like the photos), and how many steps a faithfulness curve
takes: what planning needs of the CAM scores, without NumPy (a no-op rebuild plans every
job). The scores themselves are in :mod:`atlas.analysis.scores`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

STEPS = 16  # deletion/insertion steps: STEPS + 1 points per curve


def trimap_folder(annotations: Path | None) -> Path | None:
    """The dataset's ``trimaps/`` folder beside its ``list.txt``, if there is one."""
    if annotations is None:
        return None
    folder = Path(annotations).parent / "trimaps"
    return folder if folder.is_dir() else None


def find_masks(folder: Path, names: Sequence[str]) -> dict[str, Path]:
    """Image name -> its mask in ``dataset.masks``: ``NAME.png`` (``cat/IMG_1.png`` for a
    photo in a class folder), else the file name alone (``IMG_1.png``)."""
    found = {}
    for name in names:
        for candidate in (folder / f"{name}.png", folder / f"{Path(name).name}.png"):
            if candidate.is_file():
                found[name] = candidate
                break
    return found


def mask_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of a mask from its header, None if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError):
        return None


def find_trimaps(annotations: Path | None, names: Sequence[str]) -> dict[str, Path]:
    """Image name -> its trimap PNG, for the images that have one."""
    folder = trimap_folder(annotations)
    if folder is None:
        return {}
    found = {}
    for name in names:
        path = folder / f"{name}.png"
        if path.is_file():
            found[name] = path
    return found
