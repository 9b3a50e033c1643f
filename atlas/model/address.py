"""Content addresses of a model's tensors: what computes them, not what they are called.

A unit's picture is a function of the computation from raw pixels to the unit's tensor:
the preprocessing, and every operation on the way with its configuration and weights.
The address of a tensor is a Merkle digest over exactly that, so two models that share a
frozen backbone give its tensors the same addresses (and share their cached pictures),
whatever the layers are named or however deeply the backbone is nested.

Preprocessing is folded into one canonical per-channel affine map before it is hashed:
``keras.applications.mobilenet.preprocess_input`` outside the model, a ``Rescaling(1/127.5,
offset=-1)`` layer or ``inputs / 127.5 - 1.0`` written with ``keras.ops`` inside it all give
the same address.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

_CHANNELS = 3
# Configuration keys that do not change what a layer computes at inference.
_IGNORED_KEYS = ("name", "trainable", "seed")
_IGNORED_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Affine:
    """``y[..., c] = x[..., perm[c]] * scale[c] + offset[c]`` on raw RGB pixels."""

    perm: tuple[int, ...] = (0, 1, 2)
    scale: tuple[float, ...] = (1.0, 1.0, 1.0)
    offset: tuple[float, ...] = (0.0, 0.0, 0.0)

    def then(self, scale: Sequence[float], offset: Sequence[float]) -> Affine:
        """This map followed by ``y * scale + offset`` (per channel)."""
        return Affine(
            self.perm,
            tuple(a * s for a, s in zip(self.scale, scale, strict=True)),
            tuple(b * s + o for b, s, o in zip(self.offset, scale, offset, strict=True)),
        )

    def canonical(self) -> list:
        def rounded(values: Sequence[float]) -> list[float]:
            return [float(f"{v:.7g}") + 0.0 for v in values]  # + 0.0: no negative zero

        return [list(self.perm), rounded(self.scale), rounded(self.offset)]


def preprocess_affine(mode: str) -> Affine:
    """The affine map of ``keras.applications.imagenet_utils.preprocess_input(mode=...)``.

    Args:
        mode: ``none``, ``tf``, ``torch`` or ``caffe``.
    """
    if mode == "none":
        return Affine()
    if mode == "tf":
        return Affine(scale=(1 / 127.5,) * 3, offset=(-1.0,) * 3)
    if mode == "torch":
        return Affine(
            scale=tuple(1 / (255.0 * s) for s in _IMAGENET_STD),
            offset=tuple(-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD, strict=True)),
        )
    if mode == "caffe":
        return Affine(perm=(2, 1, 0), offset=tuple(-m for m in _CAFFE_MEAN_BGR))
    raise ValueError(f"unknown preprocessing mode {mode!r}")


def digest(*parts: object) -> str:
    """sha256 of the canonical JSON of ``parts`` (numpy values by shape and bytes)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value: object) -> object:
    if isinstance(value, np.ndarray):
        return array_digest(value)
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)


def array_digest(value: np.ndarray) -> str:
    array = np.ascontiguousarray(value)
    hasher = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    hasher.update(array.tobytes())
    return hasher.hexdigest()


def weights_digest(weights: Sequence[np.ndarray]) -> str | None:
    """One digest over a layer's weights in order, None when it has none."""
    if not weights:
        return None
    return digest([array_digest(np.asarray(w)) for w in weights])


def config_digest(config: dict) -> str:
    """A layer's configuration without what does not change its computation."""
    kept = {
        key: value
        for key, value in config.items()
        if key not in _IGNORED_KEYS and not key.endswith(_IGNORED_SUFFIXES)
    }
    return digest(kept)


def per_channel(value: object) -> tuple[float, ...] | None:
    """A scalar or a 3-vector (any broadcastable shape) as 3 floats; None otherwise."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if array.size == 1:
        return (float(array.reshape(())),) * _CHANNELS
    if array.size == _CHANNELS and array.shape[-1] == _CHANNELS:
        return tuple(float(v) for v in array.reshape(-1))
    return None


def fold(
    kind: str,
    config: dict,
    weights: Sequence[np.ndarray],
    args: Sequence[object],
    tensor_index: int | None,
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The per-channel ``(scale, offset)`` of an elementwise affine operation, else None.

    Args:
        kind: the operation's class name.
        config: its configuration (layers) or ``{}``.
        weights: its weights as arrays.
        args: its positional arguments (tensors and constants).
        tensor_index: which argument is the tensor being followed.
    """
    if kind == "Rescaling":
        scale, offset = per_channel(config.get("scale")), per_channel(config.get("offset"))
        return (scale, offset) if scale and offset else None
    if kind == "Normalization":
        return _normalization(config, weights)
    if kind not in ("TrueDivide", "Divide", "Multiply", "Add", "Subtract") or len(args) != 2:
        return None
    constant = per_channel(args[1 - tensor_index]) if tensor_index in (0, 1) else None
    if constant is None:
        return None
    ones, zeros = (1.0,) * _CHANNELS, (0.0,) * _CHANNELS
    if kind in ("TrueDivide", "Divide"):
        if tensor_index != 0 or any(c == 0 for c in constant):
            return None
        return tuple(1 / c for c in constant), zeros
    if kind == "Multiply":
        return constant, zeros
    if kind == "Add":
        return ones, constant
    if tensor_index == 0:  # x - c
        return ones, tuple(-c for c in constant)
    return (-1.0,) * _CHANNELS, constant  # c - x


def _normalization(config: dict, weights: Sequence[np.ndarray]):
    if config.get("invert") or config.get("axis") not in (-1, [-1], (-1,), 3, [3]):
        return None
    if config.get("mean") is not None and config.get("variance") is not None:
        mean, variance = config["mean"], config["variance"]
    elif len(weights) >= 2:
        mean, variance = weights[0], weights[1]
    else:
        return None
    mean, variance = per_channel(mean), per_channel(variance)
    if mean is None or variance is None:
        return None
    epsilon = 1e-7  # keras.backend.epsilon(): Normalization divides by max(sqrt(var), eps)
    std = tuple(max(v**0.5, epsilon) for v in variance)
    return tuple(1 / s for s in std), tuple(-m / s for m, s in zip(mean, std, strict=True))
