"""What the site shows about each operation of a flattened model (no tracing here)."""

from __future__ import annotations

from dataclasses import dataclass

# Share of the gradient redirected through a unit's pre-activation during gradient ascent
# (FlatGraph.ascent_model); part of every unit's cache key.
REDIRECT = 0.1
CONV_TYPES = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose")
# Layers and keras.ops nodes that count as a conv's activation when they directly follow it.
ACTIVATION_KINDS = (
    "Activation",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "PReLU",
    "Relu",
    "Relu6",
    "Sigmoid",
    "Silu",
    "Swish",
    "HardSilu",
    "HardSwish",
    "Gelu",
    "Tanh",
    "Elu",
    "LeakyRelu",
    "HardSigmoid",
    "Softplus",
    "Selu",
    "Mish",
)


class GraphError(ValueError):
    """The model's graph cannot be walked (the message names the model and the node)."""


@dataclass(frozen=True)
class LayerFacts:
    """What the site shows about one operation of the flattened model.

    ``receptive_field`` is the side, in input pixels, of the input window that can
    influence one output position; ``jump`` is the distance in input pixels between two
    neighbouring output positions (the product of the strides so far). For a conv layer,
    ``read_at`` names the operation whose output its units are read at (itself, or the
    BatchNorm/activation after it, listed in ``read_ops``), ``address`` is that tensor's
    content address and ``negative_scale`` counts channels whose BatchNorm scale is
    negative.
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
    read_at: str | None = None
    read_ops: tuple[str, ...] = ()
    negative_scale: int | None = None
    address: str | None = None
    pre_activation: str | None = None  # the activation's input, when read after one

    @property
    def local_name(self) -> str:
        """The name inside its own (possibly nested) model."""
        return self.name.rsplit("/", 1)[-1]

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
            "read_at": self.read_at,
            "read_ops": list(self.read_ops),
            "negative_scale": self.negative_scale,
            "address": self.address,
            "pre_activation": self.pre_activation,
        }


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def field_after(
    op, kind: str, inputs: list[tuple[int, int]], input_size: tuple[int | None, int | None]
) -> tuple[int, int]:
    """Receptive field and jump of an operation's output, from those of its inputs."""
    rf = max((f[0] for f in inputs), default=1)
    jump = max((f[1] for f in inputs), default=1)
    if hasattr(op, "kernel_size") and hasattr(op, "strides"):
        kernel, strides = _pair(op.kernel_size), _pair(op.strides)
        if kind == "Conv2DTranspose":
            jump = max(1, jump // strides[0])
            return rf + (kernel[0] - 1) * jump, jump
        dilation = _pair(getattr(op, "dilation_rate", 1))
        return rf + (kernel[0] - 1) * dilation[0] * jump, jump * strides[0]
    if hasattr(op, "pool_size") and hasattr(op, "strides"):
        pool, stride = _pair(op.pool_size), _pair(op.strides or op.pool_size)
        return rf + (pool[0] - 1) * jump, jump * stride[0]
    if kind.startswith("Global") or kind in ("Flatten", "Dense"):
        return max(s or 0 for s in input_size) or rf, jump
    return rf, jump


def layer_facts(
    name: str,
    op,
    kind: str,
    output,
    rf_jump: tuple[int, int],
    *,
    is_conv: bool,
    read_at: str,
    read_ops: tuple[str, ...],
    negative_scale: int | None,
    address: str | None,
    pre_activation: str | None = None,
) -> LayerFacts:
    """Facts of one traced operation (layers and ``keras.ops`` nodes alike)."""
    shape = tuple(None if d is None else int(d) for d in output.shape)
    built = getattr(op, "built", False)  # keras.ops nodes are not layers: no weights
    params = int(op.count_params()) if built and hasattr(op, "count_params") else 0
    parent = name.rsplit("/", 1)[0] if "/" in name else None
    if not is_conv:
        return LayerFacts(
            name=name, type=kind, output_shape=shape, params=params, is_conv=False, parent=parent
        )
    return LayerFacts(
        name=name,
        type=kind,
        output_shape=shape,
        params=params,
        is_conv=True,
        channels=int(shape[-1]),
        kernel=_pair(op.kernel_size),
        strides=_pair(op.strides),
        receptive_field=rf_jump[0],
        jump=rf_jump[1],
        parent=parent,
        read_at=read_at,
        read_ops=read_ops,
        negative_scale=negative_scale,
        address=address,
        pre_activation=pre_activation,
    )
