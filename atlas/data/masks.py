"""Where the Oxford-IIIT Pet trimaps are, and how many steps a faithfulness curve takes:
what planning needs of the CAM scores, without NumPy (a no-op rebuild plans every job).
The scores themselves are in :mod:`atlas.analysis.scores`."""

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
