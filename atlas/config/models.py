"""Parsing the ``models`` list and the ``render`` blocks (top level and per model)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from atlas.config.atlas import AtlasSettings, parse_atlas
from atlas.config.methods import QUALITIES, parse_method_params
from atlas.config.schema import Checker, lookup
from atlas.config.settings import (
    _ID_PATTERN,
    APPLICATIONS,
    BACKENDS,
    CLASS_SPACES,
    METHODS,
    PRECISIONS,
    PREPROCESS_MODES,
    READ_AT,
    SPLITS,
    ModelConfig,
    RenderSettings,
)
from atlas.config.views import parse_unit_views


def _render(check: Checker, value: Any, path: str, base: RenderSettings) -> RenderSettings:
    data = check.mapping(
        value,
        path,
        (
            "method",
            "quality",
            "units_per_layer",
            "best_grid",
            "activation_channels",
            "top_k",
            "gradcam_alpha",
            "seed",
            "scorecam_channels",
            "precision",
            "backend",
            "faithfulness_photos",
            "scores",
            "warn_after",
            "unit_views",
            "classic",
            "lucid",
        ),
    )
    method = check.typed(data, "method", path, str, base.method)
    if "method" in data and method not in METHODS:
        check.problem(f"{path}.method", f"expected one of: {', '.join(METHODS)}; got {method!r}")
    settings = RenderSettings(
        method=method,
        quality=_choice(check, data, "quality", path, QUALITIES, base.quality),
        units_per_layer=check.typed(data, "units_per_layer", path, int, base.units_per_layer),
        best_grid=check.typed(data, "best_grid", path, int, base.best_grid),
        activation_channels=check.typed(
            data, "activation_channels", path, int, base.activation_channels
        ),
        top_k=check.typed(data, "top_k", path, int, base.top_k),
        gradcam_alpha=check.typed(data, "gradcam_alpha", path, float, base.gradcam_alpha),
        seed=check.typed(data, "seed", path, int, base.seed),
        scorecam_channels=check.typed(data, "scorecam_channels", path, int, base.scorecam_channels),
        precision=_choice(check, data, "precision", path, PRECISIONS, base.precision),
        backend=_choice(check, data, "backend", path, BACKENDS, base.backend),
        faithfulness_photos=check.typed(
            data, "faithfulness_photos", path, int, base.faithfulness_photos
        ),
        score_layers=_score_layers(check, data, path, base.score_layers),
        warn_after=check.typed(data, "warn_after", path, float, base.warn_after),
        unit_views=parse_unit_views(check, data, path, base.unit_views),
        classic={**base.classic, **parse_method_params(check, data, "classic", path)},
        lucid={**base.lucid, **parse_method_params(check, data, "lucid", path)},
    )
    _check_render_values(check, data, path, settings)
    if "backend" in data and path != "render":
        check.problem(
            f"{path}.backend",
            "one backend renders the whole build: set backend in the top-level render block",
        )
    return settings


def _score_layers(check: Checker, data: dict, path: str, base: int | None) -> int | None:
    """``scores: {layers: N | all}``: how many layers get deletion/insertion curves."""
    block = check.mapping(data.get("scores", {}), f"{path}.scores", ("layers",))
    value = block.get("layers", base)
    if value == "all" or value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        check.problem(
            f"{path}.scores.layers",
            f"expected a number of layers (at least 1) or all; got {value!r}",
        )
        return base
    return value


def _check_render_values(check: Checker, data: dict, path: str, settings: RenderSettings) -> None:
    """The ranges of the numbers set in this block."""
    # Only values set in this block are checked: a model's block inherits the top-level
    # values, whose problems are already reported once under `render`.
    for key in ("best_grid", "activation_channels", "top_k"):
        if key in data and getattr(settings, key) < 1:
            check.problem(f"{path}.{key}", f"must be at least 1, got {getattr(settings, key)}")
    if (
        "units_per_layer" in data
        and settings.units_per_layer is not None
        and settings.units_per_layer < 1
    ):
        check.problem(f"{path}.units_per_layer", "must be at least 1 (or left out for all)")
    if "gradcam_alpha" in data and not 0 <= settings.gradcam_alpha <= 1:
        check.problem(f"{path}.gradcam_alpha", "must be between 0 and 1")
    if "scorecam_channels" in data and settings.scorecam_channels < 0:
        check.problem(f"{path}.scorecam_channels", "must be at least 0 (0 leaves Score-CAM out)")
    if "warn_after" in data and settings.warn_after < 0:
        check.problem(f"{path}.warn_after", "must be at least 0 minutes (0: never warn)")
    if "faithfulness_photos" in data and settings.faithfulness_photos < 0:
        check.problem(
            f"{path}.faithfulness_photos", "must be at least 0 (0: no deletion/insertion curves)"
        )


def _plain(value: Any) -> bool:
    """Whether a value has one JSON text (it goes into cache keys): no dates, bytes, sets."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def _models(
    check: Checker, value: Any, render: RenderSettings, atlas: AtlasSettings | None = None
) -> tuple[ModelConfig, ...]:
    if not isinstance(value, list) or not value:
        check.problem("models", "expected a non-empty list of models")
        return ()
    models, seen = [], {}
    for index, item in enumerate(value):
        path = f"models[{index}]"
        model = _model(check, item, path, render, atlas or AtlasSettings())
        if model is None:
            continue
        if model.id in seen:
            check.problem(
                f"{path}.id", f"duplicate model id {model.id!r} (also models[{seen[model.id]}])"
            )
        seen[model.id] = index
        models.append(model)
    return tuple(models)


def _model(
    check: Checker, item: Any, path: str, render: RenderSettings, atlas: AtlasSettings
) -> ModelConfig | None:
    data = check.mapping(
        item,
        path,
        (
            "id",
            "title",
            "application",
            "file",
            "options",
            "weights",
            "sha256",
            "layers",
            "notes",
            "render",
            "classes",
            "trained_on",
            "read_at",
            "atlas",
        ),
    )
    if not data:
        if item is not None and not isinstance(item, dict):
            return None
        check.problem(path, "expected a mapping with at least id and application or file")
        return None
    model_id = check.typed(data, "id", path, str, "", required=True)
    if model_id and not _ID_PATTERN.match(model_id):
        check.problem(
            f"{path}.id",
            f"{model_id!r} is not a valid id: use letters, digits, "
            "'_', '-' and '.', starting with a letter or digit, at most 64",
        )
    application, file = _source(check, data, path)
    options = _options(check, data, path)
    weights = _weights(check, data, path, application)
    sha256 = check.typed(data, "sha256", path, str, None)
    if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", sha256):
        check.problem(f"{path}.sha256", "expected 64 lower-case hex digits")
    patterns = _layer_patterns(check, data, path)
    return ModelConfig(
        classes=_classes(check, data, path),
        trained_on=_choice(check, data, "trained_on", path, SPLITS, "none"),
        read_at=_choice(check, data, "read_at", path, READ_AT, "activation"),
        id=model_id,
        title=check.typed(data, "title", path, str, model_id),
        application=application,
        file=file,
        options=options,
        weights=weights,
        sha256=sha256,
        layers=patterns,
        notes=check.path(data, "notes", path),
        render=_render(check, data.get("render"), f"{path}.render", render),
        atlas=parse_atlas(check, data.get("atlas"), f"{path}.atlas", atlas),
    )


def _source(check: Checker, data: dict, path: str) -> tuple[str | None, Path | None]:
    """The model's ``application`` name or its ``.keras`` ``file``: exactly one."""
    application = check.typed(data, "application", path, str, None)
    file = check.path(data, "file", path)
    if ("application" in data) == ("file" in data):
        check.problem(
            path,
            "give exactly one of application (a Keras application name) "
            "or file (a .keras model file)",
        )
    if application is not None and application not in APPLICATIONS:
        hint = difflib.get_close_matches(application, APPLICATIONS, n=1)
        check.problem(
            f"{path}.application",
            f"unknown application {application!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + "; expected one of: "
            + ", ".join(APPLICATIONS),
        )
    if file is not None and file.suffix != ".keras":
        check.problem(f"{path}.file", f"expected a .keras model file, got {file.name}")
    elif file is not None and file.is_dir():
        check.problem(f"{path}.file", f"expected a .keras model file, got a folder: {file}")
    return application, file


def _options(check: Checker, data: dict, path: str) -> dict[str, Any]:
    """``options``: constructor arguments of an application, ``preprocess`` for a file."""
    options = check.typed(data, "options", path, dict, {})
    if not _plain(options):
        check.problem(
            f"{path}.options",
            "expected names mapped to numbers, strings, "
            f"true/false or lists of them, got {options!r}",
        )
        options = {}
    if "input_shape" in options:
        options = _input_shape(check, options, path)
    if "application" in data and "file" not in data and "preprocess" in options:
        check.problem(
            f"{path}.options.preprocess",
            "is only for models from a file; an "
            "application uses its own keras.applications preprocess_input",
        )
    if "file" in data and "application" not in data:
        for key in options:
            if key != "preprocess":
                check.problem(
                    f"{path}.options.{key}",
                    "unknown option for a model from a file; expected only: preprocess",
                )
        mode = options.get("preprocess", "none")
        if mode not in PREPROCESS_MODES:
            check.problem(
                f"{path}.options.preprocess",
                f"expected one of: {', '.join(PREPROCESS_MODES)}; got {mode!r}",
            )
    for forbidden in ("weights", "include_top"):
        if forbidden in options:
            check.problem(
                f"{path}.options.{forbidden}",
                "is set by atlas; use the model's weights key"
                if forbidden == "weights"
                else "is set by atlas",
            )
    return options


def _input_shape(check: Checker, options: dict[str, Any], path: str) -> dict[str, Any]:
    shape = options["input_shape"]
    if not (
        isinstance(shape, list)
        and len(shape) == 3
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        check.problem(f"{path}.options.input_shape", f"expected [height, width, 3], got {shape!r}")
    elif shape[0] != shape[1]:
        check.problem(
            f"{path}.options.input_shape",
            f"{shape[0]}x{shape[1]} is not square: "
            "atlas renders square pictures; use e.g. "
            f"[{max(shape[:2])}, {max(shape[:2])}, 3]",
        )
    else:
        return {**options, "input_shape": tuple(shape)}
    return options


def _weights(check: Checker, data: dict, path: str, application: str | None) -> str | Path:
    """``imagenet``, ``none`` or a weights file that exists."""
    weights_value = check.typed(data, "weights", path, str, "imagenet" if application else "none")
    if weights_value in ("imagenet", "none"):
        return weights_value
    resolved = check.resolve(weights_value, f"{path}.weights")
    found, folder, error = lookup(resolved) if resolved else (True, False, None)
    if error or not found or folder:
        check.problem(
            f"{path}.weights",
            f"weights file not found: {weights_value} (expected imagenet, none or a weights file)",
        )
    return resolved or Path(weights_value)


def _layer_patterns(check: Checker, data: dict, path: str) -> tuple[str, ...] | None:
    """``layers``: None for every conv layer, else the names or glob patterns."""
    layers = data.get("layers", "all")
    if layers == "all" or layers is None:
        return None
    if isinstance(layers, list) and layers and all(isinstance(x, str) for x in layers):
        return tuple(layers)
    check.problem(
        f"{path}.layers", f"expected all or a list of layer names or glob patterns, got {layers!r}"
    )
    return None


def _choice(
    check: Checker, data: dict, key: str, path: str, choices: tuple[str, ...], default: str
) -> str:
    value = check.typed(data, key, path, str, default)
    if value not in choices:
        hint = difflib.get_close_matches(str(value), choices, n=1)
        check.problem(
            f"{path}.{key}",
            f"expected one of: {', '.join(choices)}; got {value!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else ""),
        )
        return default
    return value


def _classes(check: Checker, data: dict, path: str) -> str | Path | None:
    """``imagenet``, ``breeds``, ``species``, ``none`` or a labels file (one per line)."""
    value = check.typed(data, "classes", path, str, None)
    if value is None or value in CLASS_SPACES:
        return value
    resolved = check.resolve(value, f"{path}.classes")
    found, folder, _ = lookup(resolved) if resolved else (False, False, None)
    if resolved is not None and found and not folder:
        return resolved
    hint = difflib.get_close_matches(value, CLASS_SPACES, n=1)
    check.problem(
        f"{path}.classes",
        f"expected one of: {', '.join(CLASS_SPACES)} or a labels "
        f"file (one label per line, in output order); {value!r} is neither"
        + (f" (did you mean {hint[0]!r}?)" if hint else ""),
    )
    return None
