"""What a page template reads: the declared views of models, layers, units and photos.

Pure Python over cached metadata: nothing here loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import markdown

from atlas.data.oxford import breed_title
from atlas.site.unit_pages import UnitExtras


@dataclass(frozen=True)
class UnitView:
    index: int
    path: str
    picture: str | None
    objective: float | None
    dead: bool
    ratio: float | None
    steps: int
    seconds: float
    backend: str = "tensorflow"  # the Keras backend (and version) that rendered it
    exemplars: tuple[dict, ...] = ()  # the most exciting photos, most first
    extras: UnitExtras = UnitExtras()  # negative, diversity, least exciting, breeds
    beaten_by: dict | None = None  # ratio below 1: the photo that excites the unit more
    # atlas.analysis.liveness: moved, retried (moved on the retry), constant or stuck (did
    # not move after a retry; ``dead`` is either of the last two), and the page's sentence
    state: str = "moved"
    state_words: str = ""


@dataclass(frozen=True)
class ImageLayerView:
    """One layer seen by one image.

    The Grad-CAM maps are the raw maps at the layer's resolution (grey PNGs of a few hundred
    bytes); the page colours them with jet and lays them over the photo, as the cached JPEG
    overlays would show them, at a twentieth of their weight.
    """

    layer: str
    layer_path: str
    activation: str | None
    heat: str | None  # Grad-CAM of the top-1 class
    heat_true: str | None  # Grad-CAM of the true breed's class, where it differs
    shape: tuple[int, int]
    # the other CAM methods: method -> (map of the top-1 class, of the true class or None)
    cams: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    def cams_for(self, slot: int) -> dict[str, str | None]:
        """The extra methods' maps of one class slot (0: top-1, 1: true class)."""
        return {method: maps[slot] for method, maps in self.cams.items()}


@dataclass(frozen=True)
class ClassView:
    index: int
    label: str
    probability: float
    correct: bool | None


@dataclass
class ImageView:
    name: str
    path: str
    photo: str | None
    thumb: str | None
    size: tuple[int, int]  # the photo's width and height in pixels; the thumb is 112 px
    breed: str
    breed_title: str
    species: str
    split: str | None
    top: list[ClassView]
    top1_correct: bool | None
    top5_correct: bool | None
    detailed: bool
    layers: list[ImageLayerView] = field(default_factory=list)
    cam_class: str = ""
    cam_true_class: str | None = None
    cam_methods: tuple[str, ...] = ()  # the CAM methods this image's maps exist for
    scorecam_channels: int = 0

    @property
    def top1_label(self) -> str:
        return self.top[0].label if self.top else ""


@dataclass
class LayerView:
    name: str
    slug: str
    path: str
    facts: dict
    units: list[UnitView]
    best: str | None
    best_size: tuple[int, int]
    all: str | None
    seconds: float
    dead: int  # units that never moved: constant + stuck
    median_ratio: float | None
    index: int
    # other configured models' layers with the same units (same address) or the same name
    # but other units (a fine-tune changed them): [{"model", "title", "path", "same"}]
    twins: list[dict] = field(default_factory=list)
    atlas_path: str | None = None  # its activation atlas page; None: no atlas rendered
    constant: int = 0  # units constant on every picture tried and photo (liveness)
    stuck: int = 0  # units that did not move after a retry, yet are not constant
    retried: int = 0  # units whose picture is the retry's
    recipe: str = ""  # how its unit pictures are rendered (methods.recipe_words)

    @property
    def read_at(self) -> str:
        """Which tensor the units come from, in words."""
        ops = self.facts.get("read_ops") or []
        if not ops:
            return f"{self.name} (the convolution's own output)"
        return f"{self.facts['read_at']} (after {' + '.join(ops)})"


@dataclass
class ModelView:
    id: str
    title: str
    path: str
    facts: dict
    layers: list[LayerView]
    images: list[ImageView]
    metrics: object
    notes: str | None
    random_weights: bool
    units: int
    seconds: float
    source: str
    picture: str | None
    picture_size: tuple[int, int]
    picture_layer: str
    gradcam_alpha: float = 0.4
    confusions: list[dict] = field(default_factory=list)
    space: object = None  # the model's LabelSpace; None: no classification head
    evaluation: str = "all photos"
    evaluated: int = 0  # how many photos the accuracy rests on
    matrix_svg: str | None = None
    config_read_at: str = "activation"
    trained_on: str = "none"
    twin_summary: list[dict] = field(default_factory=list)
    predictions: dict = field(default_factory=dict)  # image name -> Prediction
    evaluated_names: frozenset = frozenset()
    cam_scores: dict | None = (
        None  # atlas.analysis.scores.score_view: the per-layer, per-method table
    )
    atlases: list = field(default_factory=list)  # atlas_view.AtlasView of each atlased layer
    renderers: list = field(default_factory=list)  # (backend, units it rendered), most first

    @property
    def has_classes(self) -> bool:
        return self.space is not None

    @property
    def detailed_images(self) -> list[ImageView]:
        return [image for image in self.images if image.detailed]

    def sibling(self, name: str) -> str:
        """The site path of another page of this model (predictions.html, accuracy.html)."""
        return self.path.replace("index.html", name)


def markdown_html(path: Path | None) -> str | None:
    if path is None:
        return None
    # Notes are trusted author content (see README): raw HTML in them is kept.
    return markdown.markdown(path.read_text(encoding="utf-8"), extensions=["tables"])


def fit(width: int, height: int, side: int) -> tuple[int, int]:
    """The size of a picture scaled down (never up) to ``side`` pixels on its longer side."""
    scale = min(1.0, side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def median(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def class_title(breeds, key: str) -> str:
    """A dataset class's display name: its title in the class map, else made from its key.

    Args:
        breeds: the dataset's class map (``BreedMap``, ``context.breeds``).
        key: the class key (``DatasetImage.label``, a breed key for the pets).
    """
    breed = breeds.breeds.get(key)
    return breed.title if breed else breed_title(key)


def dataset_words(layout: str) -> dict[str, str | bool]:
    """The words pages use for the dataset's labels: the pets' own (breed, species, pet,
    trimap) for the Oxford layout, generic ones (class, group, object, mask) for any
    other, so a site of flowers never speaks of breeds."""
    if layout == "oxford":
        return {
            "pets": True,
            "class": "breed",
            "classes": "breeds",
            "Class": "Breed",
            "Classes": "Breeds",
            "group": "species",
            "groups": "species",
            "object": "pet",
            "mask": "trimap",
            "masks": "trimaps",
            "accuracy": "pets accuracy",
            "Accuracy": "Pets accuracy",
            "on": "the pets",
        }
    return {
        "pets": False,
        "class": "class",
        "classes": "classes",
        "Class": "Class",
        "Classes": "Classes",
        "group": "group",
        "groups": "groups",
        "object": "object",
        "mask": "mask",
        "masks": "masks",
        "accuracy": "accuracy",
        "Accuracy": "Accuracy",
        "on": "the photos",
    }
