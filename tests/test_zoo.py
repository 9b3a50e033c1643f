"""Any model a user brings, and every keras.applications model atlas lists.

One command-line build (a fresh process, as a user runs it) holds the models of the
issue's "done when" (small ``.keras`` models built here: ``keras.ops`` preprocessing and a
nested backbone, a Rescaling layer and a logits head, a Sequential CNN ending in a Softmax
layer with a labels file, a feature extractor, a cat/dog classifier) and one application
of every family with random weights: VGG, ResNet, ResNetV2, DenseNet, Inception,
Inception-ResNet, Xception, MobileNet V1/V2/V3, NASNet, EfficientNet(V2), ConvNeXt. It
renders one photo, one unit per layer, two optimisation steps. Rendering every conv layer
of the applications (about 1100 layers, a traced function each, several seconds apiece on
two cores) is too slow for CI, so each application renders one or two layers chosen with
``layers:`` patterns, deep ones: a unit model of a deep layer runs the whole backbone.

The walk and the facts of all 26 applications are checked too: the 14 of the build from
its cache (its facts, as the build planned with them), the 12 others built one after
another in this process, each once and then dropped. Keras numbers unnamed layers per
process, so facts (layer names, read-at tensors, content addresses) are compared between
the build's process, this one, and a fresh process that builds InceptionV3 first. The
build and the facts are made once per session, also when pytest-xdist workers share this
module (see ``once``).
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import own_models
import pytest
import yaml
from conftest import DATA, config_dict, copy_images
from sitecheck import check_site

from atlas.cache import open_cache
from atlas.config.load import load_config
from atlas.config.settings import APPLICATIONS, ModelConfig, RenderSettings
from atlas.data.breeds import load_breeds, load_class_index
from atlas.model.labels import breed_order
from atlas.plan import jobs as plan

pytestmark = pytest.mark.slow

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
LIST = DATA / "oxford-pets" / "annotations" / "list.txt"

# application -> the layers it renders. InceptionResNetV2 comes before InceptionV3: the
# order that once gave InceptionV3 facts naming layers of another numbering.
FAMILIES: dict[str, list[str]] = {
    "InceptionResNetV2": ["conv_7b"],
    "InceptionV3": ["conv2d_85"],  # a name Keras numbers per process
    "ConvNeXtTiny": ["convnext_tiny_stem/*", "convnext_tiny_stage_3_block_2_depthwise_conv"],
    "MobileNetV3Small": ["expanded_conv_10_depthwise"],
    "VGG16": ["block5_conv3"],
    "ResNet50": ["conv5_block3_3_conv"],  # read after its BatchNorm (an Add follows)
    "ResNet50V2": ["conv5_block3_3_conv"],  # read at the conv (an Add follows directly)
    "DenseNet121": ["conv5_block16_1_conv"],
    "Xception": ["block14_sepconv2"],
    "MobileNet": ["conv_dw_13"],
    "MobileNetV2": ["Conv_1"],
    "NASNetMobile": ["separable_conv_2_normal_left1_12"],
    "EfficientNetB0": ["top_conv"],
    "EfficientNetV2B0": ["block6h_dwconv2"],
}
# id -> (builder, classes)
OWN = {
    "ops-nested": (own_models.ops_nested, "breeds"),
    "rescaling-logits": (own_models.rescaling_logits, "breeds"),
    "sequential-softmax": (own_models.sequential_softmax, "labels.txt"),
    "features": (own_models.feature_extractor, None),
    "cat-dog": (own_models.cat_dog, "species"),
}
BREED_MODELS = ("ops-nested", "rescaling-logits", "sequential-softmax")
PHOTOS = 1


def application_config(application: str) -> ModelConfig:
    """An application's config entry with random weights, as load_config makes it."""
    return ModelConfig(
        id=application.lower(),
        title=application,
        application=application,
        file=None,
        options={},
        weights="none",
        sha256=None,
        layers=None,
        notes=None,
        render=RenderSettings(),
    )


def facts_of(application: str) -> dict:
    """Load one application and return its facts (as a build caches them for planning)."""
    from atlas.render.load import load_model
    from atlas.render.run import model_facts

    loaded = load_model(application_config(application))
    facts = json.loads(json.dumps(model_facts(loaded)))  # as read back from the cache
    del loaded
    gc.collect()
    return facts


def digest(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def mixed_case_labels(path: Path) -> list[str]:
    """The 37 breeds in list.txt order, written as users do: any case, spaces or ``_``."""
    breeds = load_breeds(DATA / "breeds.json", load_class_index(DATA / "imagenet_class_index.json"))
    labels = []
    for index, key in enumerate(breed_order(LIST, breeds)):
        styles = (key.upper(), key.replace("_", " "), f"  {breeds.breeds[key].title} ")
        labels.append(styles[index % 3])
    path.write_text("\n".join(labels) + "\n", encoding="utf-8")
    return labels


def write_zoo_project(root: Path) -> Path:
    models = []
    for model_id, (builder, classes) in OWN.items():
        own_models.save(builder(), root / "models", model_id)
        entry = {"id": model_id, "file": f"models/{model_id}.keras"}
        if model_id == "ops-nested":
            entry["render"] = {"faithfulness_photos": 1, "unit_views": {"units": 1}}
        models.append(entry if classes is None else {**entry, "classes": classes})
    mixed_case_labels(root / "labels.txt")
    models += [
        {"id": name.lower(), "application": name, "weights": "none", "layers": layers}
        for name, layers in FAMILIES.items()
    ]
    images = copy_images(root / "images", PHOTOS)
    data = config_dict(
        root,
        images,
        models[0],
        models=models,
        render={
            "units_per_layer": 1,
            "best_grid": 1,
            "activation_channels": 4,
            # the costly views on one user model only: deletion/insertion curves through
            # every application (InceptionResNetV2's 256 passes at 299 px...) and their
            # negative and diversity pictures test nothing the walk does not
            "faithfulness_photos": 0,
            "scorecam_channels": 1,
            "unit_views": {"units": "none"},
        },
    )
    data["dataset"]["annotations"] = str(LIST)
    data["dataset"]["detailed"] = [sorted(p.stem for p in images.iterdir())[0]]
    config = root / "site_config.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return config


def once(tmp_path_factory, name: str, compute: Callable[[Path], object]) -> tuple[Path, object]:
    """``compute(folder)`` run once per test session, even when pytest-xdist workers share
    it (they share the parent of their temporary folders); its JSON result is kept there.
    Returns the folder and the result."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    folder.mkdir(parents=True, exist_ok=True)
    result = folder / "result.json"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            result.write_text(json.dumps(compute(folder)), encoding="utf-8")
    return folder, json.loads(result.read_text(encoding="utf-8"))


def run_zoo_build(folder: Path) -> dict:
    config = write_zoo_project(folder)
    command = [sys.executable, "-m", "atlas", "build", "--no-progress", "--max-steps", "2"]
    done = subprocess.run(
        [*command, "-c", str(config)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=1200,
        cwd=folder,
    )
    return {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


@pytest.fixture(scope="module")
def zoo_build(tmp_path_factory) -> tuple[Path, dict]:
    """The build of every model above, run as a user runs it: (config, its exit and output)."""
    folder, done = once(tmp_path_factory, "zoo", run_zoo_build)
    return folder / "site_config.yaml", done


@pytest.fixture(scope="module")
def site(zoo_build) -> Path:
    config, done = zoo_build
    assert done["returncode"] == 0, done["stderr"][-4000:]
    return config.parent / "_site"


def test_the_build_exits_0_without_a_traceback(zoo_build, site):
    _, done = zoo_build
    assert "Traceback" not in done["stdout"] + done["stderr"]
    assert check_site(site) == []
    for model_id in [*OWN, *(name.lower() for name in FAMILIES)]:
        assert (site / "models" / model_id / "index.html").is_file(), model_id


def shown_labels(page: str) -> list[str]:
    """The class labels a predictions page shows (``<span class="cls">label 12.3%</span>``)."""
    return re.findall(r'<span class="cls[^"]*">([^<]*?) [\d.]+%</span>', page)


def test_breed_models_show_breed_labels(zoo_build, site):
    config, _ = zoo_build
    breeds = load_breeds(DATA / "breeds.json", load_class_index(DATA / "imagenet_class_index.json"))
    titles = {breed.title for breed in breeds.breeds.values()}
    labels = {
        "breeds": titles,
        "labels.txt": {line.strip() for line in mixed_case_labels(config.parent / "x.txt")},
    }
    imagenet = {
        label.replace("_", " ")
        for _, label in load_class_index(DATA / "imagenet_class_index.json")[:37]
    }  # tench, goldfish...
    for model_id in BREED_MODELS:
        page = (site / "models" / model_id / "predictions.html").read_text(encoding="utf-8")
        shown = shown_labels(page)
        assert len(shown) == PHOTOS * 5, model_id
        assert set(shown) <= labels[OWN[model_id][1]], (model_id, shown)
        assert not {label for label in imagenet if re.search(rf"\b{label}\b", page)}, model_id
    species = shown_labels((site / "models" / "cat-dog" / "predictions.html").read_text())
    assert len(species) == PHOTOS * 2 and set(species) == {"cat", "dog"}


def test_trained_files_are_not_random_and_applications_are(site):
    for model_id in OWN:
        page = (site / "models" / model_id / "index.html").read_text(encoding="utf-8")
        assert "random weights" not in page, model_id
    for name in FAMILIES:
        page = (site / "models" / name.lower() / "index.html").read_text(encoding="utf-8")
        assert "random weights" in page, name


def test_feature_extractor_has_no_predictions(site):
    folder = site / "models" / "features"
    assert "no classification head" in (folder / "index.html").read_text(encoding="utf-8")
    assert not (folder / "predictions.html").exists()
    assert not (folder / "accuracy.html").exists()
    image_pages = list((folder / "images").glob("*.html"))
    assert len(image_pages) == 1
    assert "Grad-CAM" not in image_pages[0].read_text(encoding="utf-8")


def test_every_model_renders_its_unit_pictures(site):
    expected = {model_id: 3 for model_id in OWN}  # every conv layer: the backbone's
    expected["sequential-softmax"] = 2
    expected.update({name.lower(): len(layers) for name, layers in FAMILIES.items()})
    for model_id, count in expected.items():
        page = (site / "models" / model_id / "index.html").read_text(encoding="utf-8")
        assert "not rendered" not in page, model_id
        pictures = re.findall(r'<img src="([^"]+)"[^>]*alt="Strongest units of ([^"]+)"', page)
        assert len(pictures) == count, (model_id, [layer for _, layer in pictures])
        for source, _ in pictures:
            assert (site / "models" / model_id / source).resolve().is_file(), (model_id, source)


# -- the walk and facts of all 26 applications --------------------------------------------------


@pytest.fixture(scope="module")
def zoo_facts(tmp_path_factory, zoo_build, site) -> dict[str, dict]:
    """Every application's facts: the build's (from its cache) and the others, built here
    one after another."""

    def collect(_: Path) -> dict[str, dict]:
        config = load_config(zoo_build[0])
        cache = open_cache(config.cache)
        facts = {}
        for model in config.models:
            if model.application is not None:
                entry = cache.get(plan.facts_job(model, plan.model_identity(model)).key)
                facts[model.application] = {k: v for k, v in entry.meta.items() if k != "_files"}
        for application in APPLICATIONS:
            if application not in facts:
                facts[application] = facts_of(application)
        return facts

    return once(tmp_path_factory, "zoo-facts", collect)[1]


@pytest.mark.parametrize("application", APPLICATIONS)
def test_walk_and_facts_of_every_application(zoo_facts, application):
    facts = zoo_facts[application]
    assert facts["head"] == "softmax" and facts["classes"] == 1000
    assert facts["random_weights"] is True
    conv = [layer for layer in facts["layers"] if layer["is_conv"]]
    assert conv, f"{application}: no conv layers"
    names = [layer["name"] for layer in facts["layers"]]
    assert len(names) == len(set(names)), f"{application}: duplicate layer names"
    for layer in conv:
        assert re.fullmatch(r"[0-9a-f]{64}", layer["address"] or ""), layer
        assert layer["read_at"] in names, layer  # an operation of the flat graph
        assert names.index(layer["read_at"]) >= names.index(layer["name"]), layer
        assert layer["channels"] == layer["output_shape"][-1] > 0
    # Units read at different tensors have different addresses.
    addresses = {layer["read_at"]: layer["address"] for layer in conv}
    assert len(set(addresses.values())) == len(addresses), application
    assert facts["input_size"][0] == facts["input_size"][1] >= 224


def test_inception_v3_after_inception_resnet_v2_names_its_own_layers(zoo_facts):
    conv = [layer for layer in zoo_facts["InceptionV3"]["layers"] if layer["is_conv"]]
    # Keras' names of InceptionV3 built alone: conv2d, conv2d_1, ..., conv2d_93, each read
    # after its own activation of the same number (the graph calls them in another order).
    names = {layer["name"]: layer["read_at"] for layer in conv}
    assert names == {
        "conv2d": "activation",
        **{f"conv2d_{i}": f"activation_{i}" for i in range(1, 94)},
    }


def test_facts_do_not_depend_on_what_was_built_before(zoo_facts):
    """InceptionV3 built first in a fresh process and then after other models here has
    the facts the build (after InceptionResNetV2 and the users' models) planned with."""
    code = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from test_zoo import digest, facts_of\n"
        "print(digest(facts_of('InceptionV3')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == digest(zoo_facts["InceptionV3"])
    for application in ("InceptionV3", "MobileNetV3Small", "ConvNeXtTiny"):
        assert digest(facts_of(application)) == digest(zoo_facts[application]), application


def test_a_user_model_gets_the_costly_views_it_asks_for(site):
    """The zoo renders negative and diversity pictures and deletion/insertion curves for
    the one model whose own render block asks for them (the others leave them out)."""
    units = sorted((site / "models" / "ops-nested" / "layers").glob("*/units/0.html"))
    pages = [page.read_text(encoding="utf-8") for page in units]
    assert pages and all('class="negative"' in page for page in pages)
    model_page = (site / "models" / "ops-nested" / "index.html").read_text(encoding="utf-8")
    assert re.search(r"on 1 photos?", model_page)
    application = sorted((site / "models" / "vgg16" / "layers").glob("*/units/0.html"))
    assert application and 'class="negative"' not in application[0].read_text("utf-8")
