"""A multinomial logistic-regression probe in numpy: how linearly separable are the features?

Features are standardised with the training split's statistics; the objective is the mean
cross-entropy plus (1 / n) * 0.5 * ||W||^2, the same weighting as scikit-learn's default
LogisticRegression (C = 1), so accuracies are comparable with published raw-pixel baselines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..base.errors import InvalidArgumentError


@dataclass
class LinearProbe:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # [D + 1, K], last row is the bias

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = (features.astype(np.float64) - self.mean) / self.scale
        return x @ self.weights[:-1] + self.weights[-1]

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(features), axis=1)

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        return float(np.mean(self.predict(features) == labels))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_probe(features: np.ndarray, labels: np.ndarray, *, iterations: int = 1000, lr: float = 0.05) -> LinearProbe:
    """Fit by full-batch Adam (deterministic: no data order, no random start)."""
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or len(features) != len(labels) or len(labels) < 2:
        raise InvalidArgumentError(f"probe needs features [N, D] and N labels, got {features.shape} and {labels.shape}")
    classes = int(labels.max()) + 1
    n, d = features.shape
    mean = features.mean(0)
    scale = features.std(0)
    scale[scale == 0] = 1.0
    x = np.hstack([(features - mean) / scale, np.ones((n, 1))])
    onehot = np.eye(classes)[labels]
    w = np.zeros((d + 1, classes))
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    reg = np.ones((d + 1, 1)) / n
    reg[-1] = 0.0  # the bias is not penalised
    b1, b2 = 0.9, 0.999
    for t in range(1, iterations + 1):
        grad = x.T @ (_softmax(x @ w) - onehot) / n + reg * w
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        step = lr * (0.5 * (1 + np.cos(np.pi * t / iterations)))  # cosine decay to a fine optimum
        w -= step * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + 1e-8)
    return LinearProbe(mean, scale, w)
