"""SLIC superpixels on the multispectral patch and their adjacency graph."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.errors import AttributionError


def slic_superpixels(
    x: torch.Tensor | np.ndarray, n_segments: int, compactness: float = 1.0
) -> np.ndarray:
    """SLIC on all bands of a patch.

    Args:
        x: ``(C, H, W)`` or ``(1, C, H, W)`` normalized patch (every band is used).
        n_segments: Requested segment count (SLIC may return a few more or fewer).
        compactness: Colour/space trade-off on standardized bands (higher = squarer).

    Returns:
        ``(H, W)`` int64 labels ``0..n-1``, consecutive, each segment connected. When SLIC
        returns fewer than ``max(2, n_segments // 4)`` segments (noise-like input, where the
        connectivity step merges fragments), a regular grid of about ``n_segments`` blocks.
    """
    from skimage.segmentation import slic

    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.ndim == 4:
        array = array[0]
    image = np.moveaxis(array.astype(np.float64), 0, -1)
    labels = slic(
        image,
        n_segments=n_segments,
        compactness=compactness,
        channel_axis=-1,
        start_label=0,
        convert2lab=False,
        enforce_connectivity=True,
    )
    labels = relabel(labels)
    if labels.max() + 1 < max(2, n_segments // 4):
        return grid_superpixels(image.shape[:2], n_segments)
    return labels


def grid_superpixels(shape: tuple[int, int], n_segments: int) -> np.ndarray:
    """Square blocks, about ``n_segments`` of them: the fallback when SLIC degenerates.

    Returns:
        ``(H, W)`` int64 labels ``0..n-1``.
    """
    h, w = shape
    per_side = max(1, round(float(np.sqrt(n_segments))))
    rows = np.minimum(np.arange(h) * per_side // h, per_side - 1)
    cols = np.minimum(np.arange(w) * per_side // w, per_side - 1)
    return relabel(rows[:, None] * per_side + cols[None, :])


def relabel(labels: np.ndarray) -> np.ndarray:
    """Map arbitrary integer labels to ``0..n-1`` in order of first appearance (int64)."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse].reshape(labels.shape).astype(np.int64)


def check_superpixels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Validate user-supplied superpixels and return them relabelled ``0..n-1``.

    Raises:
        AttributionError: wrong shape, not integers, or a single segment.
    """
    labels = np.asarray(labels)
    if labels.shape != tuple(shape) or not np.issubdtype(labels.dtype, np.integer):
        raise AttributionError(
            f"superpixels must be an integer array of shape {tuple(shape)} (the patch's H, W), "
            f"got {labels.dtype} {labels.shape}; pass labels from slic_superpixels(x, n)"
        )
    out = relabel(labels)
    if out.max() < 1:
        raise AttributionError(
            "superpixels hold a single segment: Shapley values over one "
            "player say nothing; use at least 2 segments"
        )
    return out


def adjacency(labels: np.ndarray) -> np.ndarray:
    """``(n, n)`` bool: segments sharing a 4-connected pixel edge (no self loops)."""
    n = int(labels.max()) + 1
    adj = np.zeros((n, n), dtype=bool)
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        edge = a != b
        adj[a[edge], b[edge]] = True
        adj[b[edge], a[edge]] = True
    return adj


def k_hop_neighbourhoods(adj: np.ndarray, k: int) -> list[np.ndarray]:
    """Sorted player ids within ``k`` hops of each player (the player included)."""
    n = len(adj)
    reach = np.eye(n, dtype=bool)
    step = adj | np.eye(n, dtype=bool)
    for _ in range(k):
        reach = (reach.astype(np.int64) @ step.astype(np.int64)) > 0
    return [np.flatnonzero(reach[i]) for i in range(n)]
