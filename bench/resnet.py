"""ResNet-18 written out with torchvision's layer names (torchvision does not import here).

The same modules and names as ``torchvision.models.resnet18(num_classes=…)``: a 7×7
stride-2 ``conv1``, ``bn1``, a 3×3 stride-2 max-pool, four stages ``layer1``–``layer4`` of
two ``BasicBlock``s each (``conv1``/``bn1``/``conv2``/``bn2``, and ``downsample.0``/``.1``
where the shape changes), global average pooling and ``fc``: 20 convolutions and one
linear layer, 21 layers for ``symtool align``. On CIFAR-sized 32×32 inputs the stages run
at 8×8, 4×4, 2×2 and 1×1, so layer3/layer4's im2col rows (``d_in = C·9`` up to 4608) are
fewer than their width: their moments are rank-deficient (docs/performance.md).
``width`` scales every channel count (64 for the real network; smaller for smoke runs).
"""

from __future__ import annotations

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and a residual connection."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 layout (``resnet18(num_classes=classes)``)."""

    def __init__(self, classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans = [width, 2 * width, 4 * width, 8 * width]
        inplanes = width
        for i, planes in enumerate(chans):
            stride = 1 if i == 0 else 2
            stage = nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes))
            setattr(self, f"layer{i + 1}", stage)
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(chans[-1], classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(classes: int = 10, width: int = 64) -> nn.Module:
    """The factory ``symtool align --model bench/resnet.py:resnet18`` calls."""
    return ResNet18(classes=classes, width=width)
