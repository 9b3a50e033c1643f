"""The re-trace behind the flat graph: every operation of a (possibly nested) model called
once on fresh symbolic tensors, with each tensor's receptive field and content address.
See :mod:`atlas.render.graph`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atlas.model import address
from atlas.model.facts import GraphError, field_after
from atlas.render.engine import keras

# Channels of an image input atlas can feed photos to: grey, RGB, RGB and alpha.
INPUT_CHANNELS = (1, 3, 4)
Functional = keras.src.models.functional.Functional  # Keras 3's graph-of-layers model


@dataclass
class Node:
    """One call of one operation in the flat graph."""

    name: str
    op: object
    kind: str
    inputs: list[int]  # ids of the input tensors
    output: object


class Tracer:
    """Calls every operation of a (possibly nested) model on symbolic tensors."""

    def __init__(
        self,
        model_name: str,
        input_size: tuple[int | None, int | None],
        preprocess: address.Affine,
        final_op: object | None,
    ):
        self.model_name = model_name
        self.input_size = input_size
        self.preprocess = preprocess
        self.final_op = final_op
        self.stripped: str | None = None
        self.nodes: list[Node] = []
        self.field: dict[int, tuple[int, int]] = {}  # id(tensor) -> (receptive field, jump)
        self.affine: dict[int, address.Affine] = {}  # tensors still affine in raw pixels
        self.addresses: dict[int, str] = {}
        self._keep: list[object] = []  # keeps traced tensors alive: their ids are keys
        self._called: dict[int, str] = {}

    def start(self, tensor) -> None:
        self._keep.append(tensor)
        self.affine[id(tensor)] = self.preprocess

    def run(self, model: keras.Model, args: tuple, prefix: str):
        if isinstance(model, keras.Sequential):
            x = args[0]
            for layer in model.layers:
                x = self.call(layer, (x,), {}, prefix)
            return x
        return model._run_through_graph(
            args[0] if len(args) == 1 else list(args),
            operation_fn=lambda op: lambda *a, **k: self.call(op, a, k, prefix),
        )

    def call(self, op, args: tuple, kwargs: dict, prefix: str):
        name = f"{prefix}{op.name}"
        if id(op) in self._called:
            raise GraphError(
                f"model {self.model_name!r}: {name!r} is called more than once "
                f"(a shared layer, first at {self._called[id(op)]!r}); atlas needs "
                "each layer called once: give each call its own layer"
            )
        self._called[id(op)] = name
        kwargs = {k: v for k, v in kwargs.items() if k not in ("training", "mask")}
        if isinstance(op, Functional | keras.Sequential):
            return self.run(op, args, prefix=f"{name}/")
        tensors = [t for t in keras.tree.flatten((args, kwargs)) if _is_tensor(t)]
        if op is self.final_op and _squashing_op(op):
            self.stripped = _squashing_op(op)
            return args[0]  # a final softmax or sigmoid: logits go on
        if op is self.final_op and _squashing(getattr(op, "activation", None)):
            # The head computes its logits in atlas's own copy of the layer; the user's
            # layer (and so their model) is never changed.
            self.stripped = _squashing(op.activation)
            op = _linear_copy(op, args, kwargs)
        out = op(*args, **kwargs)
        self._keep.append(out)
        self._record(op, name, args, kwargs, tensors, out)
        return out

    def _record(self, op, name: str, args: tuple, kwargs: dict, tensors: list, out) -> None:
        kind = type(op).__name__
        outs = keras.tree.flatten(out)
        rf, jump = field_after(
            op, kind, [self.field.get(id(t), (1, 1)) for t in tensors], self.input_size
        )
        for tensor in outs:
            self.field[id(tensor)] = (rf, jump)
        self._address(op, kind, args, kwargs, tensors, outs)
        self.nodes.append(Node(name, op, kind, [id(t) for t in tensors], outs[0]))

    def _address(self, op, kind: str, args: tuple, kwargs: dict, tensors: list, outs) -> None:
        is_layer = isinstance(op, keras.layers.Layer)
        config = _config(op)
        weights = [np.asarray(w) for w in op.weights] if is_layer else []
        if len(tensors) == 1 and id(tensors[0]) in self.affine and len(outs) == 1:
            index = next((i for i, a in enumerate(args) if a is tensors[0]), None)
            folded = address.fold(kind, config, weights, args, index)
            if folded is not None:
                self.affine[id(outs[0])] = self.affine[id(tensors[0])].then(*folded)
                return
        described = keras.tree.map_structure(self._describe, (args, kwargs))
        base = address.digest(
            kind, address.config_digest(config), address.weights_digest(weights), described
        )
        for index, tensor in enumerate(outs):
            self.addresses[id(tensor)] = address.digest(base, index)

    def _describe(self, value):
        if not _is_tensor(value):
            return value
        if id(value) not in self.addresses:  # leaving the affine prefix: hash the map
            affine = self.affine.get(id(value), address.Affine())
            self.addresses[id(value)] = address.digest(
                "input", [d for d in value.shape[1:]], str(value.dtype), affine.canonical()
            )
        return {"tensor": self.addresses[id(value)]}

    def address_of(self, tensor) -> str:
        return self._describe(tensor)["tensor"]


def _is_tensor(value) -> bool:
    return isinstance(value, keras.KerasTensor)


SQUASHING = ("softmax", "sigmoid")  # final activations taken off: Grad-CAM needs logits


def _squashing(activation) -> str | None:
    """``softmax`` or ``sigmoid`` when the activation function is one, else None."""
    name = getattr(activation, "__name__", "")
    return name if name in SQUASHING else None


def _squashing_op(op) -> str | None:
    """``softmax`` or ``sigmoid`` when the operation is only that activation (a Softmax
    layer, an Activation layer, a keras.ops node), else None."""
    kind = type(op).__name__
    if kind in ("Softmax", "Sigmoid"):  # the layers or the keras.ops nodes
        return kind.lower()
    return _squashing(op.activation) if isinstance(op, keras.layers.Activation) else None


def _linear_copy(op, args: tuple, kwargs: dict):
    """A copy of a layer with a linear activation and the layer's own weight values, for
    atlas's graph: the same computation up to its activation. Built on the symbolic
    inputs, so its variables exist before the weights are copied in."""
    config = {**op.get_config(), "activation": "linear"}
    copy = type(op).from_config(config)
    copy(*args, **kwargs)
    copy.set_weights(op.get_weights())
    return copy


def _config(op) -> dict:
    try:
        config = op.get_config()
    except (NotImplementedError, TypeError, AttributeError):
        return {}
    return config if isinstance(config, dict) else {}


def final_op(model: keras.Model):
    operation = model.outputs[0]._keras_history.operation
    while isinstance(operation, Functional | keras.Sequential):
        operation = operation.outputs[0]._keras_history.operation
    return operation


def check_io(model: keras.Model, name: str) -> None:
    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:  # a Sequential model never built raises instead of giving []
        inputs, outputs = [], []
    if not inputs:
        raise GraphError(f"model {name!r} has no inputs: build it on an input shape first")
    if len(inputs) > 1:
        raise GraphError(
            f"model {name!r} has {len(inputs)} inputs "
            f"({', '.join(t.name for t in inputs)}); atlas needs one image input"
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[-1] not in INPUT_CHANNELS:
        raise GraphError(
            f"model {name!r}: input {inputs[0].name!r} has shape {shape[1:]}; "
            "atlas needs an image input (height, width, channels) of 1 (grey), 3 (RGB) or "
            "4 (RGBA) channels"
        )
    if len(outputs) != 1:
        raise GraphError(f"model {name!r} has {len(outputs)} outputs; atlas needs one")
