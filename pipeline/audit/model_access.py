"""The trained model as the audit uses it: frozen weights, input normalization, threshold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.paths import RunPaths


@dataclass(frozen=True)
class ModelAccess:
    """The model and its input normalization.

    Attributes:
        model: Emits logits ``(B, 1, H, W)`` from normalized input; parameters frozen.
        normalize: Stored DN ``(..., C, H, W)`` array -> normalized float tensor.
        threshold: Probability threshold of the predicted mask (0-1).
        bands: Band names the model expects, in order.
    """

    model: nn.Module
    normalize: Callable[[np.ndarray], torch.Tensor]
    threshold: float
    bands: tuple[str, ...]


def load_model_access(paths: RunPaths) -> ModelAccess:
    """Load the run's exported model (``train/model.pt``) with its gradients turned off.

    Raises:
        ModelError: the model file is missing or unreadable (from ``load_model``).
    """
    from pipeline.model.io import load_model, normalize

    model, meta = load_model(paths.model)
    for p in model.parameters():
        p.requires_grad_(False)
    return ModelAccess(model, lambda a: normalize(a, meta), meta.threshold, tuple(meta.bands))
