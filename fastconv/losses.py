"""Softmax and the softmax cross-entropy loss, fused and numerically stable.

Both subtract each row's maximum before exponentiating (the log-sum-exp
trick), so logits of any size give finite results.
"""
from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from logits (N, K), row by row; same dtype."""
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"softmax: logits must be 2-D (N, K), got shape {logits.shape}")
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    exp /= exp.sum(axis=1, keepdims=True)
    return exp


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against integer labels, and its
    gradient with respect to the logits.

    logits: (N, K) float; labels: (N,) integers in [0, K).
    Returns (loss, dlogits) with dlogits (N, K) = (softmax(logits) - onehot) / N
    in the logits' dtype.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"softmax_cross_entropy: logits must be (N, K) with N >= 1, got shape {logits.shape}")
    n, k = logits.shape
    if labels.shape != (n,):
        raise ValueError(
            f"softmax_cross_entropy: labels must have shape ({n},) to match logits {logits.shape}, "
            f"got {labels.shape}"
        )
    if labels.dtype.kind not in "iu":
        raise TypeError(f"softmax_cross_entropy: labels must be integers, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(
            f"softmax_cross_entropy: labels must lie in [0, {k}), got range "
            f"[{labels.min()}, {labels.max()}]"
        )
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1)
    # -log softmax at the label = log(sum exp(shifted)) - shifted[label]
    loss = float(np.mean(np.log(sum_exp) - shifted[rows, labels]))
    dlogits = exp
    dlogits /= sum_exp[:, None]
    dlogits[rows, labels] -= 1
    dlogits /= n
    return loss, dlogits
