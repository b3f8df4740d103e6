"""Train the emoji classifier whose penultimate features define the emoji model's Fréchet
distance (`benchmarks/fid/frechet.py`), and write it as emoji-classifier.onnx beside this file.

    scripts/emoji-data                                      # data/emoji, once
    python benchmarks/fid/train_emoji_classifier.py [data/emoji] [EPOCHS]   # needs the train extra

Run once; the ONNX file is committed so every measurement uses the same features. It learns
the 9 categories of the image folder (its sub-folders) from the same training split as the
emoji VAE (`split_indices`, seed 0, 1/12 held out) and never sees a generated image; the
held-out accuracy it prints is on the VAE's validation images.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vaesdk.evaluation.datasets import load_image_folder
from vaesdk.training.data import split_indices

HERE = Path(__file__).parent
OUT = HERE / "emoji-classifier.onnx"
FEATURES = 128


class EmojiClassifier(nn.Module):
    """x [N, 3, 64, 64] in [0, 1] -> (logits [N, classes], features [N, 128])."""

    def __init__(self, classes: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in ((3, 32), (32, 64), (64, 128), (128, 128)))
        self.fc = nn.Linear(128 * 4 * 4, FEATURES)
        self.head = nn.Linear(FEATURES, classes)

    def forward(self, x):
        h = x
        for conv in self.convs:  # 64 -> 32 -> 16 -> 8 -> 4
            h = F.max_pool2d(F.relu(conv(h)), 2)
        features = F.relu(self.fc(h.flatten(1)))
        return self.head(features), features


def main(folder: str = "data/emoji", epochs: int = 12) -> None:
    torch.manual_seed(0)
    data = load_image_folder(folder, 64, 3)
    x_all = torch.from_numpy(data.images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    y_all = torch.from_numpy(data.labels.astype(np.int64))
    train_idx, val_idx = split_indices(len(x_all), 1 / 12, 0)
    x, y, xv, yv = x_all[train_idx], y_all[train_idx], x_all[val_idx], y_all[val_idx]
    model = EmojiClassifier(len(data.class_names))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = order[i : i + 64]
            batch = x[idx]
            flip = torch.rand(len(idx)) < 0.5  # mirrored emoji keep their category
            batch[flip] = batch[flip].flip(-1)
            loss = F.cross_entropy(model(batch)[0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xv)[0].argmax(1) == yv).float().mean().item()
        model.train()
        print(f"epoch {epoch + 1}: held-out accuracy {acc:.4f}", flush=True)
    model.eval()
    torch.onnx.export(
        model, (torch.rand(2, 3, 64, 64),), str(OUT), input_names=["x"], output_names=["logits", "features"],
        dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}, "features": {0: "N"}}, opset_version=18, dynamo=False,
    )  # fmt: skip
    print(f"wrote {OUT} ({len(data.class_names)} classes {', '.join(data.class_names)}; held-out accuracy {acc:.4f})")


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["data/emoji"]), *(int(a) for a in sys.argv[2:3]))
