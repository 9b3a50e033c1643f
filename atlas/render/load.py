"""Building the configured Keras models: applications by name, weights, user files.

Imports Keras (on the chosen backend): only the render stage of a build calls into this module.
"""

from __future__ import annotations

import importlib
import logging
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas.cache.keys import file_digest
from atlas.config.names import select_layers
from atlas.config.settings import ModelConfig
from atlas.errors import ModelError
from atlas.model.address import preprocess_affine
from atlas.render.engine import keras
from atlas.render.graph import FlatGraph, GraphError, flatten_model

log = logging.getLogger(__name__)

# application -> (keras.applications submodule holding preprocess_input, default input size)
APPLICATION_MODULES: dict[str, tuple[str, int]] = {
    "VGG16": ("vgg16", 224),
    "VGG19": ("vgg19", 224),
    "MobileNet": ("mobilenet", 224),
    "MobileNetV2": ("mobilenet_v2", 224),
    "MobileNetV3Small": ("mobilenet_v3", 224),
    "MobileNetV3Large": ("mobilenet_v3", 224),
    "DenseNet121": ("densenet", 224),
    "DenseNet169": ("densenet", 224),
    "DenseNet201": ("densenet", 224),
    "InceptionV3": ("inception_v3", 299),
    "InceptionResNetV2": ("inception_resnet_v2", 299),
    "Xception": ("xception", 299),
    "NASNetMobile": ("nasnet", 224),
    "NASNetLarge": ("nasnet", 331),
    "ResNet50": ("resnet", 224),
    "ResNet101": ("resnet", 224),
    "ResNet152": ("resnet", 224),
    "ResNet50V2": ("resnet_v2", 224),
    "ResNet101V2": ("resnet_v2", 224),
    "ResNet152V2": ("resnet_v2", 224),
    "EfficientNetB0": ("efficientnet", 224),
    "EfficientNetB1": ("efficientnet", 240),
    "EfficientNetB2": ("efficientnet", 260),
    "EfficientNetB3": ("efficientnet", 300),
    "EfficientNetV2B0": ("efficientnet_v2", 224),
    "ConvNeXtTiny": ("convnext", 224),
}
PREPROCESS_MODES = ("none", "tf", "caffe", "torch")
# What each submodule's preprocess_input computes, as an imagenet_utils mode: the content
# address of a unit folds it into one affine map (tests check each against the function).
MODULE_MODES: dict[str, str] = {
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet": "caffe",
    "densenet": "torch",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "xception": "tf",
    "nasnet": "tf",
    "resnet_v2": "tf",
    # these models rescale inside their own graph; preprocess_input passes pixels through
    "mobilenet_v3": "none",
    "efficientnet": "none",
    "efficientnet_v2": "none",
    "convnext": "none",
}


@dataclass
class LoadedModel:
    """A configured model ready for rendering.

    Attributes:
        config: the model's config entry.
        keras_model: the user's Keras model, exactly as loaded (atlas never changes it:
            its output may be probabilities). Class scores come from the flat graph:
            :meth:`logits_model` and :meth:`probabilities`.
        graph: the flattened graph: any layer's output as a model output.
        preprocess: raw RGB pixels in [0, 255] (float tensor) -> the model's input.
        input_size: (height, width) the images are resized to.
        random_weights: True when an application's weights are random (``weights: none``).
    """

    config: ModelConfig
    keras_model: keras.Model
    graph: FlatGraph
    preprocess: Callable
    input_size: tuple[int, int]
    random_weights: bool
    _free_graph: FlatGraph | None = None
    # Compiled unit renderers, kept for the model's life in this process: one trace per
    # model and method, however many tasks render its units.
    renderers: dict = field(default_factory=dict)

    def logits_model(self) -> keras.Model:
        """Input -> the class logits, whatever the model's head (atlas's own graph)."""
        return self.graph.logits_model()

    def probabilities(self, logits):
        """The class probabilities of these logits, as the model's head computes them
        (:meth:`FlatGraph.probabilities`): the only way atlas gets probabilities."""
        return self.graph.probabilities(logits)

    def feature_model(self, layer: str) -> keras.Model:
        """A model from the input to a conv layer's unit tensor, any image size if it can,
        for gradient ascent (:meth:`FlatGraph.ascent_model`).

        Filter visualization renders pictures smaller than the input (and the classic
        recipe grows them); a fully-convolutional model lets the picture be fed as is.
        """
        return self.features_model([layer])

    def features_model(self, layers: Sequence[str]) -> keras.Model:
        """One model from the input to the unit tensors of several conv layers (outputs in
        the order given, always a list), any image size if it can, for gradient ascent:
        one traced step serves all of their units (see
        :class:`atlas.render.filters.UnitRenderer`), and units read after an activation
        get the redirected gradient of :meth:`FlatGraph.ascent_model`."""
        facts = [self.graph.conv_facts(layer) for layer in layers]
        if self._free_graph is None:
            self._free_graph = flatten_model(
                self.keras_model, free_size=True, read_at=self.config.read_at
            )
        needed = [name for f in facts for name in (f.read_at, f.pre_activation) if name]
        if all(name in self._free_graph.tensors for name in needed):
            return self._free_graph.ascent_model(facts)
        return self.graph.ascent_model(facts)

    def unit_tensors(self, layers: Sequence[str]) -> list[str]:
        """The tensors the units of these conv layers are read at."""
        return [self.graph.unit_tensor(layer) for layer in layers]

    def conv_layers(self) -> list:
        names = [layer.name for layer in self.graph.conv_layers]
        chosen = set(select_layers(names, self.config.layers))
        return [layer for layer in self.graph.conv_layers if layer.name in chosen]


def preprocess_mode(config: ModelConfig) -> str:
    """The imagenet_utils mode of the model's preprocessing (``none`` for in-graph)."""
    if config.application is not None:
        return MODULE_MODES[APPLICATION_MODULES[config.application][0]]
    return config.options.get("preprocess", "none")


def _preprocess_for(config: ModelConfig) -> Callable:
    if config.application is not None:
        module = importlib.import_module(
            f"keras.applications.{APPLICATION_MODULES[config.application][0]}"
        )
        return module.preprocess_input
    mode = config.options.get("preprocess", "none")
    if mode == "none":
        return lambda x: x
    from keras.applications import imagenet_utils

    return lambda x: imagenet_utils.preprocess_input(x, mode=mode)


# ITU-R BT.601 luma, as Pillow's convert("L"): what a grey model sees of an RGB picture.
LUMA = (0.299, 0.587, 0.114)


def _with_channels(preprocess: Callable, channels: int) -> Callable:
    """Raw RGB pixels -> the model's input, with the photo's channels made the model's:
    grey (luma) for 1 channel, an opaque alpha channel added for 4. Every path that feeds
    the model (predictions, maps, unit pictures) goes through it, so pictures are still
    optimised and photos still read as RGB."""
    if channels == 3:
        return preprocess
    if channels == 1:
        weights = keras.ops.convert_to_tensor(LUMA, "float32")
        return lambda x: preprocess(keras.ops.sum(x * weights, axis=-1, keepdims=True))
    return lambda x: preprocess(
        keras.ops.concatenate([x, keras.ops.full_like(x[..., :1], 255.0)], axis=-1)
    )


def _check_digest(config: ModelConfig, path: Path, what: str) -> None:
    if config.sha256 is None:
        return
    actual = file_digest(path)
    if actual != config.sha256:
        raise ModelError(
            f"models[{config.id}].sha256: {what} {path} has sha256 {actual}, "
            f"expected {config.sha256}: the file is damaged or not the one "
            "configured"
        )


def _build_application(config: ModelConfig) -> keras.Model:
    constructor = getattr(keras.applications, config.application)
    options = dict(config.options)
    weights = config.weights
    if isinstance(weights, Path):
        _check_digest(config, weights, "weights file")
        weights_arg: Any = str(weights)
    else:
        weights_arg = None if weights == "none" else "imagenet"
    if weights == "none":
        keras.utils.set_random_seed(config.render.seed)  # random weights, but repeatable
    try:
        return constructor(include_top=True, weights=weights_arg, **options)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise _explain(config, error) from None
    except Exception as error:  # noqa: BLE001 - Keras raises plain Exception for fetch errors
        if "URL fetch failure" in str(error) or "fetch" in str(error).lower():
            raise _offline(config, error) from None
        raise _explain(config, error) from None


def _offline(config: ModelConfig, error: Exception) -> ModelError:
    return ModelError(
        f"model {config.id!r}: could not download the ImageNet weights for "
        f"{config.application} ({str(error).splitlines()[0][:200]}). Without a network, "
        "download the weights file elsewhere (Keras names it in the URL above), put it "
        "beside site_config.yaml and set `weights: <that file>` for this model."
    )


def _explain(config: ModelConfig, error: Exception) -> ModelError:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "fetch" in text.lower() or "urlopen" in text.lower():
        return _offline(config, error)
    source = config.weights if isinstance(config.weights, Path) else config.application
    hint = ""
    if isinstance(config.weights, Path):
        hint = (
            " — is the weights file complete and made for this architecture and these "
            f"options ({config.options})?"
        )
    return ModelError(
        f"model {config.id!r}: cannot build {config.application} with "
        f"weights {source}: {text[:300]}{hint}"
    )


def _load_file(config: ModelConfig) -> keras.Model:
    path = config.file
    _check_digest(config, path, "model file")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):  # Keras: "File not found"
        raise ModelError(
            f"model {config.id!r}: cannot load {path}: not a .keras file (one is a zip "
            "archive, as model.save('name.keras') writes it); is it complete, or an HDF5 "
            "model to rename to .h5?"
        )
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except (TypeError, ValueError) as error:
        text = str(error).splitlines()[0][:300]
        if "custom" in text.lower() or "Could not locate" in text or "deserializ" in text:
            raise ModelError(
                f"model {config.id!r}: {path} uses custom objects atlas cannot load safely "
                f"({text}). Save the model with standard Keras layers only."
            ) from None
        raise ModelError(f"model {config.id!r}: cannot load {path}: {text}") from None
    except Exception as error:  # noqa: BLE001 - zip/h5 readers raise many kinds
        raise ModelError(
            f"model {config.id!r}: cannot load {path}: "
            f"{str(error).splitlines()[0][:300] if str(error) else error!r}"
        ) from None
    if isinstance(config.weights, Path):
        try:
            model.load_weights(config.weights)
        except Exception as error:  # noqa: BLE001
            raise _explain(config, error) from None
    return model


def load_model(config: ModelConfig) -> LoadedModel:
    """Build (or load) one configured model and flatten its graph.

    Layer names are made independent of what was built before in this process (Keras
    numbers unnamed layers with process-wide counters), so facts and keys are the same
    whatever the config lists before this model.

    Raises:
        ModelError: unknown options, unreadable or mismatched weights, offline download,
            a graph atlas cannot walk, a fixed input that is not square.
    """
    keras.src.utils.naming.reset_uids()
    if config.application is not None:
        keras_model = _build_application(config)
    else:
        keras_model = _load_file(config)
    try:
        graph = flatten_model(
            keras_model,
            read_at=config.read_at,
            preprocess=preprocess_affine(preprocess_mode(config)),
        )
    except GraphError as error:
        raise ModelError(f"model {config.id!r}: {error}") from None
    except Exception as error:  # noqa: BLE001 - a layer that refuses a symbolic re-call
        text = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
        raise ModelError(
            f"model {config.id!r}: atlas cannot walk its graph ({text}); run "
            "`atlas --debug build` for the traceback and report it with the "
            "model's summary"
        ) from None
    shape = keras_model.inputs[0].shape
    if shape[1] is not None and shape[2] is not None and shape[1] != shape[2]:
        raise ModelError(
            f"model {config.id!r}: its input is {shape[1]}x{shape[2]} pixels; atlas renders "
            "square pictures: use a square input_shape (e.g. [160, 160, 3]) or a model built "
            "on (None, None, 3)"
        )
    default = APPLICATION_MODULES.get(config.application or "", ("", 224))[1]
    input_size = (int(shape[1] or default), int(shape[2] or default))
    if not graph.conv_layers:
        raise ModelError(f"model {config.id!r}: the model has no convolution layers")
    return LoadedModel(
        config=config,
        keras_model=keras_model,
        graph=graph,
        preprocess=_with_channels(_preprocess_for(config), int(shape[-1])),
        input_size=input_size,
        random_weights=config.application is not None and config.weights == "none",
    )
