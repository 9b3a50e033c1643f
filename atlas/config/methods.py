"""The parameters of both filter-visualization methods, and their presets.

No TensorFlow here: planning puts each unit's full parameter value (its repr) into the
unit's cache key, and config errors in overrides are found before any model loads.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from atlas.config.schema import Checker
from atlas.errors import ConfigError

# Overrides that must be at least 1 (other numbers at least 0; angles may be negative).
_AT_LEAST_ONE = ("start_size", "steps_per_size", "size", "steps")


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
        small_field: a layer whose receptive field is at most this share of the model
            input's side is rendered by the small-field recipe (:func:`layer_params`);
            0 never.
        small_field_learning_rate: the small-field recipe's Adam learning rate (on the
            pixels' logits).
        small_field_step_factor: the small-field recipe's Adam steps, as a multiple of
            ``steps`` (its layers' models are short, their steps cheap).
    """

    size: int = 128
    steps: int = 512
    learning_rate: float = 0.05
    jitter: int = 8
    scales: tuple[float, ...] = tuple(1 + (i - 5) / 50 for i in range(11))
    angles: tuple[float, ...] = tuple(float(a) for a in range(-10, 11))
    decorrelate: bool = True
    fft: bool = True
    small_field: float = 0.0
    small_field_learning_rate: float = 0.4
    small_field_step_factor: float = 1.0


# The recipe of the classic VGG16 script: ~80 px -> 412 px, 9 upscalings of x1.2, 15 steps.
VGG_CLASSIC = ClassicParams()
# Lucid's own defaults (512 steps at 128 px), for users with time.
LUCID_FULL = LucidParams()
# Fitted to the embedded 128-px MobileNet (fully-convolutional feature models) and a
# ~60 ms per-unit budget on 2 CPU cores: all 3,736 units in under 4 minutes. Lucid at
# 96 px: 28 steps at learning rate 0.15 measured ~70 ms/unit in a whole build (the cold
# build then took 5.5-6 minutes on a busy day); 22 steps at 0.2 look the same side by side
# (class units as legible, mean own activation 5 % lower) for ~15 % less time. 48 steps at
# 128 px looked better but cost ~6x more. Rotation is off: the projective warp it needs was
# 4x slower than crop_and_resize here. Lucid is the default because its class units are
# recognisable (pug, golden retriever faces) where the classic ones are texture mush.
DEFAULT_CLASSIC = ClassicParams(
    start_size=64, upscale_steps=2, upscale_factor=2**0.5, steps_per_size=8, step_size=4.0
)
#
# Layers that see a few pixels (receptive fields up to a quarter of the input's side:
# conv1 ... conv_pw_4 here) take the small-field recipe (layer_params): at the settings
# above their pictures lost to the photos (median activation ratio 0.85-1.08, issue 25).
# Measured on 8 units of each of the first 9 layers (BENCHMARKS.md): rendering at the
# model's 128 px instead of 96 (no resampling) or dropping jitter and zoom did nothing
# alone (median 1.00 either way); both together lifted conv_dw_2 ... conv_pw_3; free RGB
# pixels (no spectrum, no colour decorrelation: conv1's units want saturated, pixel-sharp
# colours) at learning rate 0.4 did the rest. The same 22 steps reach 1.11-2.01 on the
# default site, for 6 % less CPU in its unit stage (their models end at conv_pw_4).
# Half as many steps again there, 33: every unit of conv_pw_2 and conv_dw_3, two seeds
# each, gave conv_dw_3 1.19-1.21 at 22 steps, 1.21-1.23 at 32, 1.22-1.23 at 44 and 1.24 at
# 64. On the default site (side by side, BENCHMARKS.md) 33 steps lift conv_dw_3 to 1.201
# and cost 3.9 % more unit-stage CPU than before the recipe; 44 steps reached 1.23 for
# 12 %, over the 10 % budget.
DEFAULT_LUCID = LucidParams(
    size=96,
    steps=22,
    learning_rate=0.2,
    jitter=4,
    scales=(0.95, 0.975, 1.0, 1.025, 1.05),
    angles=(),
    small_field=0.25,
    small_field_step_factor=1.5,
)
# A first look at a big model: a quarter of the standard picture's area, half its steps.
DRAFT_CLASSIC = ClassicParams(
    start_size=48, upscale_steps=1, upscale_factor=2**0.5, steps_per_size=6, step_size=4.0
)
DRAFT_LUCID = LucidParams(
    size=64, steps=12, learning_rate=0.25, jitter=2, scales=(0.95, 1.0, 1.05), angles=()
)
# render.quality: (classic, lucid) per preset. "auto": standard below 224 px, fine above.
QUALITY_PRESETS = {
    "draft": (DRAFT_CLASSIC, DRAFT_LUCID),
    "standard": (DEFAULT_CLASSIC, DEFAULT_LUCID),
    "fine": (VGG_CLASSIC, LUCID_FULL),
}
QUALITIES = ("auto", *QUALITY_PRESETS)
DEFAULT_METHOD = "lucid"
# Diversity (Lucid's objectives.diversity): a unit's 4 pictures are optimised together, each
# for its unit's mean minus DIVERSITY_WEIGHT x the mean cosine similarity between the Gram
# matrix of its layer's activations and those of the 3 others (a cosine is at most 1).
DIVERSITY_PICTURES = 4
DIVERSITY_WEIGHT = 5.0


def layer_params(
    params: ClassicParams | LucidParams, field: int | None, input_size: int
) -> ClassicParams | LucidParams:
    """The parameters one layer's unit pictures are rendered with.

    A lucid layer whose receptive field is at most ``small_field`` of the input's side
    takes the small-field recipe: its picture at the model's input size (the ratio is
    measured there; no resampling), no jitter, zoom or rotation (a unit that sees a few
    pixels wants a pattern tiled in step with the layer's stride), and free RGB pixels
    at ``small_field_learning_rate`` for ``small_field_step_factor`` times the steps.
    Every other layer (and the classic method) keeps ``params``.

    Args:
        params: the model's unit-picture parameters.
        field: the layer's receptive field in input pixels (None: unknown).
        input_size: side of the model's input in pixels.
    """
    small = getattr(params, "small_field", 0.0)
    if not small or field is None or field > small * input_size:
        return params
    return dataclasses.replace(
        params,
        size=input_size,
        learning_rate=params.small_field_learning_rate,
        steps=max(1, round(params.steps * params.small_field_step_factor)),
        small_field_step_factor=1.0,
        jitter=0,
        scales=(1.0,),
        angles=(),
        decorrelate=False,
        fft=False,
        small_field=0.0,
    )


def recipe_words(params: ClassicParams | LucidParams, field: int | None, input_size: int) -> str:
    """How one layer's unit pictures are rendered, in a few words (its layer page)."""
    own = layer_params(params, field, input_size)
    if isinstance(own, ClassicParams):
        return f"classic, {own.total_steps} steps"
    words = f"lucid, {own.steps} steps at {own.size} px"
    if own is params:
        return words
    return (
        f"{words}: the small-field recipe (a receptive field of at most "
        f"{params.small_field:.0%} of the input's side): free pixels, no jitter or zoom"
    )


def default_params_for(
    input_size: int, method: str = DEFAULT_METHOD, quality: str = "auto"
) -> ClassicParams | LucidParams:
    """Default parameters for a model's input size and ``render.quality``.

    With ``auto``, small inputs (< 224 px, the embedded MobileNet) get the budget settings
    (``standard``); ImageNet-size models get the well-known recipes (``fine``: VGG16
    script for classic, Lucid's own for lucid).

    Args:
        input_size: side of the model's input in pixels.
        method: ``"classic"`` or ``"lucid"``.
        quality: ``auto``, ``draft``, ``standard`` or ``fine`` (:data:`QUALITY_PRESETS`).

    Returns:
        the parameter value.

    Raises:
        ValueError: for an unknown method.
    """
    if method not in ("classic", "lucid"):
        raise ValueError(f"Expected one of: 'classic', 'lucid' but received: {method!r}")
    if quality == "auto":
        quality = "fine" if input_size >= 224 else "standard"
    classic, lucid = QUALITY_PRESETS[quality]
    return classic if method == "classic" else lucid


def resolve_params(
    method: str, input_size: int, overrides: dict[str, Any], key_path: str, quality: str = "auto"
) -> ClassicParams | LucidParams:
    """The defaults for the model's input size with the config's overrides applied.

    The overrides were checked when the config was read (:func:`parse_method_params`, the
    one place that validates them); here they only take the field's type (a list becomes
    a tuple, an integer a float where the field is a float), so the parameter value and
    its repr in the cache keys are the same however the number was written.

    Args:
        method: ``"classic"`` or ``"lucid"``.
        input_size: side of the model's input in pixels.
        overrides: ``render.<method>`` from the config.
        key_path: where the overrides are in the config, for error messages.
        quality: ``render.quality``, the preset the overrides apply to.

    Raises:
        ConfigError: an override names no parameter of the method (overrides that did not
            come through the config loader).
    """
    base = default_params_for(input_size, method, quality)
    fields = {field.name for field in dataclasses.fields(base)}
    unknown = [
        (
            f"{key_path}.{name}",
            f"unknown parameter of the {method} method; expected "
            f"one of: {', '.join(sorted(fields))}",
        )
        for name in overrides
        if name not in fields
    ]
    if unknown:
        raise ConfigError(unknown)
    clean = {}
    for name, value in overrides.items():
        current = getattr(base, name)
        if isinstance(current, tuple):
            value = tuple(value) if isinstance(value, list | tuple) else (value,)
        elif isinstance(current, float):
            value = float(value)
        clean[name] = value
    return dataclasses.replace(base, **clean)


def method_params(method: str) -> dict[str, tuple[str, float]]:
    """A method's parameter names, each with its kind ("int", "number", "bool" or "numbers",
    a list) and smallest value, from the parameter dataclass."""
    fields = {}
    for param in dataclasses.fields(ClassicParams if method == "classic" else LucidParams):
        default = param.default
        kind = (
            "bool"
            if isinstance(default, bool)
            else "int"
            if isinstance(default, int)
            else "numbers"
            if isinstance(default, tuple)
            else "number"
        )
        least = 1 if param.name in _AT_LEAST_ONE else -360 if param.name == "angles" else 0
        fields[param.name] = (kind, least)
    return fields


def parse_method_params(check: Checker, data: dict, key: str, path: str) -> dict[str, Any]:
    """Overrides of a method's parameters, checked against its dataclass's fields."""
    value = check.typed(data, key, path, dict, {})
    fields = method_params(key)
    clean = {}
    for name, item in value.items():
        where = f"{path}.{key}.{name}"
        if name not in fields:
            hint = difflib.get_close_matches(str(name), fields, n=1)
            check.problem(
                where,
                "unknown parameter"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; the {key} method's parameters are: "
                + ", ".join(fields),
            )
            continue
        kind, least = fields[name]
        problem = _param_problem(item, kind, least)
        if problem:
            check.problem(where, f"{problem}, got {item!r}")
            continue
        clean[str(name)] = tuple(item) if isinstance(item, list) else item
    return clean


def _param_problem(item: Any, kind: str, least: float) -> str | None:
    def number(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool) and x == x

    if kind == "bool":
        return None if isinstance(item, bool) else "expected true or false"
    if kind == "numbers":
        ok = isinstance(item, list) and all(number(x) and x >= least for x in item)
        return (
            None
            if ok
            else "expected a list of numbers" + (f" of at least {least:g}" if least >= 0 else "")
        )
    ok = number(item) and (kind == "number" or isinstance(item, int)) and item >= least
    return (
        None
        if ok
        else f"expected {'an integer' if kind == 'int' else 'a number'} of at least {least:g}"
    )
