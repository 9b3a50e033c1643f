"""``site_config.yaml``: a declared schema, validated completely before any work starts.

Every problem is collected as a ``(key path, message)`` pair, with the YAML line where
known, and reported together in one :class:`~atlas.errors.ConfigError` (exit code 2).
Nothing falls back to a default silently: an unknown key is an error with a suggestion.
Paths in the file are relative to the file's folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from atlas.errors import ConfigError
from atlas.folders import CACHE_MARKER, SITE_MARKER, folder_problem
from atlas.render.settings import ClassicParams, LucidParams
from atlas.schema import Checker, KeyLines, kind_of, lookup, why
from atlas.unit_views import UnitViews, parse_unit_views

log = logging.getLogger(__name__)

APPLICATIONS = (
    "VGG16", "VGG19", "MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large",
    "DenseNet121", "DenseNet169", "DenseNet201", "InceptionV3", "InceptionResNetV2",
    "Xception", "NASNetMobile", "NASNetLarge", "ResNet50", "ResNet101", "ResNet152",
    "ResNet50V2", "ResNet101V2", "ResNet152V2", "EfficientNetB0", "EfficientNetB1",
    "EfficientNetB2", "EfficientNetB3", "EfficientNetV2B0", "ConvNeXtTiny",
)
METHODS = ("lucid", "classic")
PRECISIONS = ("float32", "mixed_bfloat16")  # atlas.render.device.PRECISIONS, without TF
CLASS_SPACES = ("imagenet", "breeds", "species", "none")
SPLITS = ("trainval", "test", "none")
READ_AT = ("activation", "conv")
# How a model from a file wants its [0, 255] pixels (keras.applications.imagenet_utils modes).
PREPROCESS_MODES = ("none", "tf", "caffe", "torch")
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Overrides that must be at least 1 (other numbers at least 0; angles may be negative).
_AT_LEAST_ONE = ("start_size", "steps_per_size", "size", "steps")


@dataclass(frozen=True)
class RenderSettings:
    """How assets are rendered; the top-level ``render`` block, overridable per model."""

    method: str = "lucid"
    units_per_layer: int | None = None
    best_grid: int = 4
    activation_channels: int = 64
    top_k: int = 5
    gradcam_alpha: float = 0.4
    scorecam_channels: int = 6
    faithfulness_photos: int = 6
    seed: int = 0
    precision: str = "float32"  # or mixed_bfloat16: the unit renderer's arithmetic
    unit_views: UnitViews = UnitViews()  # the unit pages' views (atlas.unit_views)
    classic: dict[str, Any] = field(default_factory=dict)
    lucid: dict[str, Any] = field(default_factory=dict)

    def key_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "units_per_layer": self.units_per_layer,
            "best_grid": self.best_grid, "activation_channels": self.activation_channels,
            "top_k": self.top_k, "gradcam_alpha": self.gradcam_alpha, "seed": self.seed,
            "scorecam_channels": self.scorecam_channels, "precision": self.precision,
            "faithfulness_photos": self.faithfulness_photos,
            "unit_views": self.unit_views.key_dict(),
            "classic": dict(sorted(self.classic.items())),
            "lucid": dict(sorted(self.lucid.items())),
        }


@dataclass(frozen=True)
class ModelConfig:
    """One model of the atlas.

    ``application`` names a ``keras.applications`` constructor; ``file`` is a user's
    ``.keras`` file instead. ``weights`` is ``"imagenet"``, ``"none"`` or a file path.
    """

    id: str
    title: str
    application: str | None
    file: Path | None
    options: dict[str, Any]
    weights: str | Path
    sha256: str | None
    layers: tuple[str, ...] | None  # None: every conv layer
    notes: Path | None
    render: RenderSettings
    classes: str | Path | None = None  # imagenet | breeds | species | none | a labels file
    trained_on: str = "none"  # trainval | test | none: accuracy uses the other split
    read_at: str = "activation"  # activation | conv: which tensor a conv's units are read at


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    images: Path
    annotations: Path | None
    class_index: Path
    breeds: Path
    detailed: str  # "all" | "test" | "per_breed:N" | "none" | "list"
    detailed_names: tuple[str, ...] = ()
    per_breed: int = 0
    fetch_to: Path | None = None


@dataclass(frozen=True)
class SiteConfig:
    title: str
    output: Path
    base_path: str
    notes: Path | None
    templates: Path | None
    timestamp: bool
    max_size: int = 10**9  # bytes; GitHub Pages refuses sites over 1 GB


@dataclass(frozen=True)
class Config:
    path: Path
    site: SiteConfig
    cache: Path | str  # a folder, or an fsspec URL such as s3://bucket/atlas-cache
    dataset: DatasetConfig
    models: tuple[ModelConfig, ...]

    @property
    def root(self) -> Path:
        return self.path.parent


def load_config(path: Path | str) -> Config:
    """Read and validate a site config file.

    Args:
        path: the YAML file.

    Returns:
        The validated configuration, with every path resolved.

    Raises:
        ConfigError: listing every problem found, each with its key path and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([("", f"config file not found: {path}")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([("", f"cannot read config file {path}: {error}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError([(where, f"invalid YAML: {problem}")], source=str(path)) from None
    except (ValueError, RecursionError) as error:  # e.g. the date 2024-13-45, deep nesting
        raise ConfigError([("", f"invalid YAML value: {why(error)}")],
                          source=str(path)) from None
    check = Checker(KeyLines(text), path.resolve().parent)
    if not isinstance(data, dict):
        raise ConfigError([("", f"expected a mapping at the top level, got {kind_of(data)}")],
                          source=str(path))
    check.mapping(data, "", ("site", "cache", "dataset", "render", "models"))
    site = _site(check, data.get("site"))
    cache = _cache(check, check.typed(data, "cache", "", str, ".atlas-cache"))
    dataset = _dataset(check, data.get("dataset"))
    render = _render(check, data.get("render"), "render", RenderSettings())
    models = _models(check, data.get("models"), render)
    if not any(key.startswith(("site.output", "cache")) for key, _ in check.problems):
        _check_output(check, site.output, path.resolve().parent,
                      cache if isinstance(cache, Path) else None)
    if check.problems:
        raise ConfigError(check.problems, source=str(path))
    return Config(path=path.resolve(), site=site, cache=cache, dataset=dataset, models=models)


def _site(check: Checker, value: Any) -> SiteConfig:
    data = check.mapping(value, "site", ("title", "output", "base_path", "notes", "templates",
                                         "timestamp", "max_size"))
    base_path = check.typed(data, "base_path", "site", str, "")
    output = check.resolve(check.typed(data, "output", "site", str, "_site"), "site.output")
    return SiteConfig(
        title=check.typed(data, "title", "site", str, "atlas"),
        output=output or check.root / "_site",  # unusable: already a problem
        base_path=base_path,
        notes=check.path(data, "notes", "site"),
        templates=check.path(data, "templates", "site", is_dir=True),
        timestamp=check.typed(data, "timestamp", "site", bool, False),
        max_size=_max_size(check, data.get("max_size", "1GB")),
    )


def _max_size(check: Checker, value: Any) -> int:
    from atlas.estimate import parse_size

    try:
        size = parse_size(value)
    except (ValueError, TypeError) as error:
        check.problem("site.max_size", str(error))
        return 10**9
    if size <= 0:
        check.problem("site.max_size", f"must be more than 0, got {value!r}")
    return size


def _cache(check: Checker, value: str) -> Path | str | None:
    """A folder (relative to the config file) or an fsspec URL, kept as written."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
        if value.split("://", 1)[1].strip("/") == "":
            check.problem("cache", f"{value!r} names no bucket or folder")
        return value.rstrip("/")
    return check.resolve(value, "cache")


def _check_output(check: Checker, output: Path, project: Path, cache: Path | None) -> None:
    """The two folders atlas writes: never a user's folder (see atlas.folders), never
    one inside the other."""
    output_problem = folder_problem("site.output", output, project, SITE_MARKER)
    cache_problem = None if cache is None else folder_problem("cache", cache, project,
                                                              CACHE_MARKER)
    if output_problem:
        check.problem("site.output", output_problem)
    if cache_problem:
        check.problem("cache", cache_problem)
    if output_problem or cache_problem or cache is None:
        return
    if output in cache.parents or output == cache:
        check.problem("site.output", "the output folder must not contain the cache folder")
    elif cache in output.parents:
        check.problem("site.output", "the output folder must not be inside the cache folder")


def _dataset(check: Checker, value: Any) -> DatasetConfig:
    data = check.mapping(value, "dataset", ("name", "images", "annotations", "class_index",
                                            "breeds", "detailed", "fetch_to"))
    if value is None:
        check.problem("dataset", "is required (images, annotations, class_index, breeds)")
    detailed = data.get("detailed", "all")
    mode, names, per_breed = "all", (), 0
    if isinstance(detailed, str) and detailed in ("all", "test", "trainval", "none"):
        mode = detailed
    elif isinstance(detailed, dict) and set(detailed) == {"per_breed"} and isinstance(
            detailed["per_breed"], int) and not isinstance(detailed["per_breed"], bool) \
            and detailed["per_breed"] > 0:
        mode, per_breed = "per_breed", detailed["per_breed"]
    elif isinstance(detailed, list) and all(isinstance(n, str) for n in detailed):
        mode, names = "list", tuple(detailed)
    else:
        check.problem("dataset.detailed", "expected all, test, trainval, none, "
                      f"{{per_breed: N}} or a list of image names, got {detailed!r}")
    return DatasetConfig(
        name=check.typed(data, "name", "dataset", str, "Oxford-IIIT Pet"),
        images=check.path(data, "images", "dataset", required=True, is_dir=True) or Path(),
        annotations=check.path(data, "annotations", "dataset"),
        class_index=check.path(data, "class_index", "dataset", required=True) or Path(),
        breeds=check.path(data, "breeds", "dataset", required=True) or Path(),
        detailed=mode,
        detailed_names=names,
        per_breed=per_breed,
        fetch_to=check.path(data, "fetch_to", "dataset", must_exist=False),
    )


def _render(check: Checker, value: Any, path: str, base: RenderSettings) -> RenderSettings:
    data = check.mapping(value, path, ("method", "units_per_layer", "best_grid",
                                       "activation_channels", "top_k", "gradcam_alpha", "seed",
                                       "scorecam_channels", "precision", "faithfulness_photos",
                                       "unit_views", "classic", "lucid"))
    method = check.typed(data, "method", path, str, base.method)
    if "method" in data and method not in METHODS:
        check.problem(f"{path}.method", f"expected one of: {', '.join(METHODS)}; got {method!r}")
    settings = RenderSettings(
        method=method,
        units_per_layer=check.typed(data, "units_per_layer", path, int, base.units_per_layer),
        best_grid=check.typed(data, "best_grid", path, int, base.best_grid),
        activation_channels=check.typed(data, "activation_channels", path, int,
                                        base.activation_channels),
        top_k=check.typed(data, "top_k", path, int, base.top_k),
        gradcam_alpha=check.typed(data, "gradcam_alpha", path, float, base.gradcam_alpha),
        seed=check.typed(data, "seed", path, int, base.seed),
        scorecam_channels=check.typed(data, "scorecam_channels", path, int,
                                      base.scorecam_channels),
        precision=_choice(check, data, "precision", path, PRECISIONS, base.precision),
        faithfulness_photos=check.typed(data, "faithfulness_photos", path, int,
                                        base.faithfulness_photos),
        unit_views=parse_unit_views(check, data, path, base.unit_views),
        classic={**base.classic, **_params(check, data, "classic", path)},
        lucid={**base.lucid, **_params(check, data, "lucid", path)},
    )
    # Only values set in this block are checked: a model's block inherits the top-level
    # values, whose problems are already reported once under `render`.
    for key in ("best_grid", "activation_channels", "top_k"):
        if key in data and getattr(settings, key) < 1:
            check.problem(f"{path}.{key}", f"must be at least 1, got {getattr(settings, key)}")
    if "units_per_layer" in data and settings.units_per_layer is not None \
            and settings.units_per_layer < 1:
        check.problem(f"{path}.units_per_layer", "must be at least 1 (or left out for all)")
    if "gradcam_alpha" in data and not 0 <= settings.gradcam_alpha <= 1:
        check.problem(f"{path}.gradcam_alpha", "must be between 0 and 1")
    if "scorecam_channels" in data and settings.scorecam_channels < 0:
        check.problem(f"{path}.scorecam_channels", "must be at least 0 (0 leaves Score-CAM out)")
    if "faithfulness_photos" in data and settings.faithfulness_photos < 0:
        check.problem(f"{path}.faithfulness_photos",
                      "must be at least 0 (0: no deletion/insertion curves)")
    return settings


def method_params(method: str) -> dict[str, tuple[str, float]]:
    """A method's parameter names, each with its kind ("int", "number", "bool" or "numbers",
    a list) and smallest value, from the parameter dataclass."""
    fields = {}
    for param in dataclasses.fields(ClassicParams if method == "classic" else LucidParams):
        default = param.default
        kind = ("bool" if isinstance(default, bool) else "int" if isinstance(default, int)
                else "numbers" if isinstance(default, tuple) else "number")
        least = 1 if param.name in _AT_LEAST_ONE else -360 if param.name == "angles" else 0
        fields[param.name] = (kind, least)
    return fields


def _params(check: Checker, data: dict, key: str, path: str) -> dict[str, Any]:
    """Overrides of a method's parameters, checked against its dataclass's fields."""
    value = check.typed(data, key, path, dict, {})
    fields = method_params(key)
    clean = {}
    for name, item in value.items():
        where = f"{path}.{key}.{name}"
        if name not in fields:
            hint = difflib.get_close_matches(str(name), fields, n=1)
            check.problem(where, "unknown parameter" + (f" (did you mean {hint[0]!r}?)"
                                                        if hint else "")
                          + f"; the {key} method's parameters are: " + ", ".join(fields))
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
        return None if ok else "expected a list of numbers" + (
            f" of at least {least:g}" if least >= 0 else "")
    ok = number(item) and (kind == "number" or isinstance(item, int)) and item >= least
    return None if ok else f"expected {'an integer' if kind == 'int' else 'a number'} " \
        f"of at least {least:g}"


def _plain(value: Any) -> bool:
    """Whether a value has one JSON text (it goes into cache keys): no dates, bytes, sets."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def _models(check: Checker, value: Any, render: RenderSettings) -> tuple[ModelConfig, ...]:
    if not isinstance(value, list) or not value:
        check.problem("models", "expected a non-empty list of models")
        return ()
    models, seen = [], {}
    for index, item in enumerate(value):
        path = f"models[{index}]"
        model = _model(check, item, path, render)
        if model is None:
            continue
        if model.id in seen:
            check.problem(f"{path}.id", f"duplicate model id {model.id!r} (also models"
                          f"[{seen[model.id]}])")
        seen[model.id] = index
        models.append(model)
    return tuple(models)


def _model(check: Checker, item: Any, path: str, render: RenderSettings) -> ModelConfig | None:
    data = check.mapping(item, path, ("id", "title", "application", "file", "options", "weights",
                                      "sha256", "layers", "notes", "render", "classes",
                                      "trained_on", "read_at"))
    if not data:
        if item is not None and not isinstance(item, dict):
            return None
        check.problem(path, "expected a mapping with at least id and application or file")
        return None
    model_id = check.typed(data, "id", path, str, "", required=True)
    if model_id and not _ID_PATTERN.match(model_id):
        check.problem(f"{path}.id", f"{model_id!r} is not a valid id: use letters, digits, "
                      "'_', '-' and '.', starting with a letter or digit, at most 64")
    application = check.typed(data, "application", path, str, None)
    file = check.path(data, "file", path)
    if ("application" in data) == ("file" in data):
        check.problem(path, "give exactly one of application (a Keras application name) "
                      "or file (a .keras model file)")
    if application is not None and application not in APPLICATIONS:
        hint = difflib.get_close_matches(application, APPLICATIONS, n=1)
        check.problem(f"{path}.application", f"unknown application {application!r}"
                      + (f" (did you mean {hint[0]!r}?)" if hint else "")
                      + "; expected one of: " + ", ".join(APPLICATIONS))
    if file is not None and file.suffix != ".keras":
        check.problem(f"{path}.file", f"expected a .keras model file, got {file.name}")
    elif file is not None and file.is_dir():
        check.problem(f"{path}.file", f"expected a .keras model file, got a folder: {file}")
    options = check.typed(data, "options", path, dict, {})
    if not _plain(options):
        check.problem(f"{path}.options", "expected names mapped to numbers, strings, "
                      f"true/false or lists of them, got {options!r}")
        options = {}
    if "input_shape" in options:
        shape = options["input_shape"]
        if not (isinstance(shape, list) and len(shape) == 3 and all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
            check.problem(f"{path}.options.input_shape", f"expected [height, width, 3], got "
                          f"{shape!r}")
        elif shape[0] != shape[1]:
            check.problem(f"{path}.options.input_shape", f"{shape[0]}x{shape[1]} is not square: "
                          "atlas renders square pictures; use e.g. "
                          f"[{max(shape[:2])}, {max(shape[:2])}, 3]")
        else:
            options = {**options, "input_shape": tuple(shape)}
    if "application" in data and "file" not in data and "preprocess" in options:
        check.problem(f"{path}.options.preprocess", "is only for models from a file; an "
                      "application uses its own keras.applications preprocess_input")
    if "file" in data and "application" not in data:
        for key in options:
            if key != "preprocess":
                check.problem(f"{path}.options.{key}", "unknown option for a model from a "
                              "file; expected only: preprocess")
        mode = options.get("preprocess", "none")
        if mode not in PREPROCESS_MODES:
            check.problem(f"{path}.options.preprocess", "expected one of: "
                          f"{', '.join(PREPROCESS_MODES)}; got {mode!r}")
    for forbidden in ("weights", "include_top"):
        if forbidden in options:
            check.problem(f"{path}.options.{forbidden}", "is set by atlas; use the model's "
                          "weights key" if forbidden == "weights" else "is set by atlas")
    weights_value = check.typed(data, "weights", path, str, "imagenet" if application else "none")
    weights: str | Path = weights_value
    if weights_value not in ("imagenet", "none"):
        resolved = check.resolve(weights_value, f"{path}.weights")
        found, folder, error = lookup(resolved) if resolved else (True, False, None)
        if error or not found or folder:
            check.problem(f"{path}.weights", f"weights file not found: {weights_value} (expected "
                          "imagenet, none or a weights file)")
        weights = resolved or Path(weights_value)
    sha256 = check.typed(data, "sha256", path, str, None)
    if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", sha256):
        check.problem(f"{path}.sha256", "expected 64 lower-case hex digits")
    layers = data.get("layers", "all")
    if layers == "all" or layers is None:
        patterns = None
    elif isinstance(layers, list) and layers and all(isinstance(x, str) for x in layers):
        patterns = tuple(layers)
    else:
        check.problem(f"{path}.layers", f"expected all or a list of layer names or glob "
                      f"patterns, got {layers!r}")
        patterns = None
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
    )


def _choice(check: Checker, data: dict, key: str, path: str, choices: tuple[str, ...],
            default: str) -> str:
    value = check.typed(data, key, path, str, default)
    if value not in choices:
        hint = difflib.get_close_matches(str(value), choices, n=1)
        check.problem(f"{path}.{key}", f"expected one of: {', '.join(choices)}; got {value!r}"
                      + (f" (did you mean {hint[0]!r}?)" if hint else ""))
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
    check.problem(f"{path}.classes", f"expected one of: {', '.join(CLASS_SPACES)} or a labels "
                  f"file (one label per line, in output order); {value!r} is neither"
                  + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return None


def fetch_folder(path: Path | str) -> Path:
    """``dataset.fetch_to`` of a config whose dataset may not exist yet (for fetch-data).

    Raises:
        ConfigError: the file cannot be read or has no ``dataset.fetch_to``.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError) as error:
        raise ConfigError([("", f"cannot read {path}: {error}")]) from None
    dataset = data.get("dataset") if isinstance(data, dict) else None
    value = dataset.get("fetch_to") if isinstance(dataset, dict) else None
    if not isinstance(value, str):
        raise ConfigError([("dataset.fetch_to", "is required for fetch-data -c (or use --to)")],
                          source=str(path))
    check = Checker(KeyLines(""), path.resolve().parent)
    folder = check.resolve(value, "dataset.fetch_to")
    if folder is None:
        raise ConfigError(check.problems, source=str(path))
    return folder
