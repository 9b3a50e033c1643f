"""The layer walk: every convolution of a Keras model, nested sub-models included.

A Keras application used as a backbone inside a user's model hides its layers one level
down, and ``keras.Model(model.input, backbone.get_layer(name).output)`` then fails with
"graph disconnected" because that output belongs to the backbone's own graph. atlas
instead re-traces the model on fresh inputs, inlining every nested Functional or
Sequential model, so every operation (layers and ``keras.ops`` nodes alike) is called once
at the top level of one flat graph that shares the original weights. Any set of tensors
(activations, Grad-CAM, a model truncated at one unit's tensor) is then an ordinary
``keras.Model``.

While tracing, each tensor gets a content address (:mod:`atlas.model.address`), each conv layer
the tensor its units are read at (after its own BatchNorm and activation), and the model
its head (a final softmax is taken off: Grad-CAM and class units need logits).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from atlas.model import address
from atlas.model.facts import (
    ACTIVATION_KINDS,
    CONV_TYPES,
    REDIRECT,
    GraphError,
    LayerFacts,
    layer_facts,
)
from atlas.render.engine import keras
from atlas.render.trace import Node, Tracer, check_io, final_op

log = logging.getLogger(__name__)

__all__ = ["CONV_TYPES", "FlatGraph", "GraphError", "LayerFacts", "flatten_model"]

READ_AT = ("activation", "conv")
_PASS_THROUGH = ("Reshape", "Flatten", "Dropout", "Identity", "SpatialDropout2D")


@dataclass
class FlatGraph:
    """A model re-traced into one flat functional graph.

    Attributes:
        inputs: the fresh symbolic inputs.
        outputs: the model's outputs, with a final softmax removed (logits).
        tensors: qualified operation name -> that operation's symbolic output.
        layers: facts for every operation, in call order.
        head: ``"softmax"`` or ``"sigmoid"`` (that final activation was taken off),
            ``"logits"`` (a linear classifier output) or None (a feature extractor: no
            classes).
        binary: the model has one output (a binary classifier, sigmoid or logits, as in
            the keras.io recipe): ``outputs`` are then atlas's two logits ``[-z, z]``, the
            first class's score the negated logit.
    """

    inputs: list
    outputs: list
    tensors: dict[str, object] = field(default_factory=dict)
    layers: list[LayerFacts] = field(default_factory=list)
    head: str | None = None
    binary: bool = False

    @property
    def independent(self) -> bool:
        """Whether each class's probability is the sigmoid of its own logit (a sigmoid or
        binary head) rather than the softmax over all logits."""
        return self.head == "sigmoid" or self.binary

    def probabilities(self, logits):
        """Class probabilities from this graph's logits: the one place atlas turns logits
        into probabilities, as the model's own head does (softmax, or the sigmoid of each
        logit; for a binary head ``[1 - p, p]``). NumPy in, float64 NumPy out; a tensor
        in, a tensor out.
        """
        if isinstance(logits, np.ndarray):
            logits = logits.astype(np.float64)
            if self.independent:
                return 1.0 / (1.0 + np.exp(-logits))
            exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
            return exp / exp.sum(axis=-1, keepdims=True)
        if self.independent:
            return keras.ops.sigmoid(logits)
        return keras.ops.softmax(logits, axis=-1)

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


class _TwoClasses(keras.layers.Layer):
    """A one-output (binary) head's logit ``z`` as two class scores ``[-z, z]``: the
    second class is the one the model's output says (Keras' binary labels), and its
    probabilities ``sigmoid([-z, z])`` are ``[1 - p, p]``."""

    def call(self, logit):
        return keras.ops.concatenate([-logit, logit], axis=-1)


class _Redirect(keras.layers.Layer):
    """The unit tensor forward; backward, also :data:`REDIRECT` times its gradient into
    the activation's input where that is negative (see :meth:`FlatGraph.ascent_model`)."""

    def call(self, post, pre):
        # Only where the unit is off (pre < 0), as Lucid's redirected ReLU: above a capped
        # activation's top (ReLU6) the objective cannot grow, so nothing is pushed there.
        off = keras.ops.stop_gradient(keras.ops.cast(pre < 0, pre.dtype))
        return post + REDIRECT * off * (pre - keras.ops.stop_gradient(pre))


def flatten_model(
    model: keras.Model,
    free_size: bool = False,
    read_at: str = "activation",
    preprocess: address.Affine | None = None,
) -> FlatGraph:
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
    check_io(model, name)
    source = model.inputs[0]
    tracer = Tracer(
        name, (source.shape[1], source.shape[2]), preprocess or address.Affine(), final_op(model)
    )
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
    if graph.head and outputs and outputs[0].shape[-1] == 1:
        graph.binary = True
        graph.outputs = [_TwoClasses(name="atlas__two_classes")(outputs[0])]
    graph.layers = _facts(tracer, read_at)
    return graph


def _head(tracer: Tracer, outputs: list) -> str | None:
    if tracer.stripped:
        return tracer.stripped
    if not outputs or len(outputs[0].shape) != 2:
        return None
    producers = {id(node.output): node for node in tracer.nodes}
    node = producers.get(id(outputs[0]))
    while node is not None and (
        node.kind in _PASS_THROUGH
        or (node.kind == "Activation" and getattr(node.op.activation, "__name__", "") == "linear")
    ):
        node = producers.get(node.inputs[0]) if node.inputs else None
    if node is not None and (node.kind == "Dense" or node.kind in CONV_TYPES):
        return "logits"
    return None


def _facts(tracer: Tracer, read_at: str) -> list[LayerFacts]:
    consumers: dict[int, list[Node]] = {}
    for node in tracer.nodes:
        for tensor in node.inputs:
            consumers.setdefault(tensor, []).append(node)
    facts = []
    for node in tracer.nodes:
        chain = _read_chain(node, consumers) if node.kind in CONV_TYPES else []
        read_node = chain[-1] if chain and read_at == "activation" else node
        activated = read_node is not node and read_node.kind in ACTIVATION_KINDS
        pre = (chain[-2] if len(chain) > 1 else node) if activated else None
        facts.append(
            layer_facts(
                node.name,
                node.op,
                node.kind,
                node.output,
                tracer.field[id(node.output)],
                is_conv=node.kind in CONV_TYPES,
                read_at=read_node.name,
                read_ops=tuple(n.kind for n in chain) if read_node is not node else (),
                negative_scale=_negative_scale(chain),
                address=tracer.address_of(read_node.output) if node.kind in CONV_TYPES else None,
                pre_activation=pre.name if pre is not None else None,
            )
        )
    return facts


def _read_chain(conv: Node, consumers: dict[int, list[Node]]) -> list[Node]:
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


def _negative_scale(chain: list[Node]) -> int | None:
    for node in chain:
        if node.kind == "BatchNormalization" and getattr(node.op, "gamma", None) is not None:
            return int((np.asarray(node.op.gamma) < 0).sum())
    return None
