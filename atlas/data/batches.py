"""Photos decoded in parallel into network-input batches."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from atlas.data.scan import DatasetImage, display_path
from atlas.errors import BadImageError

if TYPE_CHECKING:  # numpy loads only when images are decoded
    import numpy as np

log = logging.getLogger(__name__)


def iter_batches(
    images: Sequence[DatasetImage],
    size: tuple[int, int],
    batch_size: int = 64,
    workers: int = 2,
) -> Iterator[tuple[list[DatasetImage], np.ndarray]]:
    """Decode images in parallel and yield them as network-input batches, in order.

    At most two batches of images are decoded ahead of the consumer, so memory does not
    grow with the dataset. An image that fails to decode (it changed since the scan) is
    logged once and left out; batches are refilled, so only the last one is short.

    Args:
        images: the images, e.g. ``scan.images``.
        size: ``(height, width)`` of the network input.
        batch_size: images per batch.
        workers: decoding threads.

    Yields:
        ``(images in the batch, uint8 array of shape (N, height, width, 3))``, N >= 1.

    Raises:
        ValueError: ``batch_size`` or ``workers`` is not positive.
    """
    import numpy as np

    if batch_size < 1 or workers < 1:
        raise ValueError(f"batch_size and workers must be positive: {batch_size}, {workers}")
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        batch: list[DatasetImage] = []
        arrays: list[np.ndarray] = []
        for image, array in _decoded(images, size, pool, 2 * batch_size):
            batch.append(image)
            arrays.append(array)
            if len(batch) == batch_size:
                yield batch, np.stack(arrays)
                batch, arrays = [], []
        if batch:
            yield batch, np.stack(arrays)
    finally:
        # A consumer that stops early must not wait for the whole prefetch window.
        pool.shutdown(wait=True, cancel_futures=True)


def _decoded(
    images: Sequence[DatasetImage], size: tuple[int, int], pool: ThreadPoolExecutor, window: int
) -> Iterator[tuple[DatasetImage, np.ndarray]]:
    """Each image that decodes, in order, with at most ``window`` decodes in flight."""
    from atlas.data.images import load_array

    queue: deque[tuple[DatasetImage, Future[np.ndarray]]] = deque()
    pending = iter(images)

    def refill() -> None:
        for image in pending:
            queue.append((image, pool.submit(load_array, image.path, size)))
            if len(queue) >= window:
                return

    refill()
    while queue:
        image, future = queue.popleft()
        try:
            array = future.result()
        except BadImageError as error:
            log.warning("skipping %s: %s", display_path(image.path), error.reason)
            continue
        finally:
            refill()
        yield image, array
