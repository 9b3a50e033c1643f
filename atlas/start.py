"""``atlas new DIR --model my.keras --photos my_photos/``: a project for your own model on
your own photos.

The config it writes names the model file and the photo folder (relative to the project
where they can be), the layout the folder was detected in, and ``classes: dataset`` when
the model has as many outputs as the folder has classes; otherwise the line that says
what to set instead. The model is loaded once to count its outputs (so TensorFlow starts).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import yaml

from atlas.config.settings import SHIPPED_CLASS_INDEX, ModelConfig, RenderSettings
from atlas.data import layouts
from atlas.errors import ConfigError
from atlas.project.new import Scaffold, new_project

log = logging.getLogger(__name__)

DEFAULT_MODEL = "atlas:data/models/mobilenet_2_5_128_tf.h5"  # with --photos alone


def new_own_project(
    folder: Path, photos: Path, model: Path | None = None, force: bool = False
) -> tuple[Scaffold, str | None]:
    """Write a project for ``model`` (a ``.keras`` file; None: the embedded ImageNet
    MobileNet) on the photos in ``photos``.

    Returns:
        What was written, and the advice for ``models[0].classes`` (None when the
        outputs are the dataset's classes or the model is ImageNet's).

    Raises:
        ConfigError: (exit 2) the photos folder or the model file does not exist, or the
            folder is not empty without ``force``.
    """
    folder, photos = Path(folder), Path(photos)
    if not photos.is_dir():
        raise ConfigError([("--photos", f"{photos}: no such folder of photos")])
    if model is not None and (not Path(model).is_file() or Path(model).suffix != ".keras"):
        raise ConfigError([("--model", f"{model}: expected an existing .keras model file")])
    layout, classes = _survey(photos)
    entry, advice = _model_entry(model, len(classes), layout)
    data = {
        "site": {"title": f"atlas: {entry['title']} on {photos.resolve().name}"},
        "dataset": {"name": photos.resolve().name, "images": _relative(photos, folder)},
        "models": [entry],
    }
    if layout != "flat":
        data["dataset"]["layout"] = layout
    text = _header(model, photos, layout, classes) + yaml.safe_dump(data, sort_keys=False)
    made = new_project(folder, force=force, config_text=text)
    return made, advice


def _survey(photos: Path) -> tuple[str, tuple[str, ...]]:
    """The folder's layout and classes (none for a flat folder)."""
    from atlas.data.scan import image_extensions

    extensions = image_extensions()
    layout = layouts.detect(photos.resolve(), None, extensions, frozenset())
    if layout == "folders":
        return layout, layouts.list_folders(photos.resolve(), extensions).classes
    if layout == "metadata":
        return layout, layouts.list_metadata(photos.resolve()).classes
    return layout, ()


def _model_entry(model: Path | None, classes: int, layout: str) -> tuple[dict, str | None]:
    if model is None:
        entry = {
            "id": "mobilenet",
            "title": "MobileNet (ImageNet)",
            "application": "MobileNet",
            "options": {"alpha": 0.25, "input_shape": [128, 128, 3]},
            "weights": DEFAULT_MODEL,
        }
        return entry, None
    path = Path(model).resolve()
    model_id = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-.") or "model"
    entry = {"id": model_id[:64], "title": path.stem, "file": str(path)}
    outputs = _outputs(path, model_id)
    if outputs is None:
        return entry, None  # a feature extractor: no classes to name
    if classes and outputs == classes:
        entry["classes"] = "dataset"
        return entry, None
    if layout == "flat":
        advice = (
            f"the model has {outputs} outputs and the photos have no labels: set "
            "models[0].classes to a labels file (one label per output, in output order) to "
            "name its predictions"
        )
    else:
        advice = (
            f"the model has {outputs} outputs but the photos have {classes} classes: set "
            "models[0].classes to a labels file (one label per output), or none"
        )
    entry["classes"] = "none"
    return entry, advice


def _outputs(path: Path, model_id: str) -> int | None:
    """The number of classes of a model file, as atlas reads them (2 for a binary head)."""
    from atlas.render.load import load_model

    config = ModelConfig(
        id=model_id,
        title=model_id,
        application=None,
        file=path,
        options={},
        weights="none",
        sha256=None,
        layers=None,
        notes=None,
        render=RenderSettings(),
    )
    return load_model(config).graph.classes


def _relative(path: Path, folder: Path) -> str:
    """``path`` as the config writes it: relative to the project when it can be."""
    try:
        return os.path.relpath(path.resolve(), folder.resolve())
    except ValueError:  # another drive
        return str(path.resolve())


def _header(model: Path | None, photos: Path, layout: str, classes: tuple[str, ...]) -> str:
    found = f"{layout} layout" + (f", {len(classes)} classes" if classes else "")
    return (
        f"# atlas site configuration, made by `atlas new --photos {photos}"
        + (f" --model {model}" if model else "")
        + f"`.\n# The photos were read in the {found}. Every key is documented in\n"
        '# atlas\'s README ("Configuration"); `atlas build` renders it. The ImageNet class\n'
        f"# index is atlas's own ({SHIPPED_CLASS_INDEX}).\n"
    )
