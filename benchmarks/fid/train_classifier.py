"""Train the Fashion-MNIST classifier whose penultimate features define the Fréchet distance
(`benchmarks/fid/frechet.py`), and write it as classifier.onnx beside this file.

    python benchmarks/fid/train_classifier.py          # needs the train extra; ~3 minutes on 2 CPU cores

Run once; the ONNX file is committed so every measurement uses the same features. The
classifier is independent of every VAE it judges: trained on the 60,000 training images with
labels, it never sees a generated image.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vaesdk.evaluation.datasets import DEFAULT_FASHION_MNIST_DIR, load_fashion_mnist

HERE = Path(__file__).parent
OUT = HERE / "classifier.onnx"
FEATURES = 128


class Classifier(nn.Module):
    """x [N, 1, 28, 28] in [0, 1] -> (logits [N, 10], features [N, 128])."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 7 * 7, FEATURES)
        self.head = nn.Linear(FEATURES, 10)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        features = F.relu(self.fc(h.flatten(1)))
        return self.head(features), features


def main(epochs: int = 4) -> None:
    torch.manual_seed(0)
    train = load_fashion_mnist(DEFAULT_FASHION_MNIST_DIR, "train")
    test = load_fashion_mnist(DEFAULT_FASHION_MNIST_DIR, "test")
    x = torch.from_numpy(train.images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    y = torch.from_numpy(train.labels.astype(np.int64))
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            idx = order[i : i + 128]
            loss = F.cross_entropy(model(x[idx])[0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            xt = torch.from_numpy(test.images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
            acc = (model(xt)[0].argmax(1).numpy() == test.labels).mean()
        model.train()
        print(f"epoch {epoch + 1}: test accuracy {acc:.4f}", flush=True)
    model.eval()
    torch.onnx.export(
        model, (torch.rand(2, 1, 28, 28),), str(OUT), input_names=["x"], output_names=["logits", "features"],
        dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}, "features": {0: "N"}}, opset_version=18, dynamo=False,
    )  # fmt: skip
    print(f"wrote {OUT} (test accuracy {acc:.4f})")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
