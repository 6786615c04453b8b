"""FedPer's networks and their split into base and personal parts.

Both networks are a chain of *units*: a stem, the basic blocks, and a
classifier unit (global pool + fully connected layer). FedPer's ``K_P``
(``model.num_head_layers``) counts personal units from the output: ``K_P = 1``
is the classifier only, ``K_P = 2`` adds the last basic block, and so on.

``small_cnn`` is a four-unit network for the offline quick-start on 8x8
digits (not a network of the paper); it has the same unit structure, so K_P
and the linear base apply to it unchanged. ``lenet`` is the shared protocol's
network (:class:`pflcore.local.models.LeNet`, five units; no linear base).

The ablation of the paper's Section 4.4 replaces every base unit by one
linear map (:func:`linearize_base`); the personal units stay exactly as they
are, under the same state-dict keys.
"""

from __future__ import annotations

import torch
from torch import nn

from pflcore.local.models import LeNet, UnitChain

MODEL_NAMES = ("mobilenet_v1", "resnet34", "small_cnn", "lenet")

# (in_channels, out_channels, stride) of MobileNet-v1's 13 depthwise-separable blocks.
_MOBILENET_BLOCKS = (
    (32, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, 256, 2),
    (256, 256, 1),
    (256, 512, 2),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 1024, 2),
    (1024, 1024, 1),
)


def _conv_bn(
    cin: int, cout: int, kernel: int, stride: int, groups: int = 1
) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class DepthwiseSeparable(nn.Sequential):
    """MobileNet-v1's basic block: depthwise 3x3 and pointwise 1x1, each + BN + ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(
            *_conv_bn(cin, cin, 3, stride, groups=cin), *_conv_bn(cin, cout, 1, 1)
        )


class Classifier(nn.Sequential):
    """Global average pooling, flatten, and the final linear layer."""

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(features, num_classes)
        )


class MobileNetV1(UnitChain):
    """MobileNet-v1 (Howard et al. 2017), width 1.0, adaptive pooling.

    Parameters
    ----------
    num_classes : int
        Output classes.
    in_channels : int
        Image channels.
    num_blocks : int
        13 for the standard network; 11 for the count the FedPer paper states
        (three instead of five 512->512 blocks). The last four units, which
        K_P <= 4 can make personal, are the same in both.
    """

    def __init__(
        self, num_classes: int, in_channels: int = 3, num_blocks: int = 13
    ) -> None:
        super().__init__()
        if num_blocks not in (11, 13):
            raise ValueError(
                f"MobileNet-v1 has 13 (standard) or 11 (paper) blocks, got {num_blocks}"
            )
        specs = (
            _MOBILENET_BLOCKS
            if num_blocks == 13
            else _MOBILENET_BLOCKS[:9] + _MOBILENET_BLOCKS[11:]
        )
        self.stem: nn.Module = nn.Sequential(*_conv_bn(in_channels, 32, 3, 2))
        self.blocks = nn.ModuleList(DepthwiseSeparable(*spec) for spec in specs)
        self.classifier = Classifier(1024, num_classes)

    def units(self) -> list[nn.Module]:
        """Stem, the basic blocks, and the classifier, in forward order."""
        return [self.stem, *self.blocks, self.classifier]

    def replace_base(self, first: nn.Module, num_head_units: int) -> None:
        """Put ``first`` in place of the stem and the other base units by identities.

        The unit chain keeps its length, so ``split_model`` and
        ``personal_keys`` cut it where they did.
        """
        self.stem = first
        for i in range(len(self.blocks) - (num_head_units - 1)):
            self.blocks[i] = nn.Identity()


class SmallCNN(UnitChain):
    """A small CNN for 8x8 digits: a stem, two blocks and the classifier.

    Not a network of the paper: it makes the offline quick-start learn in
    seconds. The stem is a 3x3 convolution (32 channels) and ReLU; each block
    a 3x3 convolution, ReLU and 2x2 max-pooling (64 channels; 8 -> 4 -> 2
    pixels); the classifier unit is the same as MobileNet-v1's (global average
    pooling and one linear layer).

    Parameters
    ----------
    num_classes : int
        Output classes.
    in_channels : int
        Image channels.
    width : int
        Channels of the blocks (the stem has half as many).
    """

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 64) -> None:
        super().__init__()
        stem_width = width // 2
        self.stem: nn.Module = nn.Sequential(
            nn.Conv2d(in_channels, stem_width, 3, 1, 1), nn.ReLU(inplace=True)
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(cin, width, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2)
            )
            for cin in (stem_width, width)
        )
        self.classifier = Classifier(width, num_classes)

    def units(self) -> list[nn.Module]:
        """Stem, the two blocks, and the classifier, in forward order."""
        return [self.stem, *self.blocks, self.classifier]

    def replace_base(self, first: nn.Module, num_head_units: int) -> None:
        """Put ``first`` in place of the stem and the other base units by identities."""
        self.stem = first
        for i in range(len(self.blocks) - (num_head_units - 1)):
            self.blocks[i] = nn.Identity()


class ResNet34(nn.Module):
    """torchvision's ResNet-34 (random init), seen as 16 basic blocks.

    Parameters
    ----------
    num_classes : int
        Output classes.
    in_channels : int
        Image channels (the stem convolution is rebuilt when not 3).
    """

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        import torchvision  # here: importing it costs seconds in every Ray worker

        super().__init__()
        self.net = torchvision.models.resnet34(weights=None, num_classes=num_classes)
        if in_channels != 3:
            self.net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)

    def units(self) -> list[nn.Module]:
        """Stem, the 16 BasicBlocks, and the classifier, in forward order.

        The units are views over ``self.net``'s modules; building them creates
        no parameters.
        """
        net = self.net
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        blocks = [
            b
            for layer in (net.layer1, net.layer2, net.layer3, net.layer4)
            for b in layer
        ]
        classifier = nn.Sequential(net.avgpool, nn.Flatten(), net.fc)
        return [stem, *blocks, classifier]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a normalised batch."""
        return self.net(x)

    def replace_base(self, first: nn.Module, num_head_units: int) -> None:
        """Put ``first`` in place of the stem and the other base units by identities.

        ``first`` takes the stem convolution's place (the stem's BatchNorm,
        ReLU and max-pool become identities); base BasicBlocks become
        identities inside their stages, so the unit chain keeps its length.
        """
        net = self.net
        setattr(net, "conv1", first)  # noqa: B010  (torchvision types it Conv2d)
        for name in ("bn1", "relu", "maxpool"):
            setattr(net, name, nn.Identity())
        slots = [
            (layer, i)
            for layer in (net.layer1, net.layer2, net.layer3, net.layer4)
            for i in range(len(layer))
        ]
        for layer, i in slots[: len(slots) - (num_head_units - 1)]:
            layer[i] = nn.Identity()


FedPerNetwork = MobileNetV1 | ResNet34 | SmallCNN | LeNet


def build_model(
    name: str,
    num_classes: int,
    in_channels: int,
    num_blocks: int | None = None,
    image_size: int = 32,
) -> FedPerNetwork:
    """Build one of FedPer's networks by name.

    ``num_blocks`` applies to MobileNet-v1 only; ``None`` keeps its default.
    ``image_size`` sizes the shared protocol's ``lenet`` (the others pool
    globally).
    """
    if name == "mobilenet_v1":
        if num_blocks is None:
            return MobileNetV1(num_classes, in_channels)
        return MobileNetV1(num_classes, in_channels, num_blocks)
    if name == "resnet34":
        return ResNet34(num_classes, in_channels)
    if name == "small_cnn":
        return SmallCNN(num_classes, in_channels)
    if name == "lenet":
        return LeNet(num_classes, in_channels, image_size)
    raise ValueError(f"unknown model {name!r}; choose one of {MODEL_NAMES}")


class LinearBase(nn.Module):
    """One activation-free, bias-free linear map standing in for FedPer's base.

    Parameters
    ----------
    in_shape : tuple of int
        ``(C, H, W)`` of the (normalised) input image.
    out_shape : tuple of int
        ``(C', H', W')`` the personal units expect.
    dense : bool
        ``True``: a fully connected ``Linear`` from the flattened image to
        ``C'`` features, shaped ``(C', 1, 1)`` (then ``H' = W' = 1``).
        ``False``: a convolution with kernel = stride = the base's
        downsampling factor, zero-padded so that it yields exactly
        ``(C', H', W')`` at ``in_shape``.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_shape: tuple[int, int, int],
        dense: bool,
    ) -> None:
        super().__init__()
        self.in_shape, self.out_shape, self.dense = in_shape, out_shape, dense
        cin, h, w = in_shape
        cout, ho, wo = out_shape
        if dense:
            if (ho, wo) != (1, 1):
                raise ValueError(
                    f"a dense linear base outputs (C, 1, 1), not {out_shape}"
                )
            self.kernel = self.padding = (0, 0)
            self.map: nn.Module = nn.Linear(cin * h * w, cout, bias=False)
        else:
            # kernel = stride = f with f * out >= in; pad the shortfall (< f).
            fh, fw = -(-h // ho), -(-w // wo)
            self.kernel = (fh, fw)
            self.padding = (-(-(fh * ho - h) // 2), -(-(fw * wo - w) // 2))
            self.map = nn.Conv2d(
                cin, cout, self.kernel, self.kernel, self.padding, bias=False
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a normalised image batch to the personal units' input."""
        if self.dense:
            if tuple(x.shape[1:]) != self.in_shape:
                raise ValueError(
                    f"this linear base was built for inputs {self.in_shape}, got "
                    f"{tuple(x.shape[1:])}"
                )
            return self.map(x.flatten(1)).view(-1, self.out_shape[0], 1, 1)
        return self.map(x)

    def describe(self) -> dict[str, object]:
        """What was built, for the run record."""
        return {
            "form": "dense" if self.dense else "conv",
            "in_shape": list(self.in_shape),
            "out_shape": list(self.out_shape),
            "kernel_stride": list(self.kernel),
            "padding": list(self.padding),
            "parameters": sum(p.numel() for p in self.parameters()),
        }


def linearize_base(
    model: FedPerNetwork,
    num_head_units: int,
    in_channels: int,
    image_size: int,
) -> LinearBase:
    """Replace the base of ``model`` (in place) by one linear map (paper Sec. 4.4).

    The personal units (the last ``num_head_units``) are untouched: same
    modules, state-dict keys and shapes as in the full network.

    * ``num_head_units = 1``: a dense ``Linear`` from the flattened image to
      the classifier's input width (1024 for MobileNet-v1, 512 for ResNet-34).
    * ``num_head_units >= 2``: a convolution with kernel = stride = the base's
      downsampling factor, yielding exactly the shape the first personal block
      receives in the full network at ``image_size`` (found by passing a
      dummy image through the original base).

    Parameters
    ----------
    model : MobileNetV1, ResNet34 or SmallCNN
        The full network; modified in place.
    num_head_units : int
        K_P, at least 1.
    in_channels : int
        Image channels.
    image_size : int
        Side of the (resized) images the model will see.

    Returns
    -------
    LinearBase
        The map now in the model.

    Raises
    ------
    ValueError
        For ``lenet`` (the ablation is of the paper's networks) or K_P < 1.
    """
    if isinstance(model, LeNet):
        raise ValueError("model.linear_base does not apply to model=lenet")
    if num_head_units < 1:
        raise ValueError(f"a linear base needs K_P >= 1, got {num_head_units}")
    base, head = split_model(model, num_head_units)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = base(torch.zeros(1, in_channels, image_size, image_size))
    model.train(was_training)
    in_shape = (in_channels, image_size, image_size)
    if num_head_units == 1:
        fc = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
        linear = LinearBase(in_shape, (fc.in_features, 1, 1), dense=True)
    else:
        c, h, w = (int(v) for v in out.shape[1:])
        linear = LinearBase(in_shape, (c, h, w), dense=False)
    with torch.no_grad():
        got = tuple(linear(torch.zeros(1, *in_shape)).shape[1:])
    if got != linear.out_shape:  # the padding rule guarantees it; kept as a guard
        raise ValueError(
            f"linear base yields {got}, the head expects {linear.out_shape}"
        )
    model.replace_base(linear, num_head_units)
    return linear


def find_linear_base(model: nn.Module) -> LinearBase | None:
    """The model's linear base, or ``None`` for a full network."""
    return next((m for m in model.modules() if isinstance(m, LinearBase)), None)


def split_model(
    model: FedPerNetwork, num_head_units: int
) -> tuple[nn.Sequential, nn.Sequential]:
    """Split a network into (base, head) sharing the network's modules.

    ``head(base(x))`` computes ``model(x)``. ``num_head_units = 0`` gives an
    empty head (FedAvg).
    """
    units = model.units()
    if not 0 <= num_head_units < len(units):
        raise ValueError(
            f"num_head_layers must lie in 0..{len(units) - 1} for this model, "
            f"got {num_head_units}"
        )
    cut = len(units) - num_head_units
    return nn.Sequential(*units[:cut]), nn.Sequential(*units[cut:])


def keys_of(model: nn.Module, part: nn.Module) -> list[str]:
    """State-dict keys of ``model`` whose tensors belong to the submodule ``part``."""
    ids = {id(t) for t in part.state_dict(keep_vars=True).values()}
    return [k for k, t in model.state_dict(keep_vars=True).items() if id(t) in ids]


def personal_keys(
    model: FedPerNetwork,
    algorithm: str,
    num_head_layers: int,
    base_buffers: str,
) -> list[str]:
    """State-dict keys a client keeps to itself.

    Parameters
    ----------
    model : MobileNetV1, ResNet34 or SmallCNN
        The network.
    algorithm : str
        ``fedper`` (the last ``num_head_layers`` units), ``fedavg`` (none) or
        ``local`` (everything).
    num_head_layers : int
        FedPer's K_P.
    base_buffers : str
        ``aggregate`` (BatchNorm statistics of the base are averaged, Flower's
        behaviour) or ``local`` (each client keeps its own).

    Returns
    -------
    list of str
        Personal keys in state-dict order.
    """
    all_keys = list(model.state_dict().keys())
    if algorithm == "local":
        return all_keys
    head_units = num_head_layers if algorithm == "fedper" else 0
    base, head = split_model(model, head_units)
    personal = set(keys_of(model, head))
    if base_buffers == "local":
        buffer_ids = {id(b) for b in base.buffers()}
        personal |= {
            k
            for k, t in model.state_dict(keep_vars=True).items()
            if id(t) in buffer_ids
        }
    elif base_buffers != "aggregate":
        raise ValueError(
            f"model.base_buffers must be aggregate or local, got {base_buffers!r}"
        )
    return [k for k in all_keys if k in personal]
