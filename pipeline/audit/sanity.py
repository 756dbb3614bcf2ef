"""Sanity checks of explanations (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

A method whose maps barely change when the model's weights are re-initialized (cascading from
the output head down) or when the model is trained on shuffled labels does not explain the
model. Similarity is the Spearman rank correlation of absolute maps and SSIM of min-max scaled
absolute maps; a method *passes* when the rank correlation at the last step is below a threshold.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from pipeline.attribution.targets import Target
from pipeline.audit.explainers import ExplainFn


def abs_map(values: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` attribution -> ``(H, W)`` channel-max of absolute values."""
    return (
        np.abs(np.nan_to_num(values, nan=0.0)).max(axis=0)
        if values.ndim == 3
        else np.abs(np.nan_to_num(values, nan=0.0))
    )


def spearman_abs(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of ``|a|`` and ``|b|`` (same shape; -1..1).

    A constant map has no ranking: the correlation is then 0 (nothing of ``a`` survives).
    """
    x, y = np.abs(np.ravel(a)), np.abs(np.ravel(b))
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def ssim_abs(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (scikit-image) of ``|a|`` and ``|b|``, each min-max scaled to 0-1 (2-D maps)."""

    def scale(m: np.ndarray) -> np.ndarray:
        m = np.abs(m).astype(np.float64)
        span = np.ptp(m)
        return (m - m.min()) / span if span > 0 else np.zeros_like(m)

    a2, b2 = scale(a), scale(b)
    win = min(7, *a2.shape)
    win -= 1 - win % 2  # odd
    return float(structural_similarity(a2, b2, data_range=1.0, win_size=max(win, 3)))


def cascade_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules with their own parameters, from the output head down (reverse registration)."""
    layers = [
        (name, m)
        for name, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False))
    ]
    return layers[::-1]


def reinit_(module: nn.Module, seed: int) -> None:
    """Re-initialize ``module``'s own parameters (its ``reset_parameters`` or N(0, 0.02))."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
        else:
            for p in module.parameters(recurse=False):
                nn.init.normal_(p, 0.0, 0.02)


def randomization_cascade(
    model: nn.Module, steps: int, seed: int
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(label, model)`` after each of ``steps`` cumulative re-initializations.

    The layers (:func:`cascade_layers`) are cut into ``steps`` groups from the head down; step k
    has the first k groups re-initialized. The yielded model is one copy mutated in place (use
    it before advancing); ``model`` itself is untouched. The label names the deepest layer
    re-initialized so far.
    """
    rand = copy.deepcopy(model).eval()
    layers = cascade_layers(rand)
    if not layers:
        return
    steps = min(steps, len(layers))
    cuts = np.linspace(0, len(layers), steps + 1).round().astype(int)
    for k in range(steps):
        for j in range(cuts[k], cuts[k + 1]):
            reinit_(layers[j][1], seed * 100_003 + j)
        yield layers[cuts[k + 1] - 1][0] or "(root)", rand


@dataclass(frozen=True)
class Case:
    """One input of the checks: normalized ``x`` (1, C, H, W) and a frozen target."""

    patch_id: str
    x: torch.Tensor
    target: Target


def _similarity(
    explain: ExplainFn,
    method: str,
    model: nn.Module,
    cases: Sequence[Case],
    originals: dict[tuple[str, str], np.ndarray],
    seed: int,
) -> tuple[float, float]:
    rho, ssim = [], []
    for case in cases:
        new = abs_map(explain(method, model, case.x, case.target, seed))
        old = originals[(method, case.patch_id)]
        rho.append(spearman_abs(old, new))
        ssim.append(ssim_abs(old, new))
    return float(np.mean(rho)), float(np.mean(ssim))


def original_maps(
    explain: ExplainFn, model: nn.Module, methods: Sequence[str], cases: Sequence[Case], seed: int
) -> dict[tuple[str, str], np.ndarray]:
    """``(method, patch_id) -> (H, W)`` absolute channel-max maps of the trained model."""
    return {
        (m, c.patch_id): abs_map(explain(m, model, c.x, c.target, seed))
        for m in methods
        for c in cases
    }


def model_randomization(
    explain: ExplainFn,
    model: nn.Module,
    methods: Sequence[str],
    cases: Sequence[Case],
    *,
    steps: int,
    seed: int,
    max_similarity: float,
    originals: dict[tuple[str, str], np.ndarray] | None = None,
) -> dict[str, object]:
    """Cascading model randomization.

    Returns:
        ``{"steps": [layer labels], "methods": {method: {"spearman": [per step],
        "ssim": [per step], "pass": bool}}}``; values are means over ``cases``.
    """
    originals = originals or original_maps(explain, model, methods, cases, seed)
    labels: list[str] = []
    per: dict[str, dict[str, list[float]]] = {m: {"spearman": [], "ssim": []} for m in methods}
    for label, rand in randomization_cascade(model, steps, seed):
        labels.append(label)
        for m in methods:
            rho, ssim = _similarity(explain, m, rand, cases, originals, seed)
            per[m]["spearman"].append(rho)
            per[m]["ssim"].append(ssim)
    out = {
        m: {**v, "pass": bool(v["spearman"] and v["spearman"][-1] < max_similarity)}
        for m, v in per.items()
    }
    return {"steps": labels, "methods": out}


def shuffle_labels(masks: torch.Tensor, seed: int) -> torch.Tensor:
    """Pair every image with another image's mask (a seeded derangement when N > 1)."""
    n = masks.shape[0]
    if n < 2:
        gen = torch.Generator().manual_seed(seed)
        return masks.flatten(1)[:, torch.randperm(masks[0].numel(), generator=gen)].view_as(masks)
    shift = int(np.random.default_rng(seed).integers(1, n))
    return torch.roll(masks, shifts=shift, dims=0)


def train_shuffled(
    model: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    steps: int,
    seed: int,
    lr: float = 1e-3,
    batch_size: int = 4,
) -> tuple[nn.Module, float]:
    """Re-initialize a copy of ``model`` and train it on shuffled labels.

    Args:
        model: The trained model (copied; untouched).
        images: ``(N, C, H, W)`` normalized inputs.
        masks: ``(N, H, W)`` 0/1 labels; shuffled across images before training.
        steps: Adam steps.
        seed: Seeds init, shuffling and batches.

    Returns:
        ``(model in eval mode, last loss)``.
    """
    rand = copy.deepcopy(model)
    for j, (_, layer) in enumerate(cascade_layers(rand)):
        reinit_(layer, seed * 100_003 + j)
    for prm in rand.parameters():
        prm.requires_grad_(True)
    target = shuffle_labels(masks.float(), seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(rand.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    rand.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (min(batch_size, images.shape[0]),), generator=gen)
        opt.zero_grad()
        loss = loss_fn(rand(images[idx])[:, 0], target[idx])
        loss.backward()
        opt.step()
    return rand.eval(), float(loss.detach())


def data_randomization(
    explain: ExplainFn,
    model: nn.Module,
    shuffled: nn.Module,
    methods: Sequence[str],
    cases: Sequence[Case],
    *,
    seed: int,
    max_similarity: float,
    originals: dict[tuple[str, str], np.ndarray] | None = None,
) -> dict[str, dict[str, float | bool]]:
    """Compare maps of ``model`` with those of the shuffled-label model ``shuffled``.

    Returns:
        ``{method: {"spearman": float, "ssim": float, "pass": bool}}`` (means over cases).
    """
    originals = originals or original_maps(explain, model, methods, cases, seed)
    out: dict[str, dict[str, float | bool]] = {}
    for m in methods:
        rho, ssim = _similarity(explain, m, shuffled, cases, originals, seed)
        out[m] = {"spearman": rho, "ssim": ssim, "pass": bool(rho < max_similarity)}
    return out
