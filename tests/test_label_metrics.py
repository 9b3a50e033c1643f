"""Pets metrics and label spaces other than ImageNet: a breed classifier (37 outputs in
list.txt CLASS-ID order), a cat/dog classifier and a labels file; numbers by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from atlas.analysis.metrics import Confusion, Prediction, pets_metrics
from atlas.data.breeds import BreedMap, load_breeds, load_class_index
from atlas.errors import AtlasError
from atlas.model.labels import (
    breed_order,
    breeds_space,
    count_problem,
    file_space,
    label_space,
    normalise,
    species_space,
)

DATA = Path(__file__).resolve().parents[1] / "data"
LIST = DATA / "oxford-pets" / "annotations" / "list.txt"


@pytest.fixture(scope="module")
def breeds() -> BreedMap:
    return load_breeds(DATA / "breeds.json", load_class_index(DATA / "imagenet_class_index.json"))


@pytest.fixture(scope="module")
def order(breeds) -> list[str]:
    return breed_order(LIST, breeds)


def test_breed_order_is_list_txt_class_id_order(order, breeds):
    # list.txt numbers the breeds alphabetically, ignoring case: CLASS-ID 1 is Abyssinian.
    assert order == sorted(breeds.breeds, key=str.lower)
    assert (len(order), order[0], order[1], order[-1]) == (
        37,
        "Abyssinian",
        "american_bulldog",
        "yorkshire_terrier",
    )
    space = breeds_space(order, breeds)
    assert space.labels[:2] == ("Abyssinian", "American Bulldog")
    assert space.class_species[:2] == ("cat", "dog") and space.is_breed_classifier


def test_breed_order_refuses_a_gap_in_class_ids(tmp_path, breeds):
    lines = LIST.read_text().splitlines()
    kept = [line for line in lines if line.startswith("#") or line.split()[1] != "2"]
    (tmp_path / "list.txt").write_text("\n".join(kept))
    with pytest.raises(AtlasError, match="no image has CLASS-ID 2"):
        breed_order(tmp_path / "list.txt", breeds)


def predict(image: str, breed: str, species: str, *top: int) -> Prediction:
    return Prediction(image, breed, species, top, tuple(0.5 / (i + 1) for i in range(len(top))))


def test_breed_classifier_precision_recall_and_matrix(order, breeds):
    space = breeds_space(order, breeds)
    aby, bulldog, pug, persian = (
        order.index(k) for k in ("Abyssinian", "american_bulldog", "pug", "Persian")
    )
    predictions = [
        predict("Abyssinian_1", "Abyssinian", "cat", aby, pug),  # right
        predict("Abyssinian_2", "Abyssinian", "cat", persian, aby),  # top-5; cat
        predict("Abyssinian_3", "Abyssinian", "cat", pug, bulldog),  # wrong; dog
        predict("pug_1", "pug", "dog", pug, aby),  # right
        predict("pug_2", "pug", "dog", aby, persian),  # wrong; cat
        predict("american_bulldog_1", "american_bulldog", "dog", pug, aby),  # wrong; dog
    ]
    metrics = pets_metrics(predictions, space, breeds)
    assert (metrics.n_images, metrics.n_mapped) == (6, 6)  # every breed has its output
    assert metrics.top1 == pytest.approx(2 / 6)
    assert metrics.top5 == pytest.approx(3 / 6)  # + Abyssinian_2
    assert metrics.species_accuracy == pytest.approx(4 / 6)  # not Abyssinian_3, pug_2
    by_key = {b.breed: b for b in metrics.breeds}
    # recall = top-1 per true breed; precision = right / given as top-1
    assert (by_key["Abyssinian"].top1, by_key["Abyssinian"].precision) == (
        pytest.approx(1 / 3),
        pytest.approx(1 / 2),
    )  # given to Abyssinian_1 and pug_2
    assert (by_key["pug"].top1, by_key["pug"].precision) == (
        pytest.approx(1 / 2),
        pytest.approx(1 / 3),
    )  # given to pug_1, Abyssinian_3, bulldog_1
    assert (by_key["american_bulldog"].top1, by_key["american_bulldog"].precision) == (0.0, None)
    assert metrics.matrix_breeds == tuple(order)
    expected = [[0] * 37 for _ in range(37)]
    for true, predicted in [
        (aby, aby),
        (aby, persian),
        (aby, pug),
        (pug, pug),
        (pug, aby),
        (bulldog, pug),
    ]:
        expected[true][predicted] += 1
    assert [list(row) for row in metrics.matrix] == expected
    assert metrics.confusions == (
        Confusion("Abyssinian", persian, "Persian", 1),
        Confusion("Abyssinian", pug, "Pug", 1),
        Confusion("american_bulldog", pug, "Pug", 1),
        Confusion("pug", aby, "Abyssinian", 1),
    )


def test_breed_classifier_top5_counts_the_breeds_own_output_only(order, breeds):
    space = breeds_space(order, breeds)
    pug = order.index("pug")
    right = predict("pug_1", "pug", "dog", 0, 1, 2, 3, pug)
    late = predict("pug_2", "pug", "dog", 0, 1, 2, 3, 4, pug)  # sixth: not in the top 5
    metrics = pets_metrics([right, late], space, breeds)
    assert (metrics.top1, metrics.top5) == (0.0, 0.5)


def test_species_classifier_has_species_accuracy_only(breeds):
    space = species_space()
    cat, dog = 0, 1
    predictions = [
        predict("Abyssinian_1", "Abyssinian", "cat", cat, dog),
        predict("Persian_1", "Persian", "cat", dog, cat),
        predict("pug_1", "pug", "dog", dog, cat),
        predict("pug_2", "pug", "dog", dog, cat),
    ]
    metrics = pets_metrics(predictions, space, breeds)
    assert (metrics.n_mapped, metrics.top1, metrics.top5) == (0, None, None)
    assert metrics.species_accuracy == pytest.approx(3 / 4)
    assert metrics.matrix == () and metrics.confusions == ()
    by_key = {b.breed: b for b in metrics.breeds}
    assert not by_key["pug"].mapped and by_key["pug"].species_accuracy == 1.0
    assert by_key["Persian"].misclassified == ("Persian_1",)
    assert [c.label for c in by_key["Persian"].most_predicted] == ["dog"]
    # The second Grad-CAM map of a species classifier is the true species' output.
    assert (space.true_class("pug", "dog"), space.true_class("Bengal", "cat")) == (dog, cat)


def write_labels(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("line", "breed", "species"),
    [
        ("Abyssinian", "Abyssinian", "cat"),
        ("ABYSSINIAN", "Abyssinian", "cat"),
        ("american bulldog", "american_bulldog", "dog"),
        ("American_Pit_Bull_Terrier", "american_pit_bull_terrier", "dog"),
        ("  Basset   Hound ", "basset_hound", "dog"),
        ("egyptian mau", "Egyptian_Mau", "cat"),
        ("Cat", None, "cat"),
        ("DOG", None, "dog"),
        ("raccoon", None, None),
        ("pugs", None, None),
    ],
)
def test_labels_file_lines_match_breeds_and_species(tmp_path, order, breeds, line, breed, species):
    space = file_space(write_labels(tmp_path, ["raccoon", line]), order, breeds)
    assert space.labels == ("raccoon", line.strip())
    assert space.class_breeds[1] == (frozenset({breed}) if breed else frozenset())
    assert space.species_of(1) == species


def test_labels_file_metrics(tmp_path, order, breeds):
    space = file_space(
        write_labels(tmp_path, ["PUG", "beagle", "Persian", "raccoon"]), order, breeds
    )
    assert not space.is_breed_classifier  # raccoon is no breed
    predictions = [
        predict("pug_1", "pug", "dog", 0, 1),  # right
        predict("pug_2", "pug", "dog", 3, 0),  # top-5; raccoon: no species
        predict("Persian_1", "Persian", "cat", 1, 0),  # wrong; dog
        predict("Bengal_1", "Bengal", "cat", 2, 0),  # no class for Bengal; Persian is a cat
    ]
    metrics = pets_metrics(predictions, space, breeds)
    assert (metrics.n_images, metrics.n_mapped) == (4, 3)
    assert metrics.top1 == pytest.approx(1 / 3) and metrics.top5 == pytest.approx(2 / 3)
    assert metrics.species_accuracy == pytest.approx(2 / 4)  # pug_1, Bengal_1
    assert metrics.matrix == ()
    assert {c.label for c in metrics.confusions} == {"raccoon", "beagle"}
    assert space.true_class("Persian", "cat") == 2 and space.true_class("Bengal", "cat") == -1


@pytest.mark.parametrize(
    ("lines", "needle"),
    [([], "it is empty"), (["pug", "", "beagle"], "line 2 is blank"), (["", ""], "it is empty")],
)
def test_bad_labels_files(tmp_path, order, breeds, lines, needle):
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(AtlasError, match=needle) as caught:
        file_space(path, order, breeds)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("classes", "outputs", "kind", "problem"),
    [
        (None, 1000, "imagenet", None),
        ("imagenet", 1000, "imagenet", None),
        (None, 37, None, "has 37 outputs, not ImageNet's 1000"),
        ("breeds", 37, "breeds", None),
        ("breeds", 2, "breeds", "has 2 outputs but classes"),
        ("species", 2, "species", None),
        ("species", 37, "species", "has 37 outputs but classes (species (cat, dog)) gives 2"),
        ("breeds", 1000, "breeds", "has 1000 outputs but classes"),
        ("none", 37, None, None),
        ("breeds", None, None, "no classification head"),
        (None, None, None, None),
    ],
)
def test_label_space_and_count_problems(order, breeds, classes, outputs, kind, problem):
    space = label_space(classes, outputs, breeds, LIST)
    assert (space.kind if space else None) == kind
    found = count_problem("m", classes, outputs, space)
    if problem is None:
        assert found is None
    else:
        assert found.startswith("model 'm'") and problem in found and "\n" not in found


def test_normalise():
    assert normalise("  Great__Pyrenees ") == normalise("great pyrenees") == "great_pyrenees"
