"""A small CNN with BatchNorm for Fashion-MNIST, written as any PyTorch user writes one (no lowloss in sight).

lowloss builds it from the reference `fashion_cnn:SmallCNN` (run from this folder, or with it on PYTHONPATH).
"""

import torch
import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    """conv 3×3 → BatchNorm → ReLU → max-pool, twice, then a linear classifier on the flattened features."""

    def __init__(self, width: int = 16, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width * 7 * 7, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(x.flatten(1))
