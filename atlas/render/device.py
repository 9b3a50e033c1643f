"""Where and how fast rendering runs: the batch size, the GPU's free memory, precision.

* Batch size: each image of a filter-visualization batch holds every layer's activations
  about three times over (forward values, their gradients, temporaries). On the CPU the
  batch fills a fixed :data:`MEMORY_BUDGET_BYTES`; when the backend sees a GPU it fills a
  share of the GPU's free memory instead (:func:`gpu_batch_size`, a pure function).
* Batch shapes: a backend that compiles once per input shape (JAX, ``B.FIXED_SHAPES``)
  gets the short last batch padded to a size already compiled (:class:`BatchShapes`).
* Precision: ``render.precision: mixed_bfloat16`` renders units with a copy of the feature
  model whose layers compute in bfloat16 (Keras mixed precision: variables stay float32,
  each layer casts them and its input to bfloat16). The pictures, their Adam state and the
  objectives stay float32; only the model's arithmetic is bfloat16.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

import numpy as np

from atlas.render.engine import B, keras

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "mixed_bfloat16")
# 32 images per unit batch on a CPU: the default model's three lucid renderers took
# 139 ms of CPU per picture in batches of 32 and 147 ms in batches of 64 (alone, one
# intra-op thread as in a build), and a batch of 32 holds ~170 MiB less. In whole cold
# default builds: peak 1,843-1,861 MiB instead of 1,968-1,997, for 255-259 s instead of
# 236-251 s (this machine's spread is ~10 s).
MAX_BATCH = 32
# A GPU gains from larger batches for longer; 256 bounds a batch's latency and tracing.
GPU_MAX_BATCH = 256
# Activations kept for the backward pass, their gradients and temporaries: ~3 copies.
MEMORY_BUDGET_BYTES = 3 * 2**30
# Share of the GPU's free memory a batch may take (cuDNN workspaces, fragmentation, the
# traced functions of other layers still alive need the rest).
GPU_MEMORY_SHARE = 0.6
_BYTES_PER_ACTIVATION = 4 * 3


def gpu_batch_size(free_bytes: int, per_image_bytes: float, max_batch: int = GPU_MAX_BATCH) -> int:
    """Images per batch that fit in :data:`GPU_MEMORY_SHARE` of ``free_bytes``.

    Args:
        free_bytes: memory free on the GPU for this process.
        per_image_bytes: what one image of the batch needs (see :func:`per_image_bytes`).
        max_batch: the largest batch returned.

    Returns:
        a batch size in ``[1, max_batch]`` (1 even when nothing seems free: the backend
        then reports the real out-of-memory error rather than atlas refusing to try).
    """
    if per_image_bytes <= 0:
        raise ValueError(f"per-image bytes must be positive, got {per_image_bytes}")
    fits = int(max(free_bytes, 0) * GPU_MEMORY_SHARE // per_image_bytes)
    return int(min(max(fits, 1), max_batch))


def per_image_bytes(model: keras.Model, size: int) -> float:
    """Bytes one image of a batch needs: pixels x channels of every layer's output, x3.

    Each layer holds ``(size / stride)^2 x channels`` floats per image (the stride read
    from fixed shapes, else accumulated from ``strides`` attributes). Counted at float32
    also under mixed precision, where it overestimates: the batch errs on the safe side.
    """
    height = model.input_shape[1]
    stride, floats = 1.0, 0.0
    for layer in model.layers:
        shape = getattr(getattr(layer, "output", None), "shape", None)
        if shape is None or len(shape) != 4:
            continue
        if height is not None and shape[1] is not None:
            stride = height / shape[1]
        else:
            stride *= int(np.prod(getattr(layer, "strides", (1,))[:1]))
        floats += (size / stride) ** 2 * shape[-1]
    return max(floats, 1.0) * _BYTES_PER_ACTIVATION


# Forward passes only (Score-CAM's masked inputs, deletion/insertion curves): no gradients
# are kept, so a third of per_image_bytes per image, within this budget. The default
# MobileNet gets ~94 masked inputs per pass (as fast per input as 256 on this CPU; 256 took
# a cold default build, its unit pictures running beside, to 2,045 MiB at its peak).
FORWARD_BUDGET_BYTES = 0.5 * 2**30


def forward_batch(model: keras.Model, size: int, most: int) -> int:
    """Images per forward-only batch: at most ``most``, fewer for a model whose
    activations would not fit :data:`FORWARD_BUDGET_BYTES` (a batch of 256 through
    InceptionResNetV2 at 299 px held ~8 GB), at least 1."""
    need = per_image_bytes(model, size) / 3
    return int(min(most, max(1, FORWARD_BUDGET_BYTES // need)))


def gpu_free_bytes() -> int | None:
    """Free memory of the first GPU the backend sees, or None without a GPU.

    The backend reports what its own allocator holds (``B.gpu_memory``: TensorFlow's
    ``get_memory_info``, JAX's ``memory_stats``) and, on JAX, the pool it may fill; else
    the device's total comes from ``nvidia-smi``. Free = total - what is held now. Without
    either total the CPU budget is used.
    """
    memory = B.gpu_memory()
    if memory is None:
        return None
    used, total = memory
    if total is None:
        total = _gpu_total_bytes()
    if total is None:
        return None
    return max(int(total) - int(used), 0)


def _gpu_total_bytes() -> int | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits", "--id=0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return int(float(out.strip().splitlines()[0]) * 2**20)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as error:
        log.debug("nvidia-smi gave no memory total: %s", error)
        return None


def auto_batch_size(model: keras.Model, size: int) -> int:
    """Images per batch: from the GPU's free memory when the backend sees a GPU, else
    :data:`MEMORY_BUDGET_BYTES` (at most :data:`MAX_BATCH`).

    Args:
        model: the feature model.
        size: side of the images fed to the model.
    """
    need = per_image_bytes(model, size)
    free = gpu_free_bytes()
    if free is not None:
        batch = gpu_batch_size(free, need)
        log.debug(
            "GPU: %.1f GiB free, %.1f MB per image: batch %d", free / 2**30, need / 1e6, batch
        )
        return batch
    return int(min(max(MEMORY_BUDGET_BYTES // need, 1), MAX_BATCH))


def with_precision(model: keras.Model, precision: str) -> keras.Model:
    """The model computing at ``precision``, its outputs float32.

    ``float32`` returns ``model`` itself. ``mixed_bfloat16`` returns a copy whose layers
    have the ``mixed_bfloat16`` dtype policy and the same (float32) weights; the original
    is left untouched (it also serves activations, Grad-CAM and ``own_activation``).
    """
    if precision == "float32":
        return model
    if precision not in PRECISIONS:
        raise ValueError(f"expected one of: {', '.join(PRECISIONS)}; got {precision!r}")

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = precision
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    for source, target in zip(model.layers, copy.layers, strict=True):
        target.set_weights(source.get_weights())
    outputs = [keras.ops.cast(output, "float32") for output in copy.outputs]
    return keras.Model(copy.inputs, outputs[0] if len(outputs) == 1 else outputs)


class BatchShapes:
    """The batch sizes one compiled function is run at.

    Where the backend compiles once per input shape (JAX: ``B.FIXED_SHAPES``) a batch is
    padded with zero rows to the smallest size already run that holds it, else to the next
    power of two, so the short last batch of a stream costs no new compilation; callers
    drop the padded rows. On TensorFlow each batch runs as it is (one trace with unknown
    sizes serves them all): nothing changes there.
    """

    def __init__(self) -> None:
        self.sizes: set[int] = set()  # every size run so far

    def rows(self, count: int, most: int | None = None) -> int:
        """The rows a batch of ``count`` is run with (at most ``most``, if given)."""
        if not B.FIXED_SHAPES:
            return count
        fits = [size for size in self.sizes if size >= count]
        size = min(fits) if fits else 1 << max(count - 1, 0).bit_length()
        size = size if most is None else min(size, most)
        self.sizes.add(size)
        return size

    def pad(self, array: np.ndarray) -> np.ndarray:
        """``array`` with zero rows appended up to :meth:`rows` of its length."""
        missing = self.rows(len(array)) - len(array)
        if missing == 0:
            return array
        return np.concatenate([array, np.zeros((missing, *array.shape[1:]), array.dtype)])
