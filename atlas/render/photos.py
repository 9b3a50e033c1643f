"""Assets drawn without TensorFlow: photos and the stitched unit grids of a layer."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from atlas.cache.store import Cache
from atlas.data.images import encode_jpeg, encode_webp, open_rgb
from atlas.data.scan import DatasetImage
from atlas.plan.jobs import ENCODING
from atlas.render import draw


def render_photo(image: DatasetImage, cache: Cache, key: str, side: int, thumb: int) -> None:
    photo = open_rgb(image.path)
    cache.put(
        key,
        {"width": photo.width, "height": photo.height},
        {
            "photo.jpg": encode_jpeg(
                draw.fit(photo, side), quality=ENCODING["photo"]["photo_quality"]
            ),
            "thumb.jpg": encode_jpeg(
                draw.fit(photo, thumb), quality=ENCODING["photo"]["thumb_quality"]
            ),
        },
    )


def stitch_grids(
    unit_pictures: Sequence[bytes], objectives: Sequence[float | None], best: int
) -> dict[str, bytes]:
    """The layer's grid of all units in unit order and of the best n x n by objective."""
    pictures = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in unit_pictures]
    order = sorted(
        range(len(pictures)), key=lambda i: -(objectives[i] if objectives[i] is not None else -1e30)
    )
    best_n = order[: best * best]
    # The layer page shows every unit's own picture; this overview is for downloading
    # at a glance, so its cells stay small (the default site has 3,736 units).
    encoding = ENCODING["grid"]
    cell = encoding["all_cell_big_layer"] if len(pictures) > 256 else encoding["all_cell"]
    return {
        "all.webp": encode_webp(draw.stitch(pictures, cell=cell), quality=encoding["all_quality"]),
        "best.webp": encode_webp(
            draw.stitch(
                [pictures[i] for i in best_n],
                columns=min(best, len(best_n)),
                cell=encoding["best_cell"],
            ),
            quality=encoding["best_quality"],
        ),
    }
