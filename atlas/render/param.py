"""Image parameterizations for regularized feature visualization, after Lucid's optvis.

Lucid (``lucid/optvis/param/spatial.py`` and ``color.py``) optimises a picture through two
changes of variables that make plain gradient ascent far better conditioned: a Fourier
spectrum scaled by 1/f (so every spatial frequency moves at about the same speed instead
of high frequencies winning) and a decorrelated colour space (so the optimiser does not
push the strongly correlated RGB channels apart into rainbow noise).

The frozen parameter values of both rendering methods and their presets live here too:
their repr goes into the cache key.

Each image of a batch is parameterized independently: the initial values come from the
image's own seed, so a unit renders the same picture alone or in a batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

# Square root of the colour correlation of ImageNet pixels, from Lucid's param/color.py.
COLOR_CORRELATION_SVD_SQRT = np.asarray(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32
)
_MAX_NORM_SVD_SQRT = float(np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0)))
_COLOR_MATRIX_T = (COLOR_CORRELATION_SVD_SQRT / _MAX_NORM_SVD_SQRT).T
# Lucid's initial standard deviation of the spectrum (or pixel) variables.
INIT_STD = 0.01


def rfft2d_freqs(height: int, width: int) -> np.ndarray:
    """Frequency magnitude of each bin of ``tf.signal.rfft2d`` for an image of this size.

    Args:
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        float array of shape ``(height, width // 2 + 1)``.
    """
    freq_y = np.fft.fftfreq(height)[:, None]
    freq_x = np.fft.rfftfreq(width)[None, :]
    return np.sqrt(freq_x * freq_x + freq_y * freq_y)


def spectrum_scale(height: int, width: int, decay_power: float = 1.0) -> np.ndarray:
    """The 1/f scaling of the spectrum variables, as in Lucid's ``fft_image``.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        decay_power: exponent of the 1/f law.

    Returns:
        float32 array of shape ``(height, width // 2 + 1)``.
    """
    freqs = rfft2d_freqs(height, width)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(height, width)) ** decay_power
    return (scale * np.sqrt(height * width)).astype(np.float32)


def variable_shape(size: int, fft: bool) -> tuple[int, ...]:
    """Shape of one image's optimisation variable (without the batch axis).

    Args:
        size: side of the square picture in pixels.
        fft: whether the picture is parameterized by its Fourier spectrum.

    Returns:
        ``(2, 3, size, size // 2 + 1)`` (real and imaginary parts) for FFT, else
        ``(size, size, 3)``.
    """
    return (2, 3, size, size // 2 + 1) if fft else (size, size, 3)


def initial_variables(seeds: list[int], size: int, fft: bool) -> np.ndarray:
    """Random starting values, each image from its own seed.

    Args:
        seeds: one seed per image.
        size: side of the square picture in pixels.
        fft: whether the picture is parameterized by its Fourier spectrum.

    Returns:
        float32 array of shape ``(len(seeds),) + variable_shape(size, fft)``.
    """
    shape = variable_shape(size, fft)
    return np.stack(
        [np.random.default_rng(seed).normal(0.0, INIT_STD, shape) for seed in seeds]
    ).astype(np.float32)


def to_pixels(variables: tf.Tensor, size: int, fft: bool, decorrelate: bool) -> tf.Tensor:
    """Map optimisation variables to raw RGB pixels in [0, 255].

    Args:
        variables: ``(batch,) + variable_shape(size, fft)`` float32 tensor.
        size: side of the square picture in pixels.
        fft: whether ``variables`` is a Fourier spectrum.
        decorrelate: whether to map from the decorrelated colour space to RGB.

    Returns:
        float32 tensor ``(batch, size, size, 3)`` in [0, 255].
    """
    if fft:
        spectrum = tf.complex(variables[:, 0], variables[:, 1]) * tf.cast(
            spectrum_scale(size, size), tf.complex64
        )
        image = tf.signal.irfft2d(spectrum, fft_length=[size, size])
        # Lucid divides by 4 so that the sigmoid starts in its linear range.
        image = tf.transpose(image, (0, 2, 3, 1)) / 4.0
    else:
        image = variables
    if decorrelate:
        image = tf.tensordot(image, tf.constant(_COLOR_MATRIX_T), axes=[[3], [0]])
    return tf.sigmoid(image) * 255.0


@dataclass(frozen=True)
class ClassicParams:
    """The classic Keras recipe: normalised-gradient ascent with progressive upscaling.

    Attributes:
        start_size: side of the first (smallest) picture in pixels.
        upscale_steps: number of x``upscale_factor`` bicubic upscalings.
        upscale_factor: growth of the side per upscaling.
        steps_per_size: gradient steps at every size (the last size included).
        step_size: pixels (RMS over the picture) moved per step.
        noise: peak-to-peak width of the uniform noise around grey 128 at the start.
        contrast: standard deviation of the displayed picture, as a fraction of 255.
    """

    start_size: int = 80
    upscale_steps: int = 9
    upscale_factor: float = 1.2
    steps_per_size: int = 15
    step_size: float = 1.0
    noise: float = 20.0
    contrast: float = 0.15

    def sizes(self, model_size: int | None = None) -> tuple[int, ...]:
        """The picture side at each stage, scaled to end at ``model_size`` if given."""
        sizes = [self.start_size * self.upscale_factor**k for k in range(self.upscale_steps + 1)]
        if model_size is not None:
            sizes = [s * model_size / sizes[-1] for s in sizes]
        return tuple(max(int(s + 1e-6), 1) for s in sizes)

    @property
    def total_steps(self) -> int:
        """Gradient steps over all stages."""
        return (self.upscale_steps + 1) * self.steps_per_size


@dataclass(frozen=True)
class LucidParams:
    """Regularised feature visualization after Lucid's optvis.

    Attributes:
        size: side of the picture in pixels.
        steps: Adam steps.
        learning_rate: Adam learning rate on the (spectrum) variables.
        jitter: largest random translation per step, in pixels.
        scales: random zoom factors to choose from each step.
        angles: random rotations (degrees) to choose from each step.
        decorrelate: optimise in Lucid's decorrelated colour space.
        fft: optimise the picture's 1/f-scaled Fourier spectrum instead of its pixels.
    """

    size: int = 128
    steps: int = 512
    learning_rate: float = 0.05
    jitter: int = 8
    scales: tuple[float, ...] = tuple(1 + (i - 5) / 50 for i in range(11))
    angles: tuple[float, ...] = tuple(float(a) for a in range(-10, 11))
    decorrelate: bool = True
    fft: bool = True


# The recipe of the classic VGG16 script: ~80 px -> 412 px, 9 upscalings of x1.2, 15 steps.
VGG_CLASSIC = ClassicParams()
# Lucid's own defaults (512 steps at 128 px), for users with time.
LUCID_FULL = LucidParams()
# Fitted to the embedded 128-px MobileNet (fully-convolutional feature models) and a
# ~65 ms per-unit budget on 2 CPU cores: all 3,736 units in ~4 minutes. Lucid at 96 px and
# 28 steps measured ~60 ms/unit (trace included) on 128-unit layers; 48 steps at 128 px
# looked better but cost ~6x more. Rotation is off: the projective warp it needs was 4x
# slower than crop_and_resize here. Lucid is the default because its class units are
# recognisable (pug, golden retriever faces) where the classic ones are texture mush.
DEFAULT_CLASSIC = ClassicParams(
    start_size=64, upscale_steps=2, upscale_factor=2**0.5, steps_per_size=8, step_size=4.0
)
DEFAULT_LUCID = LucidParams(
    size=96,
    steps=28,
    learning_rate=0.15,
    jitter=4,
    scales=(0.95, 0.975, 1.0, 1.025, 1.05),
    angles=(),
)
DEFAULT_METHOD = "lucid"


def default_params_for(
    input_size: int, method: str = DEFAULT_METHOD
) -> ClassicParams | LucidParams:
    """Default parameters for a model's input size.

    Small inputs (< 224 px, the embedded MobileNet) get the budget settings; ImageNet-size
    models get the well-known recipes (VGG16 script for classic, Lucid's own for lucid).

    Args:
        input_size: side of the model's input in pixels.
        method: ``"classic"`` or ``"lucid"``.

    Returns:
        the parameter value.

    Raises:
        ValueError: for an unknown method.
    """
    if method not in ("classic", "lucid"):
        raise ValueError(f"Expected one of: 'classic', 'lucid' but received: {method!r}")
    if input_size >= 224:
        return VGG_CLASSIC if method == "classic" else LUCID_FULL
    return DEFAULT_CLASSIC if method == "classic" else DEFAULT_LUCID
