"""Networks made ready to serve: batch norms folded into the convolutions before them, and
activations laid out channels-last.

At inference a batch norm is an affine map per channel, so the convolution before it can
absorb it: w' = w * g / sqrt(var + eps), b' = (b - mean) * g / sqrt(var + eps) + beta. With
channels-last on top, a query through the three EfficientNet-Lite0 trunks took 103 ms
instead of 126 on this CPU (models/RESULTS.md, "Inference speed"). Training never sees a
folded network: only `Pipeline.load` folds.
"""
from __future__ import annotations

import torch
from torch import nn

# (convolution, batch norm) attribute pairs applied back to back in a module's forward:
# EfficientNet-Lite0's blocks and stem/head, torchvision's BasicConv2d, ResCeption's shortcuts
PAIRS = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"),
         ("_conv_stem", "_bn0"), ("_conv_head", "_bn1"), ("conv", "bn"), ("proj", "bn"))


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)


def _pairs(root: nn.Module):
    for m in root.modules():
        for conv_name, bn_name in PAIRS:
            conv, bn = getattr(m, conv_name, None), getattr(m, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                yield conv, bn
        if isinstance(m, nn.Sequential):
            kids = list(m)
            for conv, bn in zip(kids, kids[1:]):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    yield conv, bn


def fold_batchnorm(root: nn.Module) -> int:
    """Folds every batch norm that directly follows a convolution into it, and puts an
    identity in its place everywhere it is referenced. Returns how many were folded.

    Only for a network in eval mode (its statistics frozen); the result computes the same
    function to float rounding, and is no longer trainable as it was.
    """
    if root.training:
        raise ValueError("fold_batchnorm needs a network in eval mode: training updates the statistics it folds")
    folded: dict[int, nn.BatchNorm2d] = {}
    for conv, bn in _pairs(root):
        if id(bn) not in folded and conv.out_channels == bn.num_features:
            _fold_into(conv, bn)
            folded[id(bn)] = bn
    for m in root.modules():
        for name, child in list(m._modules.items()):
            if id(child) in folded:
                m._modules[name] = nn.Identity()
    return len(folded)


def ready_to_serve(root: nn.Module) -> nn.Module:
    """eval, batch norms folded, 4-d weights channels-last (inputs follow them)."""
    root.eval()
    fold_batchnorm(root)
    return root.to(memory_format=torch.channels_last)
