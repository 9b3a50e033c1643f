"""CAM scores: localisation against trimaps and deletion/insertion, on hand-made cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atlas.analysis import scores
from atlas.data import masks as trimaps
from atlas.data.scan import DatasetImage
from atlas.plan import select

PET, BACK, EDGE = scores.PET, scores.BACKGROUND, scores.BORDER


def test_energy_share_counts_the_border_at_half_and_the_peak_for_pointing():
    trimap = np.array([[PET, PET, EDGE, BACK]] * 4, np.uint8)
    on_pet = np.array([[1.0, 1.0, 0.0, 0.0]] * 4)
    assert scores.localisation(on_pet, trimap) == (pytest.approx(1.0), True)
    # 2 on the pet, 1 on the border (counted 1/2), 1 on the background: 2.5 / 4
    even = np.ones((4, 4))
    share, _ = scores.localisation(even, trimap)
    assert share == pytest.approx(2.5 / 4)
    off = np.array([[0.0, 0.0, 0.0, 1.0]] * 4)
    assert scores.localisation(off, trimap) == (pytest.approx(0.0), False)
    border_peak = np.array([[0.0, 0.1, 1.0, 0.2]] * 4)
    assert scores.localisation(border_peak, trimap)[1] is True
    with pytest.raises(ValueError, match="empty map"):  # undefined, not a score of 0
        scores.localisation(np.zeros((2, 2)), trimap)
    weight = scores.pet_weight(trimap)  # given once per photo: the same numbers
    assert scores.localisation(even, trimap, weight) == scores.localisation(even, trimap)


def test_a_coarse_map_is_stretched_over_the_whole_photo():
    trimap = np.full((40, 60), BACK, np.uint8)
    trimap[:, :30] = PET  # the left half of a wide photo
    cam = np.array([[1.0, 0.0], [1.0, 0.0]])  # a 2x2 map: the left column lights up
    share, hit = scores.localisation(cam, trimap)
    assert hit and 0.7 < share < 1.0  # bilinear spill over the middle, most of it left


def test_area_under_equal_steps():
    assert scores.area_under([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert scores.area_under([1.0, 0.0]) == pytest.approx(0.5)
    assert scores.area_under([0.0, 0.5, 1.0, 1.0]) == pytest.approx((0.25 + 0.75 + 1.0) / 3)


def test_summary_means_counts_and_best_cells():
    records = [
        {"energy": {"gradcam": [0.2, 0.8]}, "pointing": {"gradcam": [0, 1]}},
        {
            "energy": {"gradcam": [0.4, 0.6]},
            "pointing": {"gradcam": [1, 1]},
            "deletion": {"gradcam": [0.3, 0.1]},
            "insertion": {"gradcam": [0.5, 0.7]},
        },
    ]
    table = scores.summarise(records, 2, ["gradcam"])
    assert table["energy"]["gradcam"] == [(pytest.approx(0.3), 2), (pytest.approx(0.7), 2)]
    assert table["pointing"]["gradcam"][0] == (pytest.approx(0.5), 2)
    assert table["deletion"]["gradcam"] == [(pytest.approx(0.3), 1), (pytest.approx(0.1), 1)]
    assert scores.best_cells(table, "deletion") == {("gradcam", 1)}  # lower is better
    assert scores.best_cells(table, "energy") == {("gradcam", 1)}
    view = scores.score_view(records, ["a", "b"], ["gradcam"], detailed=5)
    assert (view["trimaps"], view["without_trimap"], view["faithful"]) == (2, 3, 1)
    assert view["chart"].startswith("<svg") and "polyline" in view["chart"]


def _image(name: str, breed: str) -> DatasetImage:
    return DatasetImage(name, Path(f"{name}.jpg"), name, breed, "dog", None, True, 10, 10)


def test_faithfulness_photos_go_round_the_breeds_trimaps_first():
    images = [
        _image(n, b) for n, b in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c")]
    ]
    trimaps = {"a2": Path("a2.png"), "b1": Path("b1.png")}
    assert select.faithfulness_images(images, trimaps, 4) == ["a2", "b1", "c1", "a1"]
    assert select.faithfulness_images(images, trimaps, 0) == []
    assert len(select.faithfulness_images(images, trimaps, 99)) == 5


def test_find_trimaps_beside_the_list(tmp_path):
    folder = tmp_path / "annotations" / "trimaps"
    folder.mkdir(parents=True)
    (folder / "pug_1.png").write_bytes(b"x")
    (folder / "._pug_2.png").write_bytes(b"x")  # the archive's macOS companions: not a trimap
    found = trimaps.find_trimaps(tmp_path / "annotations" / "list.txt", ["pug_1", "pug_2"])
    assert found == {"pug_1": folder / "pug_1.png"}
    assert trimaps.find_trimaps(None, ["pug_1"]) == {}


@pytest.mark.slow
def test_the_model_page_shows_the_scores_of_every_layer_and_method(tmp_path, project_factory):
    """A tiny build with trimaps for 2 of its 4 photos and curves for 1 photo."""
    import yaml
    from PIL import Image

    from atlas.build import BuildOptions, build

    config = project_factory(tmp_path / "p", images=4, render={"faithfulness_photos": 1})
    annotations = tmp_path / "p" / "annotations"
    (annotations / "trimaps").mkdir(parents=True)
    (annotations / "list.txt").write_text("")
    photos = sorted((tmp_path / "p" / "images").glob("*.jpg"))
    for photo in photos[:2]:
        width, height = Image.open(photo).size
        trimap = np.full((height, width), BACK, np.uint8)
        trimap[: height // 2] = PET
        Image.fromarray(trimap).save(annotations / "trimaps" / f"{photo.stem}.png")
    data = yaml.safe_load(config.read_text())
    data["dataset"]["annotations"] = "annotations/list.txt"
    config.write_text(yaml.safe_dump(data))
    report = build(config, BuildOptions(progress=False, max_steps=2))
    assert report.rendered["scores"] == 2  # the curve photo is one of the trimap photos
    page = (report.output / "models" / "tiny" / "index.html").read_text()
    assert "2 photos have a trimap; 2 without one are left out" in page
    assert "in 16 steps" in page and "on 1 photos" in page
    for title in ("Grad-CAM", "Grad-CAM++", "LayerCAM", "Score-CAM"):
        assert f'<th colspan="4">{title}</th>' in page
    for layer in ("conv", "depthwise", "separable"):
        assert f"<tr><td>{layer}</td>" in page
    assert page.count("★") >= 4  # at least one best cell per metric


@pytest.mark.slow
def test_scores_without_score_cam(tmp_path, project_factory):
    """``scorecam_channels: 0`` leaves Score-CAM out of the maps and so out of the scores
    (the scores job read a Score-CAM map that was never drawn: a traceback)."""
    from atlas.build import BuildOptions, build

    list_txt = Path(__file__).resolve().parents[1] / "data/oxford-pets/annotations/list.txt"
    config = project_factory(
        tmp_path / "p",
        images=1,
        render={"faithfulness_photos": 1, "scorecam_channels": 0},
        dataset={"annotations": str(list_txt)},
    )
    report = build(config, BuildOptions(progress=False, max_steps=2))
    assert report.rendered["scores"] == 1
    page = (report.output / "models" / "tiny" / "index.html").read_text()
    assert '<th colspan="4">LayerCAM</th>' in page and "Score-CAM" not in page


def test_empty_maps_are_counted_among_each_metrics_own_photos():
    """An empty map's scores are None: left out of the mean and counted, per metric, among
    the photos that metric was scored on (not among every photo)."""
    located = {"energy": {"gradcam": [None, 0.5]}, "pointing": {"gradcam": [None, 1]}}
    faithful = {"deletion": {"gradcam": [0.2, None]}, "insertion": {"gradcam": [0.6, None]}}
    entries = [located, dict(located), faithful]
    table = scores.summarise(entries, 2, ["gradcam"])
    empty = scores.empty_counts(entries, 2, ["gradcam"])
    assert table["energy"]["gradcam"] == [(None, 0), (0.5, 2)]
    assert empty["energy"]["gradcam"] == [2, 0]
    assert table["deletion"]["gradcam"] == [(pytest.approx(0.2), 1), (None, 0)]
    assert empty["deletion"]["gradcam"] == [0, 1]
