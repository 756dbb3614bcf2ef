"""Scalar targets of a per-pixel model: the mask is frozen from the unperturbed input.

Captum explains scalar outputs; a U-Net emits a logit per pixel. A :class:`Target` fixes a
region (a boolean mask on the patch grid) computed once, and :class:`TargetForward` reduces the
model's logits over that region for any (perturbed) input. The region never moves with the
perturbation, so every method explains the same quantity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from pipeline.errors import AttributionError

Reduce = Literal["sum", "mean"]


@dataclass(frozen=True)
class Target:
    """What is explained.

    Attributes:
        name: Target kind (``predicted_mask``, ``patch``, ``predicted_farms``, ``label_farms``,
            ``false_positives``, ``missed_farms``, ``polygon``).
        target_id: Object id within the patch (farm id, prediction id) or ``""`` for patch-level.
        mask: ``(H, W)`` bool tensor of the pixels whose logits are reduced.
        reduce: ``sum`` of logits (mask targets) or ``mean`` (whole patch).
    """

    name: str
    target_id: str
    mask: torch.Tensor
    reduce: Reduce = "sum"

    def __post_init__(self) -> None:
        if self.mask.ndim != 2 or self.mask.dtype != torch.bool:
            raise AttributionError(
                f"target {self.name}/{self.target_id}: mask must be a 2-D bool "
                f"tensor, got {tuple(self.mask.shape)} {self.mask.dtype}"
            )
        if not bool(self.mask.any()):
            raise AttributionError(
                f"target {self.name}/{self.target_id} has an empty mask: "
                "nothing to explain. It is skipped; pick another target"
            )


class TargetForward(nn.Module):
    """``x (B, C, H, W) -> (B,)``: the model's logits reduced over a frozen target mask."""

    weights: torch.Tensor

    def __init__(self, model: nn.Module, target: Target) -> None:
        super().__init__()
        self.model = model
        self.reduce: Reduce = target.reduce
        self.register_buffer("weights", target.mask.to(torch.float32)[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        weights = self.weights.to(logits.dtype)
        total = (logits * weights).flatten(1).sum(1)
        if self.reduce == "mean":
            return total / weights.sum()
        return total


def target_score(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """The target's scalar value for each input in ``x`` (no gradient)."""
    with torch.no_grad():
        return TargetForward(model, target).to(x.device)(x)


def predicted_mask_target(model: nn.Module, x: torch.Tensor, threshold: float) -> Target:
    """Sum of logits over the mask the model predicts on the unperturbed ``x`` (1, C, H, W)."""
    with torch.no_grad():
        prob = torch.sigmoid(model(x))[0, 0]
    return Target("predicted_mask", "", (prob >= threshold).cpu())


def patch_target(height: int, width: int) -> Target:
    """Mean logit over the whole patch."""
    return Target("patch", "", torch.ones(height, width, dtype=torch.bool), reduce="mean")
