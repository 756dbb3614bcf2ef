"""Sanity checks of explanations (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

A method whose maps barely change when the model's weights are re-initialized (cascading from
the output head down) or when the model is trained on shuffled labels does not explain the
model. Similarity is the Spearman rank correlation of absolute maps and SSIM of min-max scaled
absolute maps; a method *passes* when the rank correlation at the last step is below a threshold.

The checks run on a few patches (:func:`check_inputs`: patches with confirmed farms first, then
the largest farms), cropped around the farm (:func:`check_cases`); :func:`run_sanity` gives
the ``sanity.json`` payload.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from pipeline.attribution.targets import Target, patch_target, predicted_mask_target
from pipeline.audit.explainers import CheckSetup, ExplainFn
from pipeline.audit.geometry import crop_window
from pipeline.audit.model_access import ModelAccess
from pipeline.audit.patches import PatchData
from pipeline.config.audit import AuditConfig

#: Methods known to fail the randomization checks (the reference of an unfaithful method).
EXPECTED_FAILURES = ("guided_backprop",)

#: Training patches at most used to train the shuffled-label model.
MAX_TRAIN_PATCHES = 8

#: A training patch for data randomization: ``(image (C, H, W) stored DN, bands, mask (H, W))``.
TrainPair = tuple[np.ndarray, tuple[str, ...], np.ndarray]


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


# ------------------------------------------------------------------------- choosing patches
def check_patches(
    farm_masks: Mapping[tuple[str, str, str], np.ndarray], confirmed: set[str]
) -> list[tuple[str, np.ndarray]]:
    """The patches the explanation checks run on, best first, one farm mask each.

    Farms whose id is in ``confirmed`` come first, then the largest farms (pixels on the
    patch); each patch is taken once, with the mask of its first farm in that order.

    Args:
        farm_masks: ``(patch_id, target kind, target id) -> (H, W)`` bool farm masks, in the
            order the audit met them (ties keep it).
        confirmed: Target ids with a confirmed flag.

    Returns:
        ``(patch_id, farm mask)`` per patch.
    """
    ranked = sorted(
        farm_masks.items(),
        key=lambda kv: (-int(kv[0][2] in confirmed), -int(kv[1].sum())),
    )
    chosen: dict[str, np.ndarray] = {}
    for (pid, _kind, _tid), mask in ranked:
        chosen.setdefault(pid, mask)
    return list(chosen.items())


def check_inputs(
    farm_masks: Mapping[tuple[str, str, str], np.ndarray],
    flags: pd.DataFrame,
    patches: Mapping[str, PatchData],
) -> list[tuple[PatchData, np.ndarray | None]]:
    """:func:`check_patches` with the flag table's confirmed farms; every patch without a
    farm mask (``None``) when no farm was audited."""
    confirmed = set(flags.loc[flags["verdict"] == "confirmed", "target_id"])
    chosen: list[tuple[PatchData, np.ndarray | None]] = [
        (patches[pid], mask) for pid, mask in check_patches(farm_masks, confirmed)
    ]
    return chosen or [(p, None) for p in patches.values()]


def check_target(
    focus: np.ndarray, x: torch.Tensor, access: ModelAccess, *, whole_patch: bool
) -> Target:
    """The frozen target of a check crop: the whole crop, the farm, or what the model predicts.

    Args:
        focus: ``(h, w)`` bool farm (or label/prediction) pixels of the crop.
        x: ``(1, C, h, w)`` normalized crop.
        access: The model (for the predicted-mask fallback).
        whole_patch: Explain the crop's mean logit (see :func:`check_cases`).
    """
    if whole_patch:
        return patch_target(*focus.shape)
    if focus.any():
        return Target("farm", "", torch.from_numpy(np.ascontiguousarray(focus)))
    try:
        return predicted_mask_target(access.model, x, access.threshold)
    except Exception:  # AttributionError: nothing predicted in the crop
        return patch_target(*focus.shape)


def check_cases(
    cases_src: Sequence[tuple[PatchData, np.ndarray | None]],
    access: ModelAccess,
    crop: int,
    *,
    whole_patch: bool = False,
) -> list[Case]:
    """Cropped, normalized inputs with frozen targets for the explanation checks.

    Each crop is ``crop`` x ``crop`` pixels around the farm mask (else the patch's labels and
    predictions); patches whose bands differ from the model's are left out.

    ``whole_patch`` explains the crop's mean logit instead of the farm. The randomization
    checks need it: for a farm-mask target every gradient map is concentrated on the mask
    whatever the weights (a re-initialized network's too), so rank correlations stay high and
    measure the target's footprint, not the model. The crop's mean logit is the analogue of the
    whole-image class score Adebayo et al. (2018) randomize against.
    """
    out = []
    for p, tmask in cases_src:
        if p.bands != access.bands:
            continue
        focus = tmask if tmask is not None and tmask.any() else p.predicted | p.labels
        win = crop_window(focus, crop)
        x = access.normalize(p.image[:, win[0], win[1]].astype(np.float32)[None])
        target = check_target(focus[win], x, access, whole_patch=whole_patch)
        out.append(Case(p.patch_id, x, target))
    return out


def train_arrays(
    pairs: Iterable[TrainPair], access: ModelAccess, crop: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Training crops and label masks for data randomization.

    Args:
        pairs: Training patches (:func:`pipeline.audit.patches.read_train_pairs`); those whose
            bands differ from the model's are left out.
        access: The model (bands and normalization).
        crop: Side of each crop (pixels), centred on the label.

    Returns:
        ``(images (N, C, crop, crop) normalized, masks (N, crop, crop) 0/1)``, or ``None``
        when no pair is usable.
    """
    xs, ys = [], []
    for image, bands, mask in pairs:
        if bands != access.bands:
            continue
        win = crop_window(mask.astype(bool), crop)
        xs.append(access.normalize(image[:, win[0], win[1]].astype(np.float32)))
        ys.append(torch.from_numpy(mask[win].astype(np.float32)))
    if not xs:
        return None
    return torch.stack(xs), torch.stack(ys)


# ----------------------------------------------------------------------------- sanity.json
def sanity_header(cases: Sequence[Case], audit: AuditConfig) -> dict[str, Any]:
    """The settings part of ``sanity.json``: methods, patches, criterion."""
    return {
        "methods": list(audit.sanity_methods),
        "patches": [c.patch_id for c in cases],
        "crop": audit.sanity_crop,
        "max_similarity": audit.max_similarity,
        "expected_failures": list(EXPECTED_FAILURES),
        "criterion": "pass when the Spearman rank correlation of |maps| at the last step "
        f"is below {audit.max_similarity}",
    }


def originals_or_errors(
    setup: CheckSetup, methods: Sequence[str], cases: Sequence[Case]
) -> tuple[dict[tuple[str, str], np.ndarray], dict[str, str]]:
    """:func:`original_maps` per method; a method that cannot run here is recorded, not fatal.

    Returns:
        ``(original maps of the methods that ran, method -> error message)``.
    """
    errors: dict[str, str] = {}
    originals: dict[tuple[str, str], np.ndarray] = {}
    for m in methods:
        try:
            originals |= original_maps(setup.explain, setup.access.model, [m], cases, setup.seed)
        except Exception as err:  # AttributionError, budget errors
            errors[m] = str(err)
    return originals, errors


def data_randomization_section(
    setup: CheckSetup,
    methods: Sequence[str],
    cases: Sequence[Case],
    originals: dict[tuple[str, str], np.ndarray],
    train_pairs: Iterable[TrainPair],
) -> dict[str, Any]:
    """The ``data_randomization`` entry of ``sanity.json`` (or why it was skipped)."""
    a = setup.audit
    if not a.data_randomization_steps:
        return {"skipped": "disabled (audit.data_randomization_steps = 0)"}
    data = train_arrays(train_pairs, setup.access, a.sanity_crop)
    if data is None:
        return {"skipped": "no training patches with masks found"}
    model = setup.access.model
    shuffled, loss = train_shuffled(model, *data, steps=a.data_randomization_steps, seed=setup.seed)
    for prm in shuffled.parameters():
        prm.requires_grad_(False)
    return {
        "steps": a.data_randomization_steps,
        "train_patches": int(data[0].shape[0]),
        "final_loss": loss,
        "methods": data_randomization(
            setup.explain,
            model,
            shuffled,
            methods,
            cases,
            seed=setup.seed,
            max_similarity=a.max_similarity,
            originals=originals,
        ),
    }


def run_sanity(
    cases: Sequence[Case], setup: CheckSetup, train_pairs: Iterable[TrainPair]
) -> dict[str, Any]:
    """The ``sanity.json`` payload: model randomization, then data randomization.

    Args:
        cases: :func:`check_cases` (``whole_patch=True``).
        setup: Model, explainer, settings and seed.
        train_pairs: Training patches; iterated only when data randomization runs (a lazy
            :func:`pipeline.audit.patches.read_train_pairs` reads nothing otherwise).

    Returns:
        :func:`sanity_header` with ``skipped`` when there is no case or method, else with
        ``errors`` (methods that could not run, left out of ``methods``),
        ``model_randomization`` and ``data_randomization``.
    """
    payload = sanity_header(cases, setup.audit)
    if not cases or not payload["methods"]:
        payload["skipped"] = "no patch usable for the checks" if not cases else "no methods"
        return payload
    originals, errors = originals_or_errors(setup, payload["methods"], cases)
    methods = [m for m in payload["methods"] if m not in errors]
    payload["methods"], payload["errors"] = methods, errors
    payload["model_randomization"] = model_randomization(
        setup.explain,
        setup.access.model,
        methods,
        cases,
        steps=setup.audit.cascade_steps,
        seed=setup.seed,
        max_similarity=setup.audit.max_similarity,
        originals=originals,
    )
    payload["data_randomization"] = data_randomization_section(
        setup, methods, cases, originals, train_pairs
    )
    return payload
