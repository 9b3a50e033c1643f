"""Parsing the ``dataset`` block: the photos, their layout, classes, groups and masks.

Only ``images`` is required. The layout is detected at the scan when ``auto``; the ImageNet
class index defaults to the one atlas ships, and the pets' breed map is read only for the
Oxford layout (see :mod:`atlas.data.layouts`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atlas.config.schema import Checker
from atlas.config.settings import LAYOUTS, SHIPPED_BREEDS, SHIPPED_CLASS_INDEX, DatasetConfig

KEYS = (
    "name",
    "images",
    "layout",
    "annotations",
    "classes",
    "groups",
    "class_map",
    "masks",
    "class_index",
    "breeds",
    "detailed",
    "fetch_to",
)
DETAILED_MODES = ("all", "test", "trainval", "train", "val", "validation", "none")


def parse_dataset(check: Checker, value: Any) -> DatasetConfig:
    """The ``dataset`` block, every problem reported under its key."""
    data = check.mapping(value, "dataset", KEYS)
    if value is None:
        check.problem("dataset", "is required (at least images: the folder of your photos)")
    images = check.path(data, "images", "dataset", required=True, is_dir=True) or Path()
    layout = check.typed(data, "layout", "dataset", str, "auto")
    if layout not in LAYOUTS:
        check.problem("dataset.layout", f"expected one of: {', '.join(LAYOUTS)}; got {layout!r}")
        layout = "auto"
    mode, names, per_class = _detailed(check, data.get("detailed", "all"))
    class_index = data.get("class_index", SHIPPED_CLASS_INDEX)
    return DatasetConfig(
        name=check.typed(data, "name", "dataset", str, images.name or "photos"),
        images=images,
        annotations=check.path(data, "annotations", "dataset"),
        class_index=check.path({"class_index": class_index}, "class_index", "dataset") or Path(),
        breeds=_breeds(check, data),
        detailed=mode,
        detailed_names=names,
        per_breed=per_class,
        fetch_to=check.path(data, "fetch_to", "dataset", must_exist=False),
        layout=layout,
        classes=_classes(check, data),
        groups=check.path(data, "groups", "dataset"),
        class_map=check.path(data, "class_map", "dataset"),
        masks=check.path(data, "masks", "dataset", is_dir=True),
    )


def _breeds(check: Checker, data: dict) -> Path | None:
    """The pets' breed map: as given, else the shipped one (read for the Oxford layout)."""
    return check.path({"breeds": data.get("breeds", SHIPPED_BREEDS)}, "breeds", "dataset")


def _classes(check: Checker, data: dict) -> tuple[str, ...] | Path | None:
    """``classes``: the class order, a list of names or a file with one name per line."""
    value = data.get("classes")
    if value is None:
        return None
    if isinstance(value, list) and value and all(isinstance(x, str) and x.strip() for x in value):
        if len(set(value)) != len(value):
            twice = sorted({x for x in value if value.count(x) > 1})
            check.problem("dataset.classes", f"names {twice[0]!r} more than once")
        return tuple(value)
    if isinstance(value, str):
        return check.path(data, "classes", "dataset")
    check.problem(
        "dataset.classes",
        f"expected a list of class names or a file with one per line, got {value!r}",
    )
    return None


def _detailed(check: Checker, detailed: Any) -> tuple[str, tuple[str, ...], int]:
    """(mode, names, photos per class) of ``detailed``: which photos get image pages."""
    if isinstance(detailed, str) and detailed in DETAILED_MODES:
        return detailed, (), 0
    if isinstance(detailed, dict) and len(detailed) == 1:
        key, count = next(iter(detailed.items()))
        if (
            key in ("per_class", "per_breed")
            and isinstance(count, int)
            and not isinstance(count, bool)
            and count > 0
        ):
            return "per_breed", (), count
    if isinstance(detailed, list) and all(isinstance(n, str) for n in detailed):
        return "list", tuple(detailed), 0
    check.problem(
        "dataset.detailed",
        f"expected {', '.join(DETAILED_MODES)}, {{per_class: N}} or a list of image names, "
        f"got {detailed!r}",
    )
    return "all", (), 0
