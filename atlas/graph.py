"""The layer walk: every convolution of a Keras model, nested sub-models included.

A Keras application used as a backbone inside a user's model hides its layers one level
down, and ``keras.Model(model.input, backbone.get_layer(name).output)`` then fails with
"graph disconnected" because that output belongs to the backbone's own graph. atlas
instead re-traces the model on fresh inputs, inlining every nested Functional or
Sequential model, so every layer is called once at the top level of one flat graph that
shares the original weights. Any set of layer outputs (activations, Grad-CAM, a model
truncated at one layer for filter visualization) is then an ordinary ``keras.Model``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from atlas._tensorflow import keras

Functional = keras.src.models.functional.Functional  # Keras 3's graph-of-layers model

log = logging.getLogger(__name__)

CONV_TYPES = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose")
_SOFTMAX_NAMES = ("softmax",)


@dataclass(frozen=True)
class LayerFacts:
    """What the site shows about one layer of the flattened model.

    ``receptive_field`` is the side, in input pixels, of the input window that can
    influence one output position; ``jump`` is the distance in input pixels between two
    neighbouring output positions (the product of the strides so far).
    """

    name: str
    type: str
    output_shape: tuple[int | None, ...]
    params: int
    is_conv: bool
    channels: int | None = None
    kernel: tuple[int, int] | None = None
    strides: tuple[int, int] | None = None
    receptive_field: int | None = None
    jump: int | None = None
    parent: str | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "type": self.type,
            "output_shape": list(self.output_shape),
            "params": self.params,
            "is_conv": self.is_conv,
            "channels": self.channels,
            "kernel": list(self.kernel) if self.kernel else None,
            "strides": list(self.strides) if self.strides else None,
            "receptive_field": self.receptive_field,
            "jump": self.jump,
            "parent": self.parent,
        }


@dataclass
class FlatGraph:
    """A model re-traced into one flat functional graph.

    Attributes:
        inputs: the fresh symbolic inputs.
        outputs: the model's outputs, with a final softmax removed (logits).
        tensors: qualified layer name -> that layer's symbolic output (first call).
        layers: facts for every layer, in call order.
    """

    inputs: list
    outputs: list
    tensors: dict[str, object] = field(default_factory=dict)
    layers: list[LayerFacts] = field(default_factory=list)

    @property
    def conv_layers(self) -> list[LayerFacts]:
        return [layer for layer in self.layers if layer.is_conv]

    def submodel(self, names: Sequence[str], with_logits: bool = False) -> keras.Model:
        """A model from the input to the named layers' outputs (and the logits last).

        Keras keeps only the operations the outputs need, so a model over one early
        layer is also the model truncated at that layer.
        """
        missing = [name for name in names if name not in self.tensors]
        if missing:
            raise KeyError(f"no layer named {missing[0]!r}")
        outputs = [self.tensors[name] for name in names]
        if with_logits:
            outputs.append(self.outputs[0])
        inputs = self.inputs[0] if len(self.inputs) == 1 else self.inputs
        return keras.Model(inputs, outputs)


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def _shape(tensor) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in tensor.shape)


def _is_softmax(activation) -> bool:
    return getattr(activation, "__name__", "") in _SOFTMAX_NAMES


def _strip_final_softmax(model: keras.Model) -> bool:
    """Make the model output pre-softmax logits; returns whether a softmax was removed.

    Grad-CAM and class visualizations need logits: the softmax couples every class and
    saturates. The softmax is dropped from the layer itself (Keras 3 reads
    ``layer.activation`` at call time); atlas applies it again for probabilities.
    """
    operation = model.outputs[0]._keras_history.operation
    while isinstance(operation, Functional | keras.Sequential):
        operation = operation.outputs[0]._keras_history.operation
    if isinstance(operation, keras.layers.Softmax):
        return False  # handled by _trace (skipped as an identity)
    if _is_softmax(getattr(operation, "activation", None)):
        operation.activation = keras.activations.linear
        return True
    return False


class _Tracer:
    """Calls every layer of a (possibly nested) model on symbolic tensors, recording facts."""

    def __init__(self, input_size: tuple[int | None, int | None]):
        self.input_size = input_size
        self.tensors: dict[str, object] = {}
        self.layers: list[LayerFacts] = []
        self.field: dict[int, tuple[int, int]] = {}  # id(tensor) -> (receptive field, jump)
        self.final_softmax: object | None = None
        self._seen: set[int] = set()

    def run(self, model: keras.Model, args: tuple, kwargs: dict, prefix: str):
        if isinstance(model, keras.Sequential):
            x = args[0]
            for layer in model.layers:
                x = self._call(layer, (x,), {}, prefix)
            return x
        return model._run_through_graph(
            args[0] if len(args) == 1 else list(args),
            operation_fn=lambda op: self._operation_fn(op, prefix),
        )

    def _operation_fn(self, op, prefix: str) -> Callable:
        return lambda *args, **kwargs: self._call(op, args, kwargs, prefix)

    def _call(self, op, args: tuple, kwargs: dict, prefix: str):
        name = f"{prefix}{op.name}"
        if isinstance(op, Functional | keras.Sequential):
            kwargs.pop("training", None)
            return self.run(op, args, kwargs, prefix=f"{name}/")
        if op is self.final_softmax:
            self._record_field(args, args[0])
            return args[0]
        out = op(*args, **kwargs)
        self._record(op, name, args, out, prefix)
        return out

    def _inputs_field(self, args) -> tuple[int, int]:
        tensors = [a for a in keras.tree.flatten(args) if hasattr(a, "shape")]
        known = [self.field.get(id(t)) for t in tensors]
        known = [k for k in known if k is not None]
        if not known:
            return (1, 1)
        return (max(k[0] for k in known), max(k[1] for k in known))

    def _record_field(self, args, out) -> tuple[int, int]:
        self.field[id(out)] = self._inputs_field(args)
        return self.field[id(out)]

    def _record(self, op, name: str, args, out, prefix: str) -> None:
        rf, jump = self._inputs_field(args)
        type_name = type(op).__name__
        kernel = strides = None
        if hasattr(op, "kernel_size") and hasattr(op, "strides"):
            kernel, strides = _pair(op.kernel_size), _pair(op.strides)
            dilation = _pair(getattr(op, "dilation_rate", 1))
            if type_name == "Conv2DTranspose":
                jump = max(1, jump // strides[0])
                rf = rf + (kernel[0] - 1) * jump
            else:
                rf = rf + (kernel[0] - 1) * dilation[0] * jump
                jump = jump * strides[0]
        elif hasattr(op, "pool_size") and hasattr(op, "strides"):
            pool, stride = _pair(op.pool_size), _pair(op.strides or op.pool_size)
            rf, jump = rf + (pool[0] - 1) * jump, jump * stride[0]
        elif type_name.startswith("Global") or type_name in ("Flatten", "Dense"):
            rf = max(s or 0 for s in self.input_size) or rf
        for tensor in keras.tree.flatten(out):
            self.field[id(tensor)] = (rf, jump)
        if id(op) in self._seen:
            return  # a shared layer called again: keep the facts of its first call
        self._seen.add(id(op))
        first = keras.tree.flatten(out)[0]
        is_conv = type_name in CONV_TYPES
        self.tensors[name] = first
        self.layers.append(
            LayerFacts(
                name=name,
                type=type_name,
                output_shape=_shape(first),
                params=int(op.count_params()) if op.built else 0,
                is_conv=is_conv,
                channels=int(first.shape[-1]) if is_conv else None,
                kernel=kernel if is_conv else None,
                strides=strides if is_conv else None,
                receptive_field=rf if is_conv else None,
                jump=jump if is_conv else None,
                parent=prefix.rstrip("/") or None,
            )
        )


def flatten_model(model: keras.Model, free_size: bool = False) -> FlatGraph:
    """Re-trace ``model`` into one flat graph whose output is the pre-softmax logits.

    Args:
        model: a built Keras Functional or Sequential model with one image input.
        free_size: trace on an input of any height and width instead of the model's own.
            Tracing stops at the first layer that needs a fixed size (a Flatten before a
            Dense, say); the layers before it are in the graph, ``outputs`` is empty.

    Returns:
        The flat graph: fresh inputs, logits, each layer's output and facts.
    """
    try:
        has_inputs = bool(model.inputs)
    except AttributeError:  # a Sequential model never built raises instead of giving []
        has_inputs = False
    if not has_inputs:
        raise ValueError("the model has no inputs: build it on an input shape first")
    _strip_final_softmax(model)
    source = model.inputs[0]
    height, width = source.shape[1], source.shape[2]
    tracer = _Tracer((height, width))
    output_op = model.outputs[0]._keras_history.operation
    if isinstance(output_op, keras.layers.Softmax):
        tracer.final_softmax = output_op
    inputs = [keras.Input(shape=(None, None, t.shape[-1]) if free_size else tuple(t.shape[1:]),
                          dtype=t.dtype, name=t.name) for t in model.inputs]
    try:
        outputs = tracer.run(model, tuple(inputs), {}, prefix="")
    except Exception as error:  # noqa: BLE001 - any layer may refuse an unknown size
        if not free_size:
            raise
        log.debug("free-size trace stopped after %d layers: %s", len(tracer.layers), error)
        outputs = []
    return FlatGraph(
        inputs=inputs,
        outputs=keras.tree.flatten(outputs),
        tensors=tracer.tensors,
        layers=tracer.layers,
    )
