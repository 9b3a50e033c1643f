"""The search index and the confusion pages, on a fake model and on the small site."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace as NS

import pytest
from sitecheck import REPO, small_site

from atlas.site.search import INDEX_PATH, build_index, index_script


def _read_index(site: Path) -> dict:
    text = (site / INDEX_PATH).read_text(encoding="utf-8")
    assert text.startswith("window.ATLAS_SEARCH=") and text.endswith(";\n")
    return json.loads(text[len("window.ATLAS_SEARCH=") : -2])


def _fake_model() -> NS:
    images = [
        NS(name="pug_1", breed_title="Pug", detailed=True, path="models/m/images/pug_1.html"),
        NS(name="pug_2", breed_title="Pug", detailed=False, path="models/m/images/pug_2.html"),
        NS(
            name="Bengal_3",
            breed_title="Bengal",
            detailed=True,
            path="models/m/images/Bengal_3.html",
        ),
    ]
    units = [
        NS(index=7, exemplars=({"image": "pug_2"}, {"image": "pug_1"}, {"image": "Bengal_3"})),
        NS(index=9, exemplars=()),
    ]
    layer = NS(name="conv1", path="models/m/layers/conv1/index.html", units=units)
    return NS(
        id="m",
        title="M",
        path="models/m/index.html",
        layers=[layer],
        images=images,
        has_classes=True,
        space=NS(labels=("pug", "tabby</script>")),
        metrics=NS(top1=None),  # it has labelled photos, so an accuracy page
        atlases=[NS(layer="conv1", path="models/m/atlas/conv1.html")],
    )


def test_index_lists_units_by_layer_with_their_photos_breeds():
    # units without a class selectivity (render.unit_views without it) fall back to the
    # breeds of their most exciting photos
    index = build_index([_fake_model()])
    breeds = index["labels"]
    [[model, name, path, units]] = index["layers"]
    assert (model, name, path) == (0, "conv1", "models/m/layers/conv1/index.html")
    # unit 7's strongest photos are two pugs then a Bengal: each breed once, in that order
    assert [[u[0], *(breeds[b] for b in u[1:])] for u in units] == [[7, "Pug", "Bengal"], [9]]
    photos = {p[0]: (breeds[p[1]], p[2]) for p in index["photos"]}
    assert photos["pug_1"] == ("Pug", [[0, "models/m/images/pug_1.html"]])
    assert photos["pug_2"] == ("Pug", [[0, None]])  # no page: the predictions table has it
    assert index["classes"] == [[0, ["pug", "tabby</script>"]]]
    assert index["atlases"] == [[0, "conv1", "models/m/atlas/conv1.html"]]
    script = index_script([_fake_model()])
    assert "<" not in script
    assert json.loads(script[len("window.ATLAS_SEARCH=") : -2]) == index  # same strings


def _breed(name: str) -> str:
    """The Oxford pets breed title of a photo, from its file name (``great_pyrenees_12``)
    and the breeds file."""
    breeds = json.loads((REPO / "data" / "breeds.json").read_text(encoding="utf-8"))
    return breeds["breeds"][name.rsplit("_", 1)[0]]["title"]


@pytest.mark.slow
def test_small_site_index_points_at_real_pages(tmp_path_factory):
    site = small_site(tmp_path_factory)
    index = _read_index(site)
    assert (site / INDEX_PATH).stat().st_size < 1_000_000
    assert [m[0] for m in index["models"]] == ["mobilenet"]
    assert len(index["classes"][0][1]) == 1000  # MobileNet's ImageNet labels
    units = 0
    for _, _, path, layer_units in index["layers"]:
        assert (site / path).is_file(), path
        for unit, *breeds in layer_units:
            page = site / path.replace("index.html", f"units/{unit}.html")
            html = page.read_text(encoding="utf-8")
            # the breeds the unit prefers (its class selectivity table), top first
            table = html.split('class="classes-preferred"', 1)[1].split("</table>", 1)[0]
            wanted = re.findall(r"<tr><td>([^<]+)</td>", table)[:3]
            assert wanted and [index["labels"][b] for b in breeds] == wanted, page
            units += 1
    assert units == len(list(site.glob("models/mobilenet/layers/*/units/*.html")))
    for name, breed, places in index["photos"]:
        assert index["labels"][breed] == _breed(name)
        for _, path in places:
            assert path is None or (site / path).is_file(), path
    detailed = {p[0] for p in index["photos"] if p[2][0][1]}
    assert detailed == {p.stem for p in site.glob("models/mobilenet/images/*.html")}
    # the small site's activation atlases (conv1, conv_pw_1): one entry per atlas page
    atlases = sorted(site.glob("models/mobilenet/atlas/*.html"))
    assert atlases and sorted(site / path for _, _, path in index["atlases"]) == atlases


def _map_sources(html: str, figure: str) -> list[str]:
    return re.findall(rf'<figure class="{figure}">.*?<img class="map" src="([^"]+)"', html)


@pytest.mark.slow
def test_top_confusion_has_a_page_with_both_classes_maps(tmp_path_factory):
    site = small_site(tmp_path_factory)
    model = site / "models" / "mobilenet"
    accuracy = (model / "accuracy.html").read_text(encoding="utf-8")
    table = accuracy.split('id="confusions"', 1)[1]
    rows = re.findall(
        r"<tr><td>([^<]+)</td><td>([^<]+)</td><td class=\"num\">(.*?)</td>"
        r"<td>(.*?)</td></tr>",
        table,
    )
    # only detailed photos have maps (and pages): the first row with a linked photo is the
    # most frequent pair that can be shown, and it (only it, of those before it) has a page
    first = next(i for i, row in enumerate(rows) if 'href="images/' in row[3])
    assert not any("confusions/" in row[2] for row in rows[:first])
    breed, label, count, photos = rows[first]
    link = re.search(r'href="(confusions/[^"]+\.html)"', count)
    assert link, "the top mapped pair links its confusion page"
    page = model / link.group(1)
    html = page.read_text(encoding="utf-8")
    assert f"{breed} taken for {label}" in html
    chosen = re.search(r'<option value="([^"]+)" selected>', html).group(1)
    assert chosen == "conv_preds"  # the deepest layer with maps
    shown = re.findall(r'<h2><a href="(\.\./images/[^"]+\.html)">', html)
    # the same detailed photos as the accuracy page's row links
    assert [s.removeprefix("../") for s in shown] == re.findall(r'href="(images/[^"]+)"', photos)
    for image_link in shown:
        image = (page.parent / image_link).resolve()
        image_html = image.read_text(encoding="utf-8")
        section = image_html.split(f'data-name="{chosen}"', 1)[1].split("</section>", 1)[0]
        # the image page's maps at that layer: top-1 (predicted) first, then the true label's
        top1, true = re.findall(r'<img class="map" src="\.\./\.\./\.\./([^"]+)"', section)
        block = html.split(f'href="{image_link}"', 1)[1].split("</section>", 1)[0]
        row = block.split(f'data-layer="{chosen}"', 1)[1].split('data-layer="', 1)[0]
        assert _map_sources(row, "true-class") == [f"../../../{true}"]
        assert _map_sources(row, "predicted-class") == [f"../../../{top1}"]
        assert (site / true).is_file() and (site / top1).is_file()
