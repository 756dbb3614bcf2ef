"""Faithfulness of attribution maps: deletion/insertion curves, infidelity, max-sensitivity.

Deletion: replace the top-attributed superpixels with a baseline, most important first, and
track the target's mean probability; a faithful map makes it fall fast (low AUC). Insertion:
start from the baseline and restore them; a faithful map makes it rise fast (high AUC).
Curves use SLIC superpixels of the multispectral input; the x axis is the fraction of
superpixels changed (0-1), so AUCs are in probability units (0-1).
:func:`run_faithfulness` scores each method on each check case (``audit/faithfulness.csv``,
:data:`FAITHFULNESS_COLUMNS`, and the curves of ``faithfulness_curves.json``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from captum.metrics import infidelity, sensitivity_max
from skimage.segmentation import slic
from torch import nn

from pipeline.attribution.targets import Target, TargetForward
from pipeline.audit.explainers import CheckSetup
from pipeline.audit.sanity import Case
from pipeline.tables import Columns

#: Columns of ``audit/faithfulness.csv`` (a method that failed has only the first four).
FAITHFULNESS_COLUMNS = Columns(
    ("patch_id", "the patch scored"),
    ("method", "attribution method"),
    ("status", "ok or failed"),
    ("reason", "why it failed"),
    (
        "deletion_auc",
        "area under the target's mean probability as the most attributed superpixels are "
        "removed first (lower is better: the map found what matters)",
    ),
    (
        "insertion_auc",
        "area under the same curve as they are restored first into a blurred patch (higher "
        "is better)",
    ),
    (
        "infidelity",
        "captum infidelity: error of the map under small perturbations (lower is better)",
    ),
    ("sensitivity_max", "captum max-sensitivity: how much the map changes (lower is better)"),
    ("n_superpixels", "SLIC superpixels the curves remove or restore"),
)


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve.

    Attributes:
        fractions: ``(S,)`` fraction of superpixels removed/restored, 0..1.
        probs: ``(S,)`` target mean probability at each point.
        auc: Trapezoidal area under ``probs`` over ``fractions``.
    """

    fractions: np.ndarray
    probs: np.ndarray
    auc: float


def superpixels(x: np.ndarray, n_segments: int, compactness: float = 1.0) -> np.ndarray:
    """SLIC segments of a ``(C, H, W)`` multispectral array (each band min-max scaled).

    Returns:
        ``(H, W)`` int labels starting at 0.
    """
    lo = x.min(axis=(1, 2), keepdims=True)
    span = np.maximum(x.max(axis=(1, 2), keepdims=True) - lo, 1e-12)
    scaled = ((x - lo) / span).astype(np.float64)
    return slic(
        scaled,
        n_segments=n_segments,
        compactness=compactness,
        channel_axis=0,
        start_label=0,
        convert2lab=False,
    ).astype(np.int64)


def rank_segments(attr_map: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Segment ids by mean attribution, highest first (``attr_map`` (H, W), signed)."""
    ids = np.unique(segments)
    means = np.array([np.nan_to_num(attr_map[segments == i]).mean() for i in ids])
    return ids[np.argsort(-means, kind="stable")]


def mean_prob_fn(model: nn.Module, target: Target) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x (B, C, H, W) -> (B,)`` mean sigmoid probability over the target's frozen mask."""
    weights = target.mask.to(torch.float32)

    def _fn(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            prob = torch.sigmoid(model(x)[:, 0])
        w = weights.to(prob.device)
        return (prob * w).flatten(1).sum(1) / w.sum()

    return _fn


def perturbation_curve(
    score: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    baseline: torch.Tensor,
    segments: np.ndarray,
    order: np.ndarray,
    *,
    steps: int,
    mode: str,
    batch_size: int = 8,
) -> Curve:
    """Deletion (``mode="deletion"``) or insertion curve.

    Args:
        score: Batched scalar score (e.g. :func:`mean_prob_fn`).
        x: ``(1, C, H, W)`` normalized input.
        baseline: ``(1, C, H, W)`` what a removed superpixel becomes.
        segments: ``(H, W)`` superpixel labels.
        order: Segment ids, most important first (:func:`rank_segments`).
        steps: Points on the curve (including 0 and all).
        mode: ``deletion`` or ``insertion``.
        batch_size: Inputs scored per forward pass.
    """
    counts = np.unique(np.linspace(0, len(order), steps).round().astype(int))
    seg = torch.as_tensor(segments, device=x.device)
    inputs = []
    for k in counts:
        changed = torch.isin(seg, torch.as_tensor(order[:k], device=x.device))[None, None]
        if mode == "deletion":
            inputs.append(torch.where(changed, baseline, x))
        else:
            inputs.append(torch.where(changed, x, baseline))
    probs = (
        torch.cat(
            [
                score(torch.cat(inputs[i : i + batch_size]))
                for i in range(0, len(inputs), batch_size)
            ]
        )
        .cpu()
        .numpy()
    )
    fractions = counts / max(len(order), 1)
    return Curve(fractions, probs, float(np.trapezoid(probs, fractions)))


def infidelity_score(
    model: nn.Module,
    target: Target,
    x: torch.Tensor,
    attr: torch.Tensor,
    *,
    n_samples: int,
    noise_std: float = 0.1,
    seed: int = 0,
) -> float:
    """captum ``infidelity`` with Gaussian perturbations (normalized units), attributions rescaled.

    Args:
        x: ``(1, C, H, W)`` normalized input.
        attr: ``(1, C, H, W)`` attribution of the target score.
    """
    gen = torch.Generator(device=x.device).manual_seed(seed)

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(inputs.shape, generator=gen, device=inputs.device) * noise_std
        return noise, inputs - noise

    forward = TargetForward(model, target).to(x.device)
    with torch.no_grad():
        value = infidelity(
            forward,
            perturb,
            x,
            attr,
            n_perturb_samples=n_samples,
            max_examples_per_batch=n_samples,
            normalize=True,
        )
    return float(value[0])


def sensitivity_score(
    explain: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    n_samples: int,
    radius: float = 0.02,
    seed: int = 0,
) -> float:
    """captum ``sensitivity_max``: largest change of the explanation under small L-inf noise.

    Args:
        explain: ``x (B, C, H, W) -> (B, C, H, W)`` attributions.
        x: ``(1, C, H, W)`` normalized input.
        radius: Uniform perturbation radius (normalized units).
    """

    def _explain(
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if isinstance(inputs, tuple):  # captum passes tuples and expects tuples back
            return (explain(inputs[0]),)
        return explain(inputs)

    torch.manual_seed(seed)
    value = sensitivity_max(
        _explain,
        x,
        perturb_radius=radius,
        n_perturb_samples=n_samples,
        max_examples_per_batch=n_samples,
    )
    return float(value[0])


# ------------------------------------------------------------------------ the faithfulness pass
def batch_explainer(
    setup: CheckSetup, method: str, target: Target
) -> Callable[[torch.Tensor | tuple[torch.Tensor, ...]], torch.Tensor]:
    """``x (B, C, H, W) -> (B, C, H, W)`` attributions of ``method``, one input at a time."""

    def _explain(xb: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        xb = xb[0] if isinstance(xb, tuple) else xb  # captum may pass a tuple
        model = setup.access.model
        return torch.stack(
            [
                torch.from_numpy(setup.explain(method, model, xi[None], target, setup.seed))
                for xi in xb
            ]
        )

    return _explain


def deletion_insertion(
    case: Case, values: np.ndarray, segments: np.ndarray, steps: int, model: nn.Module
) -> tuple[Curve, Curve, int]:
    """Deletion and insertion curves of one map (zeros baseline, superpixels by mean map).

    Args:
        case: The normalized crop ``(1, C, H, W)`` and its frozen target.
        values: ``(C, H, W)`` attribution of the crop.
        segments: ``(H, W)`` superpixels of the crop.
        steps: Points per curve.
        model: The model scored.

    Returns:
        ``(deletion, insertion, number of superpixels)``.
    """
    order = rank_segments(values.sum(axis=0), segments)
    score, baseline = mean_prob_fn(model, case.target), torch.zeros_like(case.x)
    deletion, insertion = (
        perturbation_curve(score, case.x, baseline, segments, order, steps=steps, mode=mode)
        for mode in ("deletion", "insertion")
    )
    return deletion, insertion, len(order)


def method_faithfulness(
    case: Case, method: str, segments: np.ndarray, setup: CheckSetup
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One method's faithfulness row and curves on one case.

    Args:
        case: The normalized crop ``(1, C, H, W)`` and its frozen target.
        method: Attribution method.
        segments: ``(H, W)`` superpixels of the crop (:func:`superpixels`).
        setup: Model, explainer, settings and seed.

    Returns:
        ``(row, curves)``; a method that fails gives an ``error`` row and no curves.
    """
    a, model, x, seed = setup.audit, setup.access.model, case.x, setup.seed
    base: dict[str, Any] = {"patch_id": case.patch_id, "method": method}
    try:
        values = setup.explain(method, model, x, case.target, seed)
    except Exception as err:  # AttributionError and budget errors: recorded, not fatal
        return {**base, "status": "error", "reason": str(err)}, None
    dele, ins, n_segments = deletion_insertion(case, values, segments, a.faithfulness_steps, model)
    attr = torch.from_numpy(values)[None]
    infid = infidelity_score(model, case.target, x, attr, n_samples=a.infidelity_samples, seed=seed)
    explain = batch_explainer(setup, method, case.target)
    sens = sensitivity_score(explain, x, n_samples=a.sensitivity_samples, seed=seed)
    row = {
        **base,
        "status": "ok",
        "reason": "",
        "deletion_auc": dele.auc,
        "insertion_auc": ins.auc,
        "infidelity": infid,
        "sensitivity_max": sens,
        "n_superpixels": n_segments,
    }
    curves = {
        **base,
        "fractions": dele.fractions.tolist(),
        "deletion": dele.probs.tolist(),
        "insertion": ins.probs.tolist(),
    }
    return row, curves


def run_faithfulness(
    cases: Sequence[Case], methods: Sequence[str], setup: CheckSetup
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Faithfulness rows (:data:`FAITHFULNESS_COLUMNS`) and curves per (case, method).

    Args:
        cases: Check cases (``sanity.check_cases``).
        methods: Methods to score.
        setup: Model, explainer, settings and seed.
    """
    rows, curves = [], []
    for case in cases:
        segments = superpixels(case.x[0].numpy(), setup.audit.faithfulness_superpixels)
        for method in methods:
            row, curve = method_faithfulness(case, method, segments, setup)
            rows.append(row)
            if curve is not None:
                curves.append(curve)
    return rows, curves
