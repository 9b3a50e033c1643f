"""The config's declared schema as frozen dataclasses: what every later stage reads."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas.config.atlas import AtlasSettings
from atlas.config.views import UnitViews

APPLICATIONS = (
    "VGG16",
    "VGG19",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Small",
    "MobileNetV3Large",
    "DenseNet121",
    "DenseNet169",
    "DenseNet201",
    "InceptionV3",
    "InceptionResNetV2",
    "Xception",
    "NASNetMobile",
    "NASNetLarge",
    "ResNet50",
    "ResNet101",
    "ResNet152",
    "ResNet50V2",
    "ResNet101V2",
    "ResNet152V2",
    "EfficientNetB0",
    "EfficientNetB1",
    "EfficientNetB2",
    "EfficientNetB3",
    "EfficientNetV2B0",
    "ConvNeXtTiny",
)
METHODS = ("lucid", "classic")
PRECISIONS = ("float32", "mixed_bfloat16")  # atlas.render.device.PRECISIONS, without TF
# render.backend: the Keras backend that renders (atlas.render.backend.SETTINGS, without Keras)
BACKENDS = ("tensorflow", "jax", "auto")
CLASS_SPACES = ("imagenet", "dataset", "breeds", "species", "none")
# Split names a model may be trained on (models[].trained_on): the folders layout's split
# folders, the metadata's split column, the Oxford lists; "none": every photo is scored.
SPLITS = ("train", "val", "validation", "test", "trainval", "none")
LAYOUTS = ("auto", "folders", "metadata", "oxford", "flat")
# The ImageNet class index and the pets' breed map that atlas ships (the default site's).
SHIPPED_CLASS_INDEX = "atlas:data/imagenet_class_index.json"
SHIPPED_BREEDS = "atlas:data/breeds.json"
READ_AT = ("activation", "conv")
# How a model from a file wants its [0, 255] pixels (keras.applications.imagenet_utils modes).
PREPROCESS_MODES = ("none", "tf", "caffe", "torch")
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class RenderSettings:
    """How assets are rendered; the top-level ``render`` block, overridable per model."""

    method: str = "lucid"
    quality: str = "auto"  # draft | standard | fine (config/methods.QUALITY_PRESETS)
    units_per_layer: int | None = None
    best_grid: int = 4
    activation_channels: int = 64
    top_k: int = 5
    gradcam_alpha: float = 0.4
    scorecam_channels: int = 6
    faithfulness_photos: int = 6
    # Layers whose maps get deletion/insertion curves: a spread of at most this many,
    # always the deepest (None: every layer, `render.scores.layers: all`).
    score_layers: int | None = 12
    warn_after: float = 15.0  # minutes: a stage estimated longer is announced before rendering
    seed: int = 0
    precision: str = "float32"  # or mixed_bfloat16: the unit renderer's arithmetic
    # The Keras backend (top level only: one per build). Not in any cache key: JAX's
    # pictures and maps match TensorFlow's within the tolerance tests/test_backend_*.py set.
    backend: str = "tensorflow"
    unit_views: UnitViews = UnitViews()  # the unit pages' views (atlas.analysis.unit_views)
    classic: dict[str, Any] = field(default_factory=dict)
    lucid: dict[str, Any] = field(default_factory=dict)

    def key_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "quality": self.quality,
            "units_per_layer": self.units_per_layer,
            "best_grid": self.best_grid,
            "activation_channels": self.activation_channels,
            "top_k": self.top_k,
            "gradcam_alpha": self.gradcam_alpha,
            "seed": self.seed,
            "scorecam_channels": self.scorecam_channels,
            "precision": self.precision,
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
    atlas: AtlasSettings = AtlasSettings()  # activation atlases (atlas.config.atlas)


@dataclass(frozen=True)
class DatasetConfig:
    """The photos and what is known about them (README, "Your own photos").

    ``layout`` says how the folder is labelled (``auto``: detected at the scan);
    ``classes`` the class order (a list, or a file with one class per line), else the
    sorted folder names or labels; ``groups`` a ``class<TAB>group`` file; ``class_map`` a
    JSON file mapping each dataset class to ImageNet labels or WordNet ids; ``masks`` a
    folder of object masks named like the photos; ``breeds`` the pets' breed map (Oxford).
    """

    name: str
    images: Path
    annotations: Path | None
    class_index: Path
    breeds: Path | None
    detailed: str  # "all" | "test" | "trainval" | "per_breed" | "none" | "list"
    detailed_names: tuple[str, ...] = ()
    per_breed: int = 0  # photos per class for detailed: {per_class: N}
    fetch_to: Path | None = None
    layout: str = "auto"
    classes: tuple[str, ...] | Path | None = None
    groups: Path | None = None
    class_map: Path | None = None
    masks: Path | None = None


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
    backend: str = "tensorflow"  # render.backend: the Keras backend of the whole build

    @property
    def root(self) -> Path:
        return self.path.parent
