"""The layer walk: every convolution of a Keras model, nested sub-models included.

A Keras application used as a backbone inside a user's model hides its layers one level
down, and ``keras.Model(model.input, backbone.get_layer(name).output)`` then fails with
"graph disconnected" because that output belongs to the backbone's own graph. atlas
instead re-traces the model on fresh inputs, inlining every nested Functional or
Sequential model, so every operation (layers and ``keras.ops`` nodes alike) is called once
at the top level of one flat graph that shares the original weights. Any set of tensors
(activations, Grad-CAM, a model truncated at one unit's tensor) is then an ordinary
``keras.Model``.

While tracing, each tensor gets a content address (:mod:`atlas.address`), each conv layer
the tensor its units are read at (after its own BatchNorm and activation), and the model
its head (a final softmax is taken off: Grad-CAM and class units need logits).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from atlas import address
from atlas._tensorflow import keras
from atlas.graph_facts import (
    ACTIVATION_KINDS,
    CONV_TYPES,
    REDIRECT,
    GraphError,
    LayerFacts,
    field_after,
    layer_facts,
)

Functional = keras.src.models.functional.Functional  # Keras 3's graph-of-layers model

log = logging.getLogger(__name__)

__all__ = ["CONV_TYPES", "FlatGraph", "GraphError", "LayerFacts", "flatten_model"]

READ_AT = ("activation", "conv")
_PASS_THROUGH = ("Reshape", "Flatten", "Dropout", "Identity", "SpatialDropout2D")


@dataclass
class _Node:
    """One call of one operation in the flat graph."""

    name: str
    op: object
    kind: str
    inputs: list[int]  # ids of the input tensors
    output: object


@dataclass
class FlatGraph:
    """A model re-traced into one flat functional graph.

    Attributes:
        inputs: the fresh symbolic inputs.
        outputs: the model's outputs, with a final softmax removed (logits).
        tensors: qualified operation name -> that operation's symbolic output.
        layers: facts for every operation, in call order.
        head: ``"softmax"`` (a softmax was taken off), ``"logits"`` (a linear classifier
            output) or None (a feature extractor: no classes).
    """

    inputs: list
    outputs: list
    tensors: dict[str, object] = field(default_factory=dict)
    layers: list[LayerFacts] = field(default_factory=list)
    head: str | None = None

    @property
    def conv_layers(self) -> list[LayerFacts]:
        return [layer for layer in self.layers if layer.is_conv]

    @property
    def classes(self) -> int | None:
        """The number of classes, None for a feature extractor."""
        return int(self.outputs[0].shape[-1]) if self.head and self.outputs else None

    def unit_tensor(self, conv: str) -> str:
        """The name of the operation whose output a conv layer's units are read at."""
        return self.conv_facts(conv).read_at or conv

    def conv_facts(self, conv: str) -> LayerFacts:
        for layer in self.layers:
            if layer.name == conv and layer.is_conv:
                return layer
        raise KeyError(f"no convolution layer named {conv!r}")

    def ascent_model(self, convs: Sequence[LayerFacts]) -> keras.Model:
        """Input -> the unit tensors of these conv layers (a list), for gradient ascent.

        Forward, each output is exactly the unit tensor. Where the units are read after an
        activation, the gradient also flows, scaled by :data:`REDIRECT`, through the
        activation's input where that is negative: a unit that is off everywhere on the
        starting picture (a ReLU's gradient is zero there) still moves towards firing, as
        Lucid's redirected ReLU gradient does.
        """
        return keras.Model(self.inputs[0], [self._redirected(facts) for facts in convs])

    def _redirected(self, facts: LayerFacts):
        post = self.tensors[facts.read_at or facts.name]
        if facts.pre_activation is None:
            return post
        pre = self.tensors[facts.pre_activation]
        # A layer named after its conv, not loose keras.ops calls: those are auto-named
        # ("subtract") and a loaded .keras file's own ops keep such names, which Keras then
        # refuses in one model ("used 2 times").
        return _Redirect(name=f"{facts.name.replace('/', '__')}__redirect")(post, pre)

    def logits_model(self) -> keras.Model:
        """Input -> the pre-softmax logits."""
        return keras.Model(self.inputs[0], self.outputs[0])

    def submodel(self, names: Sequence[str], with_logits: bool = False) -> keras.Model:
        """A model from the input to the named operations' outputs (and the logits last).

        Keras keeps only the operations the outputs need, so a model over one early
        tensor is also the model truncated there.
        """
        missing = [name for name in names if name not in self.tensors]
        if missing:
            raise KeyError(f"no layer named {missing[0]!r}")
        outputs = [self.tensors[name] for name in names]
        if with_logits:
            outputs.append(self.outputs[0])
        return keras.Model(self.inputs[0], outputs)


class _Redirect(keras.layers.Layer):
    """The unit tensor forward; backward, also :data:`REDIRECT` times its gradient into
    the activation's input where that is negative (see :meth:`FlatGraph.ascent_model`)."""

    def call(self, post, pre):
        # Only where the unit is off (pre < 0), as Lucid's redirected ReLU: above a capped
        # activation's top (ReLU6) the objective cannot grow, so nothing is pushed there.
        off = keras.ops.stop_gradient(keras.ops.cast(pre < 0, pre.dtype))
        return post + REDIRECT * off * (pre - keras.ops.stop_gradient(pre))


class _Tracer:
    """Calls every operation of a (possibly nested) model on symbolic tensors."""

    def __init__(self, model_name: str, input_size: tuple[int | None, int | None],
                 preprocess: address.Affine, final_op: object | None):
        self.model_name = model_name
        self.input_size = input_size
        self.preprocess = preprocess
        self.final_op = final_op
        self.stripped: str | None = None
        self.nodes: list[_Node] = []
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
            raise GraphError(f"model {self.model_name!r}: {name!r} is called more than once "
                             f"(a shared layer, first at {self._called[id(op)]!r}); atlas needs "
                             "each layer called once: give each call its own layer")
        self._called[id(op)] = name
        kwargs = {k: v for k, v in kwargs.items() if k not in ("training", "mask")}
        if isinstance(op, Functional | keras.Sequential):
            return self.run(op, args, prefix=f"{name}/")
        tensors = [t for t in keras.tree.flatten((args, kwargs)) if _is_tensor(t)]
        if op is self.final_op and _is_softmax_op(op):
            self.stripped = name
            return args[0]  # a final softmax: logits go on
        if op is self.final_op and _is_softmax(getattr(op, "activation", None)):
            op.activation = keras.activations.linear  # read at call time by Keras 3
            self.stripped = name
        out = op(*args, **kwargs)
        self._keep.append(out)
        self._record(op, name, args, kwargs, tensors, out)
        return out

    def _record(self, op, name: str, args: tuple, kwargs: dict, tensors: list, out) -> None:
        kind = type(op).__name__
        outs = keras.tree.flatten(out)
        rf, jump = field_after(op, kind, [self.field.get(id(t), (1, 1)) for t in tensors],
                               self.input_size)
        for tensor in outs:
            self.field[id(tensor)] = (rf, jump)
        self._address(op, kind, args, kwargs, tensors, outs)
        self.nodes.append(_Node(name, op, kind, [id(t) for t in tensors], outs[0]))

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
        base = address.digest(kind, address.config_digest(config),
                              address.weights_digest(weights), described)
        for index, tensor in enumerate(outs):
            self.addresses[id(tensor)] = address.digest(base, index)

    def _describe(self, value):
        if not _is_tensor(value):
            return value
        if id(value) not in self.addresses:  # leaving the affine prefix: hash the map
            affine = self.affine.get(id(value), address.Affine())
            self.addresses[id(value)] = address.digest(
                "input", [d for d in value.shape[1:]], str(value.dtype), affine.canonical())
        return {"tensor": self.addresses[id(value)]}

    def address_of(self, tensor) -> str:
        return self._describe(tensor)["tensor"]


def _is_tensor(value) -> bool:
    return isinstance(value, keras.KerasTensor)


def _is_softmax(activation) -> bool:
    return getattr(activation, "__name__", "") == "softmax"


def _is_softmax_op(op) -> bool:
    if type(op).__name__ == "Softmax":  # the layer or the keras.ops node
        return True
    return isinstance(op, keras.layers.Activation) and _is_softmax(op.activation)


def _config(op) -> dict:
    try:
        config = op.get_config()
    except (NotImplementedError, TypeError, AttributeError):
        return {}
    return config if isinstance(config, dict) else {}


def _final_op(model: keras.Model):
    operation = model.outputs[0]._keras_history.operation
    while isinstance(operation, Functional | keras.Sequential):
        operation = operation.outputs[0]._keras_history.operation
    return operation


def _check_io(model: keras.Model, name: str) -> None:
    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:  # a Sequential model never built raises instead of giving []
        inputs, outputs = [], []
    if not inputs:
        raise GraphError(f"model {name!r} has no inputs: build it on an input shape first")
    if len(inputs) > 1:
        raise GraphError(f"model {name!r} has {len(inputs)} inputs "
                         f"({', '.join(t.name for t in inputs)}); atlas needs one image input")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise GraphError(f"model {name!r}: input {inputs[0].name!r} has shape {shape[1:]}; "
                         "atlas needs an image input (height, width, 3)")
    if len(outputs) != 1:
        raise GraphError(f"model {name!r} has {len(outputs)} outputs; atlas needs one")


def flatten_model(model: keras.Model, free_size: bool = False, read_at: str = "activation",
                  preprocess: address.Affine | None = None) -> FlatGraph:
    """Re-trace ``model`` into one flat graph whose output is the pre-softmax logits.

    Args:
        model: a built Keras Functional or Sequential model with one image input.
        free_size: trace on an input of any height and width instead of the model's own.
            Tracing stops at the first layer that needs a fixed size (a Flatten before a
            Dense, say); the layers before it are in the graph, ``outputs`` is empty.
        read_at: ``activation`` reads a conv's units after the BatchNorm and activation
            that directly follow it; ``conv`` at the conv's own output.
        preprocess: the affine map applied to raw pixels before the model (for addresses).

    Returns:
        The flat graph: fresh inputs, logits, each operation's output and facts.

    Raises:
        GraphError: no or several inputs, a non-image input, several outputs, a shared layer.
    """
    name = getattr(model, "name", "model")
    _check_io(model, name)
    source = model.inputs[0]
    tracer = _Tracer(name, (source.shape[1], source.shape[2]),
                     preprocess or address.Affine(), _final_op(model))
    shape = (None, None, source.shape[-1]) if free_size else tuple(source.shape[1:])
    inputs = [keras.Input(shape=shape, dtype=source.dtype, name=source.name)]
    tracer.start(inputs[0])
    try:
        outputs = keras.tree.flatten(tracer.run(model, tuple(inputs), prefix=""))
    except GraphError:
        raise
    except Exception as error:  # noqa: BLE001 - any layer may refuse an unknown size
        if not free_size:
            raise
        log.debug("free-size trace stopped after %d operations: %s", len(tracer.nodes), error)
        outputs = []
    graph = FlatGraph(inputs=inputs, outputs=outputs)
    graph.tensors = {node.name: node.output for node in tracer.nodes}
    graph.head = _head(tracer, outputs)
    graph.layers = _facts(tracer, read_at)
    return graph


def _head(tracer: _Tracer, outputs: list) -> str | None:
    if tracer.stripped:
        return "softmax"
    if not outputs or len(outputs[0].shape) != 2:
        return None
    producers = {id(node.output): node for node in tracer.nodes}
    node = producers.get(id(outputs[0]))
    while node is not None and (node.kind in _PASS_THROUGH or (
            node.kind == "Activation" and getattr(node.op.activation, "__name__", "") == "linear")):
        node = producers.get(node.inputs[0]) if node.inputs else None
    if node is not None and (node.kind == "Dense" or node.kind in CONV_TYPES):
        return "logits"
    return None


def _facts(tracer: _Tracer, read_at: str) -> list[LayerFacts]:
    consumers: dict[int, list[_Node]] = {}
    for node in tracer.nodes:
        for tensor in node.inputs:
            consumers.setdefault(tensor, []).append(node)
    facts = []
    for node in tracer.nodes:
        chain = _read_chain(node, consumers) if node.kind in CONV_TYPES else []
        read_node = chain[-1] if chain and read_at == "activation" else node
        activated = read_node is not node and read_node.kind in ACTIVATION_KINDS
        pre = (chain[-2] if len(chain) > 1 else node) if activated else None
        facts.append(layer_facts(
            node.name, node.op, node.kind, node.output, tracer.field[id(node.output)],
            is_conv=node.kind in CONV_TYPES,
            read_at=read_node.name,
            read_ops=tuple(n.kind for n in chain) if read_node is not node else (),
            negative_scale=_negative_scale(chain),
            address=tracer.address_of(read_node.output) if node.kind in CONV_TYPES else None,
            pre_activation=pre.name if pre is not None else None,
        ))
    return facts


def _read_chain(conv: _Node, consumers: dict[int, list[_Node]]) -> list[_Node]:
    """The BatchNorm and activation that directly follow a conv, each its sole consumer."""
    if not _is_linear(getattr(conv.op, "activation", None)):
        return []  # a conv with a built-in activation is read at its own output
    chain, current = [], conv
    for wanted in (("BatchNormalization",), ACTIVATION_KINDS):
        following = consumers.get(id(current.output), [])
        if len(following) != 1 or following[0].kind not in wanted:
            if wanted == ("BatchNormalization",):
                continue  # no BatchNorm: an activation may still follow directly
            break
        if following[0].kind == "Activation" and _is_linear(following[0].op.activation):
            break
        current = following[0]
        chain.append(current)
    return chain


def _is_linear(activation) -> bool:
    return activation is None or getattr(activation, "__name__", "linear") == "linear"


def _negative_scale(chain: list[_Node]) -> int | None:
    for node in chain:
        if node.kind == "BatchNormalization" and getattr(node.op, "gamma", None) is not None:
            return int((np.asarray(node.op.gamma) < 0).sum())
    return None
