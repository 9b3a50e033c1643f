"""Every number on the site recomputed independently.

One small site with both embedded models (MobileNet v1 with its ImageNet weights, and the
same MobileNet fine-tuned into a 37-breed classifier) is built once for the module. Each
test parses numbers from the built HTML pages (and the pictures they link) and recomputes
them here with plain Keras, NumPy and Pillow: the models are rebuilt from their files, the
photos decoded with Pillow. Nothing of atlas's render, analysis or plan code is imported;
atlas is only asked to build.

Pages are read by structure (element classes, ids, data attributes, table positions and
file names), never by their English wording.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import yaml
from PIL import Image, ImageFilter

from atlas.build import BuildOptions, build

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
ANNOTATIONS = DATA / "oxford-pets" / "annotations"
TRIMAPS = ANNOTATIONS / "trimaps"
IMAGENET_WEIGHTS = DATA / "models" / "mobilenet_2_5_128_tf.h5"
PETS_MODEL = DATA / "models" / "mobilenet_pets.keras"
CLASS_INDEX = DATA / "imagenet_class_index.json"
BREEDS = DATA / "breeds.json"

SIZE = 128  # both models' input side
# The photos with image pages: Persian_140 alone has a trimap (so the model page's
# localisation scores rest on it alone), and it is also the one faithfulness photo.
DETAILED = ("Persian_140", "beagle_111", "pug_112")
# Photos of the test split (each with a trimap), on which the fine-tuned model's accuracy
# is measured; it gets three of them right in the default site.
TEST_SPLIT = ("Siamese_61", "chihuahua_47", "havanese_26", "keeshond_97", "boxer_26")
PHOTOS = DETAILED + TEST_SPLIT
LAYERS = ("conv_pw_7", "conv_pw_11")
UNITS_PER_LAYER = 2
MODEL_IDS = ("mobilenet", "mobilenet-pets")
TOP_K = 5  # render.top_k's default: the classes an image page lists

# Deletion and insertion, as README describes them: 16 equal steps, the insertion curve
# starting from the photo under a Gaussian blur of radius 4.
STEPS = 16
BLUR_RADIUS = 4.0
PET, BORDER = 1, 3  # trimap values (2 is background)

# Tolerances. Probabilities are shown in percent with one decimal (+-0.05) and computed by
# two float32 TensorFlow graphs; scores with two decimals (+-0.005, plus float noise).
PERCENT_TOLERANCE = 0.05 + 0.01
TIE = 1e-4  # two classes this close in probability may come in either order
SCORE_TOLERANCE = 0.01
GREY_TOLERANCE = 1  # grey levels: both round the same map to integers (float noise may tip a half)
MEAN_TOLERANCE = 0.0005 + 0.0005  # a unit mean is shown with three decimals
# The activation ratio is recomputed from the unit picture the page shows, resized with
# Pillow where atlas resizes with TensorFlow (at most ~2 % apart, measured with pictures
# stored losslessly); the picture is a lossy WebP, so 10 % leaves room for its loss.
RATIO_TOLERANCE = 0.10


# --- reading the built pages --------------------------------------------------------------

VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())


@dataclass
class Element:
    """One HTML element: its tag, attributes and children (elements and text)."""

    tag: str
    attrs: dict[str, str]
    children: list

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def elements(self):
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.elements()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs) -> list[Element]:
        """Descendants with that tag and class, and the attributes (``data_name`` is
        ``data-name``; ``True`` asks only that the attribute be present)."""
        wanted = {name.replace("_", "-"): value for name, value in attrs.items()}
        return [
            e
            for e in self.elements()
            if (tag is None or e.tag == tag)
            and (cls is None or cls in e.classes)
            and all(
                name in e.attrs and (value is True or e.attrs[name] == value)
                for name, value in wanted.items()
            )
        ]

    def find(self, tag: str | None = None, cls: str | None = None, **attrs) -> Element:
        found = self.find_all(tag, cls, **attrs)
        assert found, f"no <{tag} class={cls!r} {attrs}> in <{self.tag} {self.attrs}>"
        return found[0]


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {}, [])
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {name: value or "" for name, value in attrs}, [])
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Element(tag, {n: v or "" for n, v in attrs}, []))

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


class Page:
    """A built page: its parsed tree, and the files its links point at."""

    def __init__(self, path: Path):
        assert path.is_file(), f"no page {path}"
        self.path = path
        parser = _Tree()
        parser.feed(path.read_text(encoding="utf-8"))
        parser.close()
        self.root = parser.root

    def target(self, link: str) -> Path:
        """The file a relative link of this page points at."""
        return (self.path.parent / unquote(urlsplit(link).path)).resolve()


def number(text: str) -> float:
    """The first number in a piece of page text ("92.8 %", "0.53 ★", "0.751")."""
    found = re.search(r"-?\d+(?:\.\d+)?", text)
    assert found, f"no number in {text!r}"
    return float(found.group())


def normalise(label: str) -> str:
    """A class label compared across spellings: case, spaces and underscores ignored."""
    return re.sub(r"[\s_]+", "_", label.strip()).lower()


def same_layer(shown: str, layer: str) -> bool:
    """Whether a layer name on the site is ``layer`` (nested layers are ``backbone/name``)."""
    return shown == layer or shown.endswith("/" + layer)


def model_folder(site, model_id: str) -> Path:
    return site.root / "models" / model_id


def image_page(site, model_id: str, name: str) -> Page:
    return Page(model_folder(site, model_id) / "images" / f"{name}.html")


def layer_row(page: Page, layer: str) -> Element:
    """The image page's section of one layer."""
    rows = [
        r
        for r in page.root.find_all("section", "layer-row")
        if same_layer(r.attrs.get("data-name", ""), layer)
    ]
    assert len(rows) == 1, f"{page.path}: {len(rows)} sections for {layer}"
    return rows[0]


def gradcam_png(page: Page, layer: str) -> np.ndarray:
    """The grey Grad-CAM map of the top-1 class the image page shows for a layer, 0..255."""
    shown = layer_row(page, layer).find("img", "map")
    link = shown.attrs.get("data-cam-gradcam") or shown.attrs["src"]
    with Image.open(page.target(link)) as picture:
        assert picture.mode == "L", picture.mode
        return np.asarray(picture, np.float64)


def layer_page(site, model_id: str, layer: str) -> Page:
    """A layer's page, found through the link of its section on the first detailed photo."""
    page = image_page(site, model_id, DETAILED[0])
    return Page(page.target(layer_row(page, layer).find("h3").find("a").attrs["href"]))


def scores_row(site, model_id: str, layer: str) -> list[float | None]:
    """The model page's CAM-scores row of a layer: the Grad-CAM group's four cells
    (energy, pointing, deletion, insertion), each the mean over its photos or None."""
    model_page = Page(model_folder(site, model_id) / "index.html")
    table = model_page.root.find("section", id="cam-scores").find("table", "scores")
    # the table's column groups follow the CAM methods in the order the image pages'
    # method switch lists them
    methods = [
        b.attrs["data-cam"]
        for b in image_page(site, model_id, DETAILED[0]).root.find_all("button", data_cam=True)
    ]
    group = methods.index("gradcam") if methods else 0
    for row in table.find("tbody").find_all("tr"):
        cells = row.find_all("td")
        if same_layer(cells[0].text.strip(), layer):
            assert len(cells) == 1 + 4 * max(len(methods), 1), len(cells)
            values = [c.text.strip() for c in cells[1 + 4 * group : 5 + 4 * group]]
            return [None if not re.match(r"-?\d", v) else number(v) for v in values]
    raise AssertionError(f"{model_page.path}: no scores row for {layer}")


def faithful_photos(site, model_id: str) -> list[str]:
    """The photos the model page says its deletion/insertion AUCs rest on."""
    model_page = Page(model_folder(site, model_id) / "index.html")
    listed = model_page.root.find("span", "faithful-photos")
    return [name.strip() for name in listed.text.split(",") if name.strip()]


# --- the dataset, read directly ------------------------------------------------------------


def annotation_list() -> dict[str, tuple[int, int]]:
    """list.txt: image name -> (CLASS-ID, SPECIES) (1 cat, 2 dog)."""
    rows = {}
    for line in (ANNOTATIONS / "list.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, class_id, species, _ = line.split()
            rows[name] = (int(class_id), int(species))
    return rows


def split(name: str) -> set[str]:
    return {
        line.split()[0] for line in (ANNOTATIONS / f"{name}.txt").read_text().splitlines() if line
    }


def breed_of(name: str) -> str:
    return name.rsplit("_", 1)[0]


def breed_labels() -> list[str]:
    """The fine-tuned model's outputs: the breeds in list.txt CLASS-ID order (CLASS-ID 1 is
    output 0), each named by its title in breeds.json, as the pages name them."""
    titles = {k: v["title"] for k, v in json.loads(BREEDS.read_text())["breeds"].items()}
    by_id = {class_id: breed_of(name) for name, (class_id, _) in annotation_list().items()}
    assert sorted(by_id) == list(range(1, len(by_id) + 1))
    return [titles.get(by_id[i], by_id[i]) for i in sorted(by_id)]


def imagenet_labels() -> list[str]:
    index = json.loads(CLASS_INDEX.read_text())
    return [index[str(i)][1] for i in range(len(index))]


def model_input(folder: Path, name: str) -> np.ndarray:
    """A photo as the model sees it: (SIZE, SIZE, 3) uint8, the whole photo squashed.

    JPEGs are decoded at a reduced DCT scale first (Pillow's ``draft``: the largest of 1/8,
    1/4, 1/2 that keeps both sides at least SIZE), then converted to RGB and resized
    bilinearly. atlas decodes so for speed; a full-size decode then resize moves the
    probabilities by up to ~3 points on these photos (beagle_111).
    """
    with Image.open(folder / f"{name}.jpg") as image:
        image.draft("RGB", (SIZE, SIZE))
        rgb = image.convert("RGB")
    return np.asarray(rgb.resize((SIZE, SIZE), Image.BILINEAR), np.uint8)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


# --- the models, rebuilt with plain Keras -------------------------------------------------


@dataclass
class Net:
    """One of the site's models: ``probe`` maps the preprocessed input to each of LAYERS'
    unit tensors (after the conv's BatchNorm and ReLU) and the pre-softmax logits."""

    probe: keras.Model
    preprocess: Callable[[np.ndarray], np.ndarray]  # raw [0, 255] float32 -> probe input
    labels: list[str]  # one per output, as the pages name them

    def run(self, pixels: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """(unit tensors per layer, logits) of a uint8 batch (n, SIZE, SIZE, 3)."""
        *features, logits = self.probe.predict_on_batch(self.preprocess(pixels.astype(np.float32)))
        return [np.asarray(f, np.float64) for f in features], np.asarray(logits, np.float64)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities: the softmax of the logits, applied once."""
        return softmax(self.run(pixels)[1])

    def gradcam(self, pixels: np.ndarray) -> tuple[list[np.ndarray], int]:
        """Grad-CAM of the top-1 class at each of LAYERS for one photo, and that class:
        ``relu(sum_c mean_hw(d logit / d A_c) A_c)``, unscaled."""
        batch = tf.constant(self.preprocess(pixels[None].astype(np.float32)))
        with tf.GradientTape() as tape:
            *features, logits = self.probe(batch, training=False)
            top = int(np.argmax(logits[0].numpy()))
            score = logits[0, top]
        gradients = tape.gradient(score, features)
        maps = []
        for feature, gradient in zip(features, gradients, strict=True):
            weights = gradient[0].numpy().mean(axis=(0, 1))
            maps.append(np.maximum(np.einsum("hwc,c->hw", feature[0].numpy(), weights), 0.0))
        return maps, top


def imagenet_net(entry: dict) -> tuple[Net, keras.Model]:
    """The application MobileNet with the site's weights; its logits are the input of the
    final softmax Activation (the Reshape of ``conv_preds``)."""
    options = entry["options"]
    model = keras.applications.MobileNet(
        alpha=options["alpha"],
        input_shape=tuple(options["input_shape"]),
        weights=entry["weights"],
        include_top=True,
    )
    outputs = [model.get_layer(f"{layer}_relu").output for layer in LAYERS]
    probe = keras.Model(model.input, [*outputs, model.get_layer("predictions").input])
    preprocess = keras.applications.mobilenet.preprocess_input
    return Net(probe, lambda x: preprocess(x.copy()), imagenet_labels()), model


# What atlas feeds a .keras file, by its ``options.preprocess`` (none: raw pixels).
PREPROCESS = {"none": lambda x: x, "tf": lambda x: x / 127.5 - 1.0}


def pets_net(entry: dict) -> tuple[Net, keras.Model]:
    """The fine-tuned model: its Rescaling, its nested backbone read at LAYERS' ReLUs, its
    pooling and its Dense head without the softmax (layer names as in the file)."""
    model = keras.saving.load_model(entry["file"], compile=False)
    backbone = model.get_layer("mobilenet_backbone")
    inner = keras.Model(
        backbone.input,
        [*(backbone.get_layer(f"{layer}_relu").output for layer in LAYERS), backbone.output],
    )
    dense = model.get_layer("breeds")
    inputs = keras.Input(model.input_shape[1:])
    *features, top = inner(model.get_layer("preprocess")(inputs))
    pooled = model.get_layer("pool")(top)
    logits = keras.ops.matmul(pooled, dense.kernel) + dense.bias
    preprocess = PREPROCESS[entry.get("options", {}).get("preprocess", "none")]
    return Net(keras.Model(inputs, [*features, logits]), preprocess, breed_labels()), model


# --- the site -----------------------------------------------------------------------------


def site_config(folder: Path) -> dict:
    """Both embedded models (as in site_config.yaml), two layers each, two units a layer."""
    return {
        "site": {"title": "independent", "output": str(folder / "site")},
        "cache": str(folder / "cache"),
        "dataset": {
            "images": str(folder / "images"),
            "annotations": str(ANNOTATIONS / "list.txt"),
            "class_index": str(CLASS_INDEX),
            "breeds": str(BREEDS),
            "detailed": list(DETAILED),
        },
        "render": {"units_per_layer": UNITS_PER_LAYER, "faithfulness_photos": 1},
        # an atlas of each layer: 8 photos x 32 positions, on a grid they fill
        "atlas": {"grid": 6, "min_count": 6},
        "models": [
            {
                "id": "mobilenet",
                "application": "MobileNet",
                "options": {"alpha": 0.25, "input_shape": [SIZE, SIZE, 3]},
                "weights": str(IMAGENET_WEIGHTS),
                "layers": list(LAYERS),
            },
            {
                "id": "mobilenet-pets",
                "file": str(PETS_MODEL),
                "classes": "breeds",
                "trained_on": "trainval",
                "layers": [f"*{layer}" for layer in LAYERS],  # nested: backbone/conv_pw_7
            },
        ],
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site: ``root`` (the site folder), ``images`` (its photos), ``config``."""
    with_trimap = [name for name in DETAILED if (TRIMAPS / f"{name}.png").is_file()]
    assert with_trimap == [DETAILED[0]], with_trimap  # the scores rest on one photo
    assert set(TEST_SPLIT) <= split("test") and not set(DETAILED) & split("test")
    folder = tmp_path_factory.mktemp("independent")
    images = folder / "images"
    images.mkdir()
    for name in PHOTOS:
        shutil.copy(DATA / "oxford-pets" / "images" / f"{name}.jpg", images)
    config = site_config(folder)
    path = folder / "site_config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    report = build(path, BuildOptions(progress=False, max_steps=2))
    return SimpleNamespace(root=report.output, images=images, config=config)


@pytest.fixture(scope="module")
def nets(site) -> dict[str, Net]:
    """Each model rebuilt from its file; the decomposition into probe and softmax is
    checked against the whole model's own output on one photo."""
    entries = {entry["id"]: entry for entry in site.config["models"]}
    built = {"mobilenet": imagenet_net(entries["mobilenet"])}
    built["mobilenet-pets"] = pets_net(entries["mobilenet-pets"])
    pixels = model_input(site.images, DETAILED[0])[None]
    for net, whole in built.values():
        expected = whole.predict_on_batch(net.preprocess(pixels.astype(np.float32)))
        # float32 graphs differ by rounding only
        np.testing.assert_allclose(net.probabilities(pixels), expected, atol=1e-5)
    return {model_id: net for model_id, (net, _) in built.items()}


# --- 1. predictions -----------------------------------------------------------------------


def shown_top(page: Page) -> list[tuple[str, float]]:
    """The image page's top classes: (label, probability in percent), best first."""
    bars = page.root.find("ol", "bars").find_all("li")
    return [
        (li.find("span", "label").text.replace("✓", "").strip(), number(li.find("span", "p").text))
        for li in bars
    ]


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_top_classes_and_probabilities_match_plain_keras(site, nets, model_id):
    """Each detailed photo's top-5 labels, in order, and their probabilities (to the page's
    rounding) are those of the model run with plain Keras on the photo."""
    net = nets[model_id]
    for name in DETAILED:
        shown = shown_top(image_page(site, model_id, name))
        probabilities = net.probabilities(model_input(site.images, name)[None])[0]
        order = np.argsort(-probabilities, kind="stable")[: len(shown)]
        assert len(shown) == TOP_K, shown
        for rank, (label, percent) in enumerate(shown):
            # a few ImageNet labels name two classes ("crane"): either may be the one shown
            named = [
                i for i, known in enumerate(net.labels) if normalise(known) == normalise(label)
            ]
            assert named, f"{name}: no class of {model_id} is called {label!r}"
            expected = order[rank]
            index = expected if expected in named else named[0]
            assert index == expected or (
                abs(probabilities[index] - probabilities[expected]) < TIE
            ), f"{name} rank {rank + 1}: page {label}, Keras {net.labels[expected]}"
            assert abs(percent - 100 * probabilities[index]) <= PERCENT_TOLERANCE, (
                f"{name} {label}: page {percent} %, Keras {100 * probabilities[index]:.3f} %"
            )


# --- 2. accuracy --------------------------------------------------------------------------


def test_fine_tuned_accuracy_matches_plain_keras_on_photos_outside_trainval(site, nets):
    """The fine-tuned model's accuracy page: how many photos it rests on, breed top-1 and
    top-5 and species accuracy, recomputed from plain Keras predictions on the photos of
    the images folder outside the trainval split."""
    page = Page(model_folder(site, "mobilenet-pets") / "accuracy.html")
    evaluated = int(number(page.root.find("p", "lead").find("strong").text))
    # the stats block: breed top-1, breed top-5, species accuracy, photos (in this order)
    stats = [number(e.text) for e in page.root.find("div", "stats").find_all("span", "big")]
    assert len(stats) == 4, stats
    labels = annotation_list()
    names = sorted(p.stem for p in site.images.glob("*.jpg") if p.stem not in split("trainval"))
    assert names == sorted(TEST_SPLIT)
    probabilities = nets["mobilenet-pets"].probabilities(
        np.stack([model_input(site.images, name) for name in names])
    )
    truth = np.array([labels[name][0] - 1 for name in names])  # CLASS-ID 1 is output 0
    ranked = np.argsort(-probabilities, axis=1, kind="stable")
    species_of_output = {class_id - 1: species for class_id, species in labels.values()}
    top1 = np.mean(ranked[:, 0] == truth)
    top5 = np.mean([t in r[:TOP_K] for t, r in zip(truth, ranked, strict=True)])
    species = np.mean(
        [species_of_output[int(r[0])] == labels[n][1] for n, r in zip(names, ranked, strict=True)]
    )
    assert evaluated == len(names) == stats[3]
    assert stats[:3] == pytest.approx(
        [100 * top1, 100 * top5, 100 * species], abs=PERCENT_TOLERANCE
    )
    assert top1 > 0  # a figure worth checking: some test photos are recognised


# --- 3. Grad-CAM --------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_gradcam_maps_match_an_independent_gradcam(site, nets, model_id):
    """The grey Grad-CAM PNG of the top-1 class that the image page shows for each layer
    is Grad-CAM computed with a GradientTape from the unit tensor to the logit, scaled by
    its own peak to 0..255."""
    name = DETAILED[0]
    page = image_page(site, model_id, name)
    maps, _ = nets[model_id].gradcam(model_input(site.images, name))
    for layer, cam in zip(LAYERS, maps, strict=True):
        shown = gradcam_png(page, layer)
        assert shown.shape == cam.shape, (layer, shown.shape, cam.shape)
        if not cam.any():  # no positive evidence for the class here: an empty map
            assert not shown.any(), layer
            continue
        expected = cam / cam.max() * 255
        assert np.abs(shown - expected).max() <= GREY_TOLERANCE, layer


# --- 4. deletion and insertion ------------------------------------------------------------


def curve(start: np.ndarray, end: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``STEPS + 1`` inputs from ``start`` to ``end``: step ``s`` takes the first
    ``round(s * N / STEPS)`` pixels of ``order`` from ``end``."""
    pixels = start.shape[0] * start.shape[1]
    frames = []
    for step in range(STEPS + 1):
        frame = start.reshape(pixels, 3).copy()
        taken = order[: round(step * pixels / STEPS)]
        frame[taken] = end.reshape(pixels, 3)[taken]
        frames.append(frame.reshape(start.shape))
    return np.stack(frames)


def area_under(values: np.ndarray) -> float:
    """Trapezoids over equally spaced points in [0, 1]."""
    return float(((values[1:] + values[:-1]) / 2).sum() / (len(values) - 1))


def deletion_insertion(net: Net, photo: np.ndarray, grey_map: np.ndarray) -> tuple[float, float]:
    """Deletion and insertion AUCs of the top-1 class for a map as the page shows it."""
    saliency = np.asarray(
        Image.fromarray((grey_map / 255).astype(np.float32), mode="F").resize(
            (SIZE, SIZE), Image.BILINEAR
        )
    )
    order = np.argsort(-saliency.ravel(), kind="stable")
    blurred = np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(BLUR_RADIUS)))
    top = int(np.argmax(net.probabilities(photo[None])[0]))
    deletion = net.probabilities(curve(photo, np.zeros_like(photo), order))[:, top]
    insertion = net.probabilities(curve(blurred, photo, order))[:, top]
    return area_under(deletion), area_under(insertion)


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_deletion_and_insertion_aucs_match_their_own_curves(site, nets, model_id):
    """The model page's Grad-CAM deletion and insertion AUCs of each layer (the mean over
    the one faithfulness photo: its own value) are the areas under the top-1 probability
    as the page's map's most salient pixels are blacked out / restored into a blur."""
    names = faithful_photos(site, model_id)
    assert names == [DETAILED[0]], names
    page = image_page(site, model_id, names[0])
    photo = model_input(site.images, names[0])
    net = nets[model_id]
    # softmax applied twice caps every probability at e / (e + classes - 1): the old bug
    ceiling = np.e / (np.e + len(net.labels) - 1)
    scored = 0
    for layer in LAYERS:
        _, _, shown_deletion, shown_insertion = scores_row(site, model_id, layer)
        grey = gradcam_png(page, layer)
        if not grey.any():  # an empty map has no pixel order: no AUCs, shown as such
            assert shown_deletion is None and shown_insertion is None, layer
            continue
        deletion, insertion = deletion_insertion(net, photo, grey)
        assert shown_deletion == pytest.approx(deletion, abs=SCORE_TOLERANCE), layer
        assert shown_insertion == pytest.approx(insertion, abs=SCORE_TOLERANCE), layer
        assert shown_insertion > ceiling, (layer, shown_insertion, ceiling)
        scored += 1
    assert scored  # at least one layer's AUCs were recomputed


# --- 5. localisation ----------------------------------------------------------------------


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_energy_on_the_pet_and_pointing_match_the_trimap(site, model_id):
    """The model page's Grad-CAM energy and pointing of each layer (the mean over the one
    detailed photo with a trimap: its own value): the page's map resized bilinearly to the
    trimap, weighted 1 on the pet, 1/2 on its border; and whether its peak is on either."""
    name = DETAILED[0]
    with Image.open(TRIMAPS / f"{name}.png") as picture:
        trimap = np.asarray(picture.convert("L"))
    weight = np.where(trimap == PET, 1.0, np.where(trimap == BORDER, 0.5, 0.0))
    page = image_page(site, model_id, name)
    scored = 0
    for layer in LAYERS:
        shown_energy, shown_pointing, _, _ = scores_row(site, model_id, layer)
        grey = (gradcam_png(page, layer) / 255).astype(np.float32)
        if not grey.any():  # an empty map has no share on the pet and no peak
            assert shown_energy is None and shown_pointing is None, layer
            continue
        height, width = trimap.shape
        resized = Image.fromarray(grey, mode="F").resize((width, height), Image.BILINEAR)
        values = np.maximum(np.asarray(resized, np.float64), 0.0)
        energy = float((values * weight).sum() / values.sum())
        peak = np.unravel_index(int(np.argmax(values)), values.shape)
        pointing = float(trimap[peak] in (PET, BORDER))
        assert shown_energy == pytest.approx(energy, abs=SCORE_TOLERANCE), layer
        assert shown_pointing == pointing, layer
        scored += 1
    assert scored  # at least one layer's localisation was recomputed


# --- 6 and 7. units -----------------------------------------------------------------------


def unit_links(site, model_id: str, layer: str) -> tuple[Page, list[Element]]:
    """A layer page and its units' links (each with ``data-i``, ``data-r`` and a picture)."""
    page = layer_page(site, model_id, layer)
    links = page.root.find("div", "units").find_all("a", data_i=True)
    assert len(links) == UNITS_PER_LAYER, len(links)
    return page, links


def detailed_means(site, net: Net) -> list[np.ndarray]:
    """Per layer, (photos, units): each detailed photo's spatial-mean unit activations."""
    features, _ = net.run(np.stack([model_input(site.images, name) for name in DETAILED]))
    return [f.mean(axis=(1, 2)) for f in features]


def test_most_exciting_photos_are_ranked_by_spatial_mean_activation(site, nets):
    """Each unit page's "most" list names the detailed photos in the order of the unit's
    spatial-mean activation (after its BatchNorm and ReLU), with those means."""
    means = detailed_means(site, nets["mobilenet"])
    for layer_index, layer in enumerate(LAYERS):
        page, links = unit_links(site, "mobilenet", layer)
        for link in links:
            unit = int(link.attrs["data-i"])
            unit_page = Page(page.target(link.attrs["href"]))
            most = [
                d for d in unit_page.root.find_all("div", "exemplars") if "least" not in d.classes
            ]
            assert len(most) == 1
            figures = most[0].find_all("figure")
            shown = [Path(urlsplit(f.find("a").attrs["href"]).path).stem for f in figures]
            column = means[layer_index][:, unit]
            expected = [DETAILED[i] for i in np.argsort(-column, kind="stable")]
            assert shown == expected, (layer, unit, column)
            shown_means = [number(f.find("figcaption").text.split()[-1]) for f in figures]
            assert shown_means == pytest.approx(sorted(column, reverse=True), abs=MEAN_TOLERANCE)


def test_activation_ratio_is_the_pictures_mean_over_the_best_photos(site, nets):
    """Each unit's activation ratio on its layer page: the unit's spatial-mean activation
    on the picture the page shows, over its highest one on a detailed photo."""
    net = nets["mobilenet"]
    means = detailed_means(site, net)
    wrong = []
    for layer_index, layer in enumerate(LAYERS):
        page, links = unit_links(site, "mobilenet", layer)
        for link in links:
            unit = int(link.attrs["data-i"])
            with Image.open(page.target(link.find("img").attrs["src"])) as picture:
                rgb = picture.convert("RGB")
            if rgb.size != (SIZE, SIZE):
                rgb = rgb.resize((SIZE, SIZE), Image.BILINEAR)
            features, _ = net.run(np.asarray(rgb, np.uint8)[None])
            own = features[layer_index][0, :, :, unit].mean()
            best = means[layer_index][:, unit].max()
            shown = float(link.attrs["data-r"])
            if shown != pytest.approx(own / best, rel=RATIO_TOLERANCE):
                wrong.append(
                    f"{layer} unit {unit}: page {shown}, from the shown picture "
                    f"{own / best:.3f} (its mean {own:.4f} over the best photo's {best:.4f})"
                )
    assert not wrong, "\n".join(wrong)


# --- activation atlases ---------------------------------------------------------------------


def atlas_data(site, model_id: str, layer: str) -> tuple[dict, str]:
    """The cells embedded in a model's atlas page of a layer (the page linked from the
    layer's page), and the atlas picture's file name."""
    page = layer_page(site, model_id, layer)
    link = page.root.find("a", "atlas-link").attrs["href"]
    text = page.target(link).read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="atlas-data">(.*?)</script>', text, re.S)
    assert found, f"no cell data on the atlas page of {layer}"
    picture = re.search(r'<img src="([^"]+\.webp)"', text)
    return json.loads(found[1]), picture[1] if picture else ""


def cache_entries(cache: Path, key: str) -> list[tuple[Path, dict]]:
    """The cache's entries whose meta has ``key``: (folder, meta)."""
    found = []
    for meta in cache.glob("*/*/meta.json"):
        data = json.loads(meta.read_text(encoding="utf-8"))
        if key in data:
            found.append((meta.parent, data))
    return found


def test_atlas_labels_are_the_classes_plain_keras_attributes_them_to(site, nets):
    """The fine-tuned model's atlas of conv_pw_7: each cell's breed and share on the page
    are the mean over the cell's vectors of activation x gradient of each breed's logit
    at the vector's position (a tape per breed, here), the argmax and its share of the
    positive means. The vectors are those the build's layout chose (read from its cache)."""
    data, picture = atlas_data(site, "mobilenet-pets", "conv_pw_7")
    assert data["cells"], "no cells"
    cache = Path(site.config["cache"])
    cells = [(c["r"], c["c"], c["n"]) for c in data["cells"]]
    (layout,) = [
        (folder, meta)
        for folder, meta in cache_entries(cache, "label_members")
        if [(c["row"], c["col"], c["count"]) for c in meta["cells"]] == cells
    ]
    (samples,) = [
        folder
        for folder, _ in cache_entries(cache, "photos")
        if folder.name == layout[1]["samples_key"]
    ]
    where = np.load(samples / "where.npy")
    names = json.loads((samples / "meta.json").read_text())["photos"]
    net = nets["mobilenet-pets"]
    layer = LAYERS.index("conv_pw_7")
    jacobians = {}
    for photo in sorted(
        {int(where[i, 0]) for chosen in layout[1]["label_members"] for i in chosen}
    ):
        batch = tf.constant(
            net.preprocess(model_input(site.images, names[photo])[None].astype(np.float32))
        )
        with tf.GradientTape() as tape:
            tape.watch(batch)  # the frozen backbone's weights are not watched by themselves
            *features, logits = net.probe(batch, training=False)
            scores = logits[0]
        feature = features[layer]
        jacobians[photo] = (feature[0].numpy(), tape.jacobian(scores, feature)[:, 0].numpy())
    for cell, chosen in zip(data["cells"], layout[1]["label_members"], strict=True):
        values = np.mean(
            [
                np.einsum("c,kc->k", jacobians[p][0][y, x], jacobians[p][1][:, y, x])
                for p, y, x in where[chosen]
            ],
            axis=0,
        )
        assert data["labels"][cell["l"]] == net.labels[int(np.argmax(values))]
        positive = np.maximum(values, 0.0)
        assert cell["s"] == pytest.approx(positive.max() / positive.sum(), abs=5e-4)
    # the ImageNet model's atlas of the same frozen layer is the same picture
    _, imagenet_picture = atlas_data(site, "mobilenet", "conv_pw_7")
    assert picture and Path(picture).name == Path(imagenet_picture).name
