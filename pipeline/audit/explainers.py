"""The one integration point between the audit and the attribution methods.

The audit re-runs attribution methods (on randomized models, on perturbed inputs). It calls an
:data:`ExplainFn`; :func:`make_explainer` returns one backed by
``pipeline.attribution.methods.explain`` (the product's methods) and, only when that module is
not installed, by :func:`captum_explain`, a minimal local implementation of the gradient methods
(logged as a warning, so the fallback is never silent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, Saliency
from torch import nn

from pipeline.attribution.targets import Target, TargetForward
from pipeline.audit.model_access import ModelAccess
from pipeline.config.attribute import AttributeConfig
from pipeline.config.audit import AuditConfig
from pipeline.errors import AuditError

log = logging.getLogger(__name__)

#: ``(method, model, x (1, C, H, W) normalized, target, seed) -> values (C, H, W)`` float32.
ExplainFn = Callable[[str, nn.Module, torch.Tensor, Target, int], np.ndarray]


@dataclass(frozen=True)
class CheckSetup:
    """What the explanation checks (sanity, faithfulness) work with.

    Attributes:
        access: The trained model.
        explain: How to explain it (:func:`make_explainer`).
        audit: The checks' settings.
        seed: Seed of every method and perturbation.
    """

    access: ModelAccess
    explain: ExplainFn
    audit: AuditConfig
    seed: int


LOCAL_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "guided_backprop")


def captum_explain(
    method: str,
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    seed: int,
    *,
    ig_steps: int = 16,
    batch_size: int = 16,
) -> np.ndarray:
    """Gradient methods via captum directly (zeros baseline for IG, in normalized space).

    Raises:
        AuditError: ``method`` is not one of :data:`LOCAL_METHODS`.
    """
    forward = TargetForward(model, target).to(x.device)
    x = x.detach().clone().requires_grad_(True)
    torch.manual_seed(seed)
    if method == "saliency":
        attr = Saliency(forward).attribute(x, abs=True)
    elif method == "input_x_gradient":
        attr = InputXGradient(forward).attribute(x)
    elif method == "integrated_gradients":
        attr = IntegratedGradients(forward).attribute(
            x, baselines=torch.zeros_like(x), n_steps=ig_steps, internal_batch_size=batch_size
        )
    elif method == "guided_backprop":
        attr = GuidedBackprop(forward).attribute(x)
    else:
        raise AuditError(
            f"method {method!r} needs pipeline.attribution.methods, which is not "
            f"installed; the audit's local fallback has only {LOCAL_METHODS}"
        )
    return attr.detach()[0].cpu().numpy().astype(np.float32)


def _product_explain(acfg: AttributeConfig) -> ExplainFn | None:
    try:
        from pipeline.attribution import methods
    except ImportError:
        return None
    explain: Any = getattr(methods, "explain", None)
    if explain is None:
        return None

    def _run(
        method: str, model: nn.Module, x: torch.Tensor, target: Target, seed: int
    ) -> np.ndarray:
        result = explain(method, model, x, target, acfg, seed=seed)
        values = result.values
        values = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values
        values = np.asarray(values, dtype=np.float32)
        return values[0] if values.ndim == 4 else values

    return _run


def make_explainer(acfg: AttributeConfig, *, ig_steps: int) -> ExplainFn:
    """An :data:`ExplainFn` using the product's methods with ``ig_steps`` IG steps.

    Falls back to :func:`captum_explain` (with a warning) when
    ``pipeline.attribution.methods`` is absent.
    """
    acfg = acfg.model_copy(update={"ig_steps": ig_steps})
    product = _product_explain(acfg)
    if product is not None:
        return product
    log.warning(
        "pipeline.attribution.methods is not available; the audit's checks use its "
        "local captum fallback (%s)",
        ", ".join(LOCAL_METHODS),
    )

    def _local(
        method: str, model: nn.Module, x: torch.Tensor, target: Target, seed: int
    ) -> np.ndarray:
        return captum_explain(
            method, model, x, target, seed, ig_steps=ig_steps, batch_size=acfg.batch_size
        )

    return _local
