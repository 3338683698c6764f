"""lowloss from Python in one screen: two small networks trained by plain PyTorch on scikit-learn's digits,
connected by weight matching; the path's table, its worst point, the figure, and a network from the path.

    python examples/quickstart.py
"""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import lowloss


def digits() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(labels)
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def trained(seed: int, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(20):
        for index in torch.randperm(len(y)).split(64):
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def main() -> None:
    train, test = digits()
    model_a, model_b = trained(0, *train), trained(1, *train)
    result = lowloss.connect(model_a, model_b, "weight-matching", train=train, test=test)
    print(result.table.head())
    worst = result.worst["test"]
    print(f"worst test accuracy {worst['acc']:.3f} at position {worst['position']:.2f} of {len(result.path)}")
    result.save_figure("quickstart")  # quickstart.png and quickstart.svg
    halfway = result.model_at(len(result.path) / 2)  # an ordinary nn.Module
    print(f"halfway: test accuracy {(halfway(test[0]).argmax(1) == test[1]).float().mean():.3f}")


if __name__ == "__main__":
    main()
