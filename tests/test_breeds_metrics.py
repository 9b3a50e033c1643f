"""Tests for atlas.data.breeds (the shipped mapping) and atlas.analysis.metrics
(hand-computed cases)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from atlas.analysis.metrics import (
    ClassCount,
    Confusion,
    Prediction,
    is_breed_correct,
    is_species_correct,
    pets_metrics,
)
from atlas.data.breeds import BreedMap, load_breeds, load_class_index
from atlas.data.oxford import read_annotation_list
from atlas.errors import AtlasError
from atlas.model.labels import (
    imagenet_space,
)

DATA = Path(__file__).resolve().parents[1] / "data"
CLASS_INDEX = DATA / "imagenet_class_index.json"
BREEDS = DATA / "breeds.json"

PUG, BEAGLE, TABBY, TIGER_CAT, PERSIAN_CAT, LION, TIGER = 254, 162, 281, 282, 283, 291, 292


@pytest.fixture(scope="module")
def classes() -> list[tuple[str, str]]:
    return load_class_index(CLASS_INDEX)


@pytest.fixture(scope="module")
def breeds(classes: list[tuple[str, str]]) -> BreedMap:
    return load_breeds(BREEDS, classes)


def test_class_index(classes: list[tuple[str, str]]) -> None:
    assert len(classes) == 1000
    assert classes[0] == ("n01440764", "tench")
    assert classes[PUG] == ("n02110958", "pug")


def test_mapping_covers_the_dataset_breeds(breeds: BreedMap) -> None:
    annotations = read_annotation_list(DATA / "oxford-pets" / "annotations" / "list.txt")
    species_of = {a.breed: a.species for a in annotations.values()}
    assert set(breeds.breeds) == set(species_of)
    for key, breed in breeds.breeds.items():
        assert breed.species == species_of[key], key
        assert breed.title and breed.note, key
        assert len(breed.wnids) == len(breed.class_indices)


def test_mapping_wnids_exist_and_have_the_breed_species(
    breeds: BreedMap, classes: list[tuple[str, str]]
) -> None:
    wnids = {wnid for wnid, _ in classes}
    for breed in breeds.breeds.values():
        for wnid, index in zip(breed.wnids, breed.class_indices, strict=True):
            assert wnid in wnids and classes[index][0] == wnid
            assert breeds.species_of_class(index) == breed.species, breed.key


@pytest.mark.parametrize(
    ("key", "labels"),
    [
        ("pug", ["pug"]),
        ("Persian", ["Persian_cat"]),
        ("Siamese", ["Siamese_cat"]),
        ("Egyptian_Mau", ["Egyptian_cat"]),
        ("american_pit_bull_terrier", ["American_Staffordshire_terrier"]),
        ("staffordshire_bull_terrier", ["Staffordshire_bullterrier"]),
        ("wheaten_terrier", ["soft-coated_wheaten_terrier"]),
        ("japanese_chin", ["Japanese_spaniel"]),
        ("scottish_terrier", ["Scotch_terrier"]),
        ("english_cocker_spaniel", ["cocker_spaniel"]),
        ("Bengal", []),
        ("Sphynx", []),
        ("shiba_inu", []),
        ("american_bulldog", []),
    ],
)
def test_mapping_judgment_calls(
    breeds: BreedMap, classes: list[tuple[str, str]], key: str, labels: list[str]
) -> None:
    assert [classes[index][1] for index in breeds.breeds[key].class_indices] == labels


def test_species_classes(breeds: BreedMap) -> None:
    assert breeds.species_classes["cat"] == frozenset(range(281, 286))
    assert breeds.species_classes["dog"] == frozenset(range(151, 269))
    assert breeds.species_of_class(LION) is None
    assert breeds.species_of_class(269) is None  # timber wolf
    assert breeds.label(PERSIAN_CAT) == "Persian cat"


def _broken(tmp_path: Path, change) -> Path:
    raw = json.loads(BREEDS.read_text())
    change(raw)
    path = tmp_path / "breeds.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda raw: raw["breeds"]["pug"].update(imagenet=["n99999999"]), "breeds.pug.imagenet"),
        (lambda raw: raw["breeds"]["beagle"].pop("title"), "breeds.beagle: missing field"),
        (lambda raw: raw["breeds"]["Persian"].update(imagenet=["n02110958"]), "cat classes"),
        (lambda raw: raw["breeds"]["boxer"].update(species="ferret"), "breeds.boxer.species"),
        (lambda raw: raw["breeds"]["boxer"].update(colour="fawn"), "unknown field 'colour'"),
        (lambda raw: raw["species_classes"].pop("dog"), "species_classes.dog"),
    ],
)
def test_invalid_mapping(tmp_path: Path, classes, change, needle: str) -> None:
    path = _broken(tmp_path, change)
    with pytest.raises(AtlasError) as caught:
        load_breeds(path, classes)
    assert str(path) in str(caught.value) and needle in str(caught.value)


def test_all_mapping_problems_reported_together(tmp_path: Path, classes) -> None:
    def change(raw: dict) -> None:
        raw["breeds"]["pug"]["imagenet"] = ["n0"]
        del raw["breeds"]["beagle"]["note"]

    with pytest.raises(AtlasError, match="2 problem") as caught:
        load_breeds(_broken(tmp_path, change), classes)
    assert "breeds.pug" in str(caught.value) and "breeds.beagle" in str(caught.value)


def test_invalid_class_index(tmp_path: Path) -> None:
    raw = json.loads(CLASS_INDEX.read_text())
    short = copy.deepcopy(raw)
    del short["999"]
    (tmp_path / "short.json").write_text(json.dumps(short))
    with pytest.raises(AtlasError, match="1000 entries"):
        load_class_index(tmp_path / "short.json")
    raw["7"] = "cock"
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(AtlasError, match='entry "7"'):
        load_class_index(tmp_path / "bad.json")
    (tmp_path / "nojson.json").write_text("{")
    with pytest.raises(AtlasError, match="not valid JSON"):
        load_class_index(tmp_path / "nojson.json")


def _prediction(image: str, breed: str, species: str, *top: int) -> Prediction:
    padded = tuple(top) + tuple(index for index in range(5) if index not in top)
    return Prediction(image, breed, species, padded[:5], (0.5, 0.2, 0.1, 0.1, 0.05))


HAND_MADE = [
    _prediction("pug_1", "pug", "dog", PUG, BEAGLE),  # right
    _prediction("pug_2", "pug", "dog", BEAGLE, PUG),  # top-5 only; dog
    _prediction("pug_3", "pug", "dog", TABBY),  # wrong; a cat class
    _prediction("pug_4", "pug", "dog", BEAGLE),  # wrong; dog
    _prediction("Persian_1", "Persian", "cat", PERSIAN_CAT),  # right
    _prediction("Persian_2", "Persian", "cat", LION, PERSIAN_CAT),  # top-5 only; wild cat
    _prediction("Bengal_1", "Bengal", "cat", TIGER_CAT),  # unmapped; cat
    _prediction("Bengal_2", "Bengal", "cat", TIGER),  # unmapped; wild cat
]


def test_per_image_helpers(breeds: BreedMap) -> None:
    pug_2, bengal_1 = HAND_MADE[1], HAND_MADE[6]
    assert is_breed_correct(pug_2, imagenet_space(breeds), 1) is False
    assert is_breed_correct(pug_2, imagenet_space(breeds), 2) is True
    assert is_breed_correct(bengal_1, imagenet_space(breeds), 5) is None
    assert is_species_correct(pug_2, imagenet_space(breeds)) and is_species_correct(
        bengal_1, imagenet_space(breeds)
    )
    assert not is_species_correct(HAND_MADE[7], imagenet_space(breeds))
    with pytest.raises(ValueError):
        is_breed_correct(pug_2, imagenet_space(breeds), 6)


def test_metrics_on_hand_made_predictions(breeds: BreedMap) -> None:
    metrics = pets_metrics(HAND_MADE, imagenet_space(breeds), breeds)
    assert (metrics.n_images, metrics.n_mapped) == (8, 6)
    assert metrics.top1 == pytest.approx(2 / 6)  # pug_1, Persian_1
    assert metrics.top5 == pytest.approx(4 / 6)  # + pug_2, Persian_2
    assert metrics.species_accuracy == pytest.approx(5 / 8)  # all but pug_3, Persian_2, Bengal_2

    by_key = {breed.breed: breed for breed in metrics.breeds}
    assert [breed.breed for breed in metrics.breeds] == ["Bengal", "Persian", "pug"]
    pug = by_key["pug"]
    assert (pug.n, pug.mapped, pug.title) == (4, True, "Pug")
    assert (pug.top1, pug.top5, pug.species_accuracy) == (0.25, 0.5, 0.75)
    assert pug.most_predicted == (
        ClassCount(BEAGLE, "beagle", 2),
        ClassCount(PUG, "pug", 1),
        ClassCount(TABBY, "tabby", 1),
    )
    assert pug.misclassified == ("pug_2", "pug_3", "pug_4")
    persian = by_key["Persian"]
    assert (persian.top1, persian.top5, persian.species_accuracy) == (0.5, 1.0, 0.5)
    assert persian.misclassified == ("Persian_2",)
    bengal = by_key["Bengal"]
    assert (bengal.mapped, bengal.top1, bengal.top5, bengal.species_accuracy) == (
        False,
        None,
        None,
        0.5,
    )
    assert bengal.misclassified == ("Bengal_2",)  # species is all an unmapped breed can miss

    assert metrics.confusions == (
        Confusion("pug", BEAGLE, "beagle", 2),
        Confusion("Persian", LION, "lion", 1),
        Confusion("pug", TABBY, "tabby", 1),
    )


def test_metrics_to_dict_is_json(breeds: BreedMap) -> None:
    data = pets_metrics(HAND_MADE, imagenet_space(breeds), breeds).to_dict()
    again = json.loads(json.dumps(data))
    assert again == data
    assert data["confusions"][0] == {
        "breed": "pug",
        "predicted": BEAGLE,
        "label": "beagle",
        "count": 2,
    }
    assert data["breeds"][2]["most_predicted"][0]["index"] == BEAGLE


def test_unknown_breed_counts_for_species_only(breeds: BreedMap) -> None:
    odd = _prediction("unicorn_1", "unicorn", "dog", BEAGLE)
    metrics = pets_metrics([odd], imagenet_space(breeds), breeds)
    assert (metrics.n_mapped, metrics.top1, metrics.species_accuracy) == (0, None, 1.0)
    assert metrics.breeds[0].title == "Unicorn" and not metrics.breeds[0].mapped


def test_empty_and_short_predictions(breeds: BreedMap) -> None:
    empty = pets_metrics([], imagenet_space(breeds), breeds)
    assert (empty.n_images, empty.top1, empty.species_accuracy, empty.breeds) == (0, None, None, ())
    with pytest.raises(ValueError, match="top class"):
        Prediction("pug_1", "pug", "dog", (), ())
    two = Prediction("pug_1", "pug", "dog", (1, 0), (0.9, 0.1))  # a 2-class model
    assert is_breed_correct(two, imagenet_space(breeds), 5) is False
