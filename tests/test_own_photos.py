"""Your own photos: every dataset layout (class folders, metadata, Oxford, a flat folder),
tiny generated images and tiny models built here, the bad inputs as a table, and whole
builds that must never speak of breeds or species.

Numbers on the pages are checked against plain Keras run in the test on the same files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import DATA, MOBILENET_WEIGHTS
from PIL import Image

from atlas.data.scan import scan_dataset
from atlas.errors import ConfigError, ModelError

SIZE = 32


# -- tiny photos in each layout -----------------------------------------------------------------


def photo(path: Path, seed: int, mode: str = "RGB", size: tuple[int, int] = (40, 36)) -> Path:
    """A small random photo (smooth blobs, so JPEG keeps it recognisable)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
    picture = Image.fromarray(base).resize(size, Image.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.convert(mode).save(path)
    return path


def class_folders(root: Path, classes=("cat", "dog"), per_class=3, split=None, ext=".jpg"):
    """``root/[split/]class/IMG_####.jpg``: camera names, as phones write them."""
    seed = 0
    for label in classes:
        for _ in range(per_class):
            folder = root / split / label if split else root / label
            photo(folder / f"IMG_{9000 + seed:04d}{ext}", seed, "L" if ext == ".png" else "RGB")
            seed += 1
    return root


def metadata_folder(root: Path, rows: list[dict], kind: str = "csv") -> Path:
    for index, row in enumerate(rows):
        photo(root / row["file_name"], index)
    if kind == "csv":
        columns = list(rows[0])
        lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]
        (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    else:
        (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


ROWS = [
    {"file_name": "a/1.jpg", "label": "rose", "split": "train", "group": "flower"},
    {"file_name": "a/2.jpg", "label": "tulip", "split": "test", "group": "flower"},
    {"file_name": "b/3.jpg", "label": "oak", "split": "test", "group": "tree"},
]


# -- layouts ----------------------------------------------------------------------------------


def test_class_folders_read_as_keras_reads_them(tmp_path):
    root = class_folders(tmp_path / "photos", classes=("dog", "cat", "Zebra"))
    photo(root / "cat" / "nested" / "deeper" / "IMG_0001.jpg", 50)  # below a class: its own
    photo(root / "cat" / "IMG_5555.jpg", 51)
    photo(root / "dog" / "IMG_5555.png", 52)  # the same file name in another class folder
    scan = scan_dataset(root, None, layout="auto")
    assert scan.layout == "folders"
    assert scan.classes == ("Zebra", "cat", "dog")  # sorted as Keras sorts: "Z" < "c"
    labels = {image.name: image.label for image in scan.images}
    assert labels["cat/nested/deeper/IMG_0001"] == "cat"
    assert labels["cat/IMG_5555"] == "cat" and labels["dog/IMG_5555"] == "dog"  # kept apart
    assert all(image.split is None for image in scan.images)
    assert not scan.skipped


def test_a_split_level_above_the_class_folders_gives_each_photo_its_split(tmp_path):
    root = tmp_path / "photos"
    class_folders(root, split="train")
    class_folders(root, split="validation", per_class=1)
    scan = scan_dataset(root, None, layout="auto")
    assert scan.classes == ("cat", "dog")
    splits = {image.name: image.split for image in scan.images}
    assert splits["train/cat/IMG_9000"] == "train"
    assert splits["validation/dog/IMG_9001"] == "validation"
    assert len(scan.images) == 8


def test_dataset_classes_give_the_order(tmp_path):
    root = class_folders(tmp_path / "photos", classes=("a", "b", "c"))
    scan = scan_dataset(root, None, layout="folders", classes=("c", "a", "b"))
    assert scan.classes == ("c", "a", "b")


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_metadata_files_give_labels_splits_and_groups(tmp_path, kind):
    root = metadata_folder(tmp_path / "photos", ROWS, kind)
    scan = scan_dataset(root, None, layout="auto")
    assert scan.layout == "metadata"
    assert scan.classes == ("oak", "rose", "tulip")
    found = {i.name: (i.label, i.split, i.group) for i in scan.images}
    assert found == {
        "a/1": ("rose", "train", "flower"),
        "a/2": ("tulip", "test", "flower"),
        "b/3": ("oak", "test", "tree"),
    }


def test_camera_names_in_one_folder_are_unlabelled_not_a_breed(tmp_path):
    root = tmp_path / "photos"
    for index, name in enumerate(["IMG_93889333.jpg", "IMG_0002.jpg", "DSC01234.JPG"]):
        photo(root / name, index)
    breeds = json.loads((DATA / "breeds.json").read_text())["breeds"]
    scan = scan_dataset(root, None, layout="auto", known_breeds=frozenset(breeds))
    assert scan.layout == "flat" and not scan.labelled
    assert len(scan.images) == 3 and {image.label for image in scan.images} == {None}


def test_oxford_file_names_are_still_the_oxford_layout(tmp_path):
    root = tmp_path / "photos"
    for index, name in enumerate(["Abyssinian_1.jpg", "beagle_2.jpg"]):
        photo(root / name, index)
    breeds = json.loads((DATA / "breeds.json").read_text())["breeds"]
    scan = scan_dataset(root, None, layout="auto", known_breeds=frozenset(breeds))
    assert scan.layout == "oxford"
    assert {(i.label, i.group) for i in scan.images} == {("Abyssinian", "cat"), ("beagle", "dog")}


# -- bad input: one line naming the file or key, exit 2 -----------------------------------------


def _missing_column(root: Path) -> None:
    photo(root / "1.jpg", 0)
    (root / "metadata.csv").write_text("path,label\n1.jpg,rose\n")


def _missing_file(root: Path) -> None:
    photo(root / "1.jpg", 0)
    (root / "metadata.csv").write_text("file_name,label\n1.jpg,rose\n2.jpg,tulip\n")


def _unknown_label(root: Path) -> None:
    metadata_folder(root, ROWS)


BAD_SCANS = [
    (_missing_column, {}, ["metadata.csv", "file_name"]),
    (_missing_file, {}, ["metadata.csv", "line 3", "'2.jpg'"]),
    (_unknown_label, {"classes": ("rose", "tulip")}, ["metadata.csv", "'oak'", "dataset.classes"]),
    (lambda root: class_folders(root), {"classes": ("cat", "cow")}, ["'cow'", "dog"]),
]


@pytest.mark.parametrize(("make", "options", "needles"), BAD_SCANS)
def test_bad_datasets_are_one_config_error(tmp_path, make, options, needles):
    root = tmp_path / "photos"
    root.mkdir()
    make(root)
    with pytest.raises(ConfigError) as raised:
        scan_dataset(root, None, layout="auto", **options)
    text = str(raised.value)
    assert len(text.splitlines()) == 1, text
    for needle in needles:
        assert needle in text, (needle, text)


def test_an_empty_class_folder_is_a_warning(tmp_path, caplog):
    root = class_folders(tmp_path / "photos")
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no photos here")
    scan = scan_dataset(root, None, layout="folders")
    assert "empty" in scan.classes
    assert any("no photo in this class folder" in r.getMessage() for r in caplog.records)


# -- whole builds: (a) to (e) -------------------------------------------------------------------


def tiny_classifier(classes: int, channels: int = 3, head: str = "softmax", seed: int = 0):
    """A tiny CNN on raw pixels; ``head``: softmax, or ``binary-logits`` (Dense(1), no
    activation: the keras.io "from scratch" recipe)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, channels), name="pixels")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if head == "binary-logits":
        outputs = keras.layers.Dense(1, name="logit")(x)
    else:
        outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"tiny_{head.replace('-', '_')}")


def write_config(root: Path, dataset: dict, models: list[dict], **render) -> Path:
    data = {
        "site": {"title": "my photos", "output": "_site"},
        "cache": ".atlas-cache",
        "dataset": dataset,
        "render": {
            "units_per_layer": 1,
            "best_grid": 1,
            "activation_channels": 2,
            "faithfulness_photos": 1,
            "unit_views": {"units": "none"},
            **render,
        },
        "models": models,
    }
    path = root / "site_config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def build(config: Path) -> Path:
    from atlas.build import BuildOptions, build

    return build(config, BuildOptions(progress=False, max_steps=2)).output


def site_text(site: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(site.rglob("*.html")))


def assert_no_pets_words(site: Path) -> None:
    text = site_text(site) + (site / "search-index.js").read_text(encoding="utf-8")
    found = sorted(set(re.findall(r"(?i)\b\w*(?:breed|species)\w*\b", text)))
    assert found == [], found


def keras_probabilities(model_path: Path, files: list[Path], channels: int = 3) -> np.ndarray:
    """Plain Keras on the photos as a user would feed them: resized bilinearly."""
    import keras

    model = keras.saving.load_model(model_path, compile=False)
    mode = "L" if channels == 1 else "RGB"
    batch = np.stack(
        [
            np.asarray(Image.open(f).convert(mode).resize((SIZE, SIZE), Image.BILINEAR), np.float32)
            for f in files
        ]
    )
    return np.asarray(model(batch.reshape(len(files), SIZE, SIZE, channels)))


def page_accuracy(site: Path, model_id: str) -> float:
    page = (site / "models" / model_id / "accuracy.html").read_text(encoding="utf-8")
    value = re.search(r'<span class="big">([\d.]+) %</span><span class="muted">class top-1', page)
    assert value, "no class top-1 on the accuracy page"
    return float(value[1]) / 100


@pytest.fixture(scope="module")
def folders_site(tmp_path_factory):
    """(a) a classifier on class folders, sorted folder order, ``classes: dataset``."""
    root = tmp_path_factory.mktemp("folders")
    photos = class_folders(root / "photos", classes=("cat", "dog", "fox"), per_class=3)
    model = root / "mine.keras"
    tiny_classifier(3).save(model)
    config = write_config(
        root,
        {"images": "photos"},
        [{"id": "mine", "file": "mine.keras", "classes": "dataset"}],
    )
    return build(config), photos, model


@pytest.mark.slow
def test_a_classifier_on_class_folders_builds_with_keras_accuracy(folders_site):
    site, photos, model = folders_site
    files = sorted(photos.rglob("*.jpg"))
    truth = np.array(["cat dog fox".split().index(f.parent.name) for f in files])
    expected = float((keras_probabilities(model, files).argmax(axis=1) == truth).mean())
    assert page_accuracy(site, "mine") == pytest.approx(expected, abs=0.001)
    assert_no_pets_words(site)
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "9 images of 3 classes" in index


@pytest.mark.slow
def test_a_binary_logits_model_is_a_two_class_classifier(tmp_path):
    """(b) Dense(1) logits on two class folders: p = sigmoid(z) is the second class."""
    photos = class_folders(tmp_path / "photos", classes=("cat", "dog"), per_class=2)
    model = tmp_path / "binary.keras"
    tiny_classifier(1, head="binary-logits", seed=3).save(model)
    config = write_config(
        tmp_path, {"images": "photos"}, [{"id": "binary", "file": "binary.keras"}]
    )
    with pytest.raises(ModelError, match="classes: dataset"):
        build(config)  # two outputs as atlas reads them, two classes: it says what to set
    config = write_config(
        tmp_path,
        {"images": "photos"},
        [{"id": "binary", "file": "binary.keras", "classes": "dataset"}],
    )
    site = build(config)
    files = sorted(photos.rglob("*.jpg"))
    z = keras_probabilities(model, files)[:, 0]
    p_dog = 1 / (1 + np.exp(-z))
    page = (site / "models" / "binary" / "predictions.html").read_text(encoding="utf-8")
    shown = re.findall(r'<span class="cls[^"]*">(cat|dog) ([\d.]+)%</span>', page)
    assert len(shown) == 2 * len(files)
    for (first, p_first), p in zip(shown[::2], p_dog, strict=True):
        top = "dog" if p > 0.5 else "cat"
        assert first == top
        assert float(p_first) / 100 == pytest.approx(max(p, 1 - p), abs=0.001)
    assert_no_pets_words(site)


@pytest.mark.slow
def test_a_grey_model_on_grey_png_folders(tmp_path):
    """(c) a 1-channel CNN on grayscale PNGs: it builds, its pictures are grey."""
    photos = class_folders(tmp_path / "digits", classes=("one", "two"), per_class=2, ext=".png")
    model = tmp_path / "grey.keras"
    tiny_classifier(2, channels=1, seed=5).save(model)
    config = write_config(
        tmp_path, {"images": "digits"}, [{"id": "grey", "file": "grey.keras", "classes": "dataset"}]
    )
    site = build(config)
    files = sorted(photos.rglob("*.png"))
    expected = keras_probabilities(model, files, channels=1).argmax(axis=1)
    truth = np.array([("one", "two").index(f.parent.name) for f in files])
    assert page_accuracy(site, "grey") == pytest.approx(float((expected == truth).mean()), abs=1e-3)
    unit_pictures = [
        site / source
        for page in sorted((site / "models" / "grey").rglob("units/*.html"))
        for source in re.findall(r'<img class="large" src="(?:\.\./)*([^"]+)"', page.read_text())
    ]
    assert unit_pictures
    for picture in unit_pictures:
        rgb = np.asarray(Image.open(picture).convert("RGB"), np.int16)
        assert np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 8  # grey (WebP's colour noise)
    assert_no_pets_words(site)


@pytest.mark.slow
def test_a_metadata_dataset_with_groups_builds(tmp_path):
    """(d) a metadata.csv dataset; the model trained on its train split."""
    rows = [
        {"file_name": f"img/{i}.jpg", "label": label, "split": split, "group": group}
        for i, (label, split, group) in enumerate(
            [
                ("rose", "train", "flower"),
                ("rose", "test", "flower"),
                ("tulip", "test", "flower"),
                ("oak", "test", "tree"),
            ]
        )
    ]
    metadata_folder(tmp_path / "photos", rows)
    tiny_classifier(3, seed=7).save(tmp_path / "m.keras")
    config = write_config(
        tmp_path,
        {"images": "photos"},
        [{"id": "m", "file": "m.keras", "classes": "dataset", "trained_on": "train"}],
    )
    site = build(config)
    page = (site / "models" / "m" / "accuracy.html").read_text(encoding="utf-8")
    assert "Measured on <strong>3 photos</strong>" in page  # the train photo is left out
    assert "group" in page
    assert_no_pets_words(site)


@pytest.mark.slow
def test_an_unlabelled_flat_folder_with_an_imagenet_model(tmp_path):
    """(e) camera photos in one folder: predictions and maps, no accuracy, no breeds."""
    root = tmp_path / "photos"
    for index, name in enumerate(["IMG_93889333.jpg", "IMG_0002.jpg"]):
        photo(root / name, index, size=(140, 130))
    config = write_config(
        tmp_path,
        {"images": "photos"},
        [
            {
                "id": "mobilenet",
                "application": "MobileNet",
                "options": {"alpha": 0.25, "input_shape": [128, 128, 3]},
                "weights": str(MOBILENET_WEIGHTS),
                "layers": ["conv_pw_13"],
            }
        ],
    )
    site = build(config)
    model = site / "models" / "mobilenet"
    assert (model / "predictions.html").is_file()
    assert not (model / "accuracy.html").exists() or "No accuracy" in (
        model / "accuracy.html"
    ).read_text(encoding="utf-8")
    assert "unlabelled" in (site / "index.html").read_text(encoding="utf-8")
    assert_no_pets_words(site)


@pytest.mark.slow
def test_atlas_new_writes_a_config_for_your_model_and_photos(tmp_path, capsys):
    from atlas.cli import main

    photos = class_folders(tmp_path / "photos", classes=("cat", "dog"), per_class=1)
    tiny_classifier(2).save(tmp_path / "mine.keras")
    code = main(
        [
            "new",
            str(tmp_path / "proj"),
            "--model",
            str(tmp_path / "mine.keras"),
            "--photos",
            str(photos),
        ]
    )
    assert code == 0
    data = yaml.safe_load((tmp_path / "proj" / "site_config.yaml").read_text())
    assert data["dataset"] == {"name": "photos", "images": "../photos", "layout": "folders"}
    assert data["models"][0]["classes"] == "dataset"
    tiny_classifier(5).save(tmp_path / "five.keras")
    main(
        [
            "new",
            str(tmp_path / "p5"),
            "--model",
            str(tmp_path / "five.keras"),
            "--photos",
            str(photos),
        ]
    )
    assert "5 outputs but the photos have 2 classes" in capsys.readouterr().out


# -- masks for the localisation scores ----------------------------------------------------------


def test_binary_masks_are_read_as_object_and_background(tmp_path):
    from atlas.analysis.scores import BACKGROUND, PET, load_trimap

    for name, values in (("255", (0, 255)), ("01", (0, 1))):
        mask = np.full((4, 6), values[0], np.uint8)
        mask[1:3, 2:5] = values[1]
        Image.fromarray(mask).save(tmp_path / f"{name}.png")
        trimap = load_trimap(tmp_path / f"{name}.png")
        assert set(np.unique(trimap)) == {PET, BACKGROUND}
        assert (trimap == PET).sum() == 6
    oxford = np.array([[1, 2], [3, 2]], np.uint8)  # no 0: an Oxford trimap as it is
    Image.fromarray(oxford).save(tmp_path / "trimap.png")
    np.testing.assert_array_equal(load_trimap(tmp_path / "trimap.png"), oxford)


def test_masks_are_found_by_name_and_a_wrong_size_is_skipped(tmp_path, caplog):
    """``dataset.masks``: NAME.png (the path below the photos) or the file name alone; a
    mask whose size is not its photo's is left out of the scores with a warning."""
    from types import SimpleNamespace

    from atlas.data.masks import find_masks
    from atlas.prepare import _usable_masks

    masks = tmp_path / "masks"
    (masks / "cat").mkdir(parents=True)
    Image.new("L", (40, 36)).save(masks / "cat" / "IMG_1.png")
    Image.new("L", (10, 10)).save(masks / "IMG_2.png")
    names = ["cat/IMG_1", "dog/IMG_2", "dog/IMG_3"]
    found = find_masks(masks, names)
    assert found == {"cat/IMG_1": masks / "cat" / "IMG_1.png", "dog/IMG_2": masks / "IMG_2.png"}
    images = [SimpleNamespace(name=n, width=40, height=36) for n in names]
    context = SimpleNamespace(scan=SimpleNamespace(images=images))
    usable = _usable_masks(masks, names, context)
    assert list(usable) == ["cat/IMG_1"]
    assert any("IMG_2.png" in r.getMessage() and "10x10" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_classes_dataset_with_another_output_count_is_one_line(tmp_path, capsys):
    """A model with ``classes: dataset`` whose outputs are not the dataset's classes: one
    error line naming the model and the key, nothing rendered."""
    from atlas.cli import main

    class_folders(tmp_path / "photos", classes=("a", "b", "c"), per_class=1)
    tiny_classifier(2).save(tmp_path / "two.keras")
    config = write_config(
        tmp_path,
        {"images": "photos"},
        [{"id": "two", "file": "two.keras", "classes": "dataset"}],
    )
    code = main(["build", "--no-progress", "-c", str(config)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert code in (1, 2) and len(errors) == 1
    for needle in ("models[0].classes", "'two'", "2 outputs", "3 labels"):
        assert needle in errors[0], errors[0]
    assert not (tmp_path / "_site").exists()


@pytest.mark.slow
def test_a_four_channel_model_sees_the_photos_with_an_opaque_alpha(tmp_path):
    """A 4-channel input (RGB + alpha, or a fourth band): photos get an opaque alpha
    channel (255), and the page's probabilities are plain Keras' on that input."""
    photos = class_folders(tmp_path / "photos", classes=("a", "b"), per_class=2)
    model = tmp_path / "four.keras"
    tiny_classifier(2, channels=4, seed=9).save(model)
    config = write_config(
        tmp_path, {"images": "photos"}, [{"id": "four", "file": "four.keras", "classes": "dataset"}]
    )
    site = build(config)
    import keras

    files = sorted(photos.rglob("*.jpg"))
    rgb = np.stack(
        [
            np.asarray(
                Image.open(f).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), np.float32
            )
            for f in files
        ]
    )
    rgba = np.concatenate([rgb, np.full(rgb.shape[:-1] + (1,), 255.0, np.float32)], axis=-1)
    expected = np.asarray(keras.saving.load_model(model, compile=False)(rgba)).max(axis=1)
    page = (site / "models" / "four" / "predictions.html").read_text(encoding="utf-8")
    shown = [float(p) / 100 for p in re.findall(r'<span class="cls[^"]*">(?:a|b) ([\d.]+)%', page)]
    np.testing.assert_allclose(shown[::2], expected, atol=0.001)
    assert_no_pets_words(site)
