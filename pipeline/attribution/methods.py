"""Attribution methods behind one signature, and :func:`explain`, the one entry point.

Every method is ``fn(forward, x, *, cfg, ctx) -> Tensor (1, C, H, W)`` where ``forward`` is a
:class:`~pipeline.attribution.targets.TargetForward` (the model's logits reduced over a frozen
target mask), ``x`` the normalized input and ``ctx`` a :class:`MethodContext` through which the
method reports its baseline, parameters, aggregation rule and whether its values should add up
to ``f(x) - f(x')`` (completeness / efficiency). Captum does the work inside.

Values are in logit units (the target's reduction) per element of the normalized input.
Perturbation methods over groups of elements (superpixels, bands) spread each group's value
evenly over its elements, so the map sums to the sum of the group values and the attribution
mass inside any region is meaningful.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pipeline.attribution.baselines import make_baseline
from pipeline.attribution.lshapley import lshapley_values
from pipeline.attribution.shapley import CoalitionGame, exact_shapley, spread_over_players
from pipeline.attribution.superpixels import (
    adjacency,
    check_superpixels,
    k_hop_neighbourhoods,
    slic_superpixels,
)
from pipeline.attribution.targets import Target, TargetForward
from pipeline.bands import BAND_GROUPS, BANDS
from pipeline.config.attribute import AttributeConfig
from pipeline.errors import AttributionError

Reduction = Literal["max_abs", "sum", "sum_abs"]


@dataclass
class MethodContext:
    """What a method may read (model, seed, superpixels) and what it reports back.

    Attributes:
        model: The bare model (for layer methods such as Grad-CAM).
        seed: Seed of every random draw of the method.
        superpixels: ``(H, W)`` int labels, or ``None`` to compute SLIC on demand.
        baseline: Set by the method: the reference input ``x'`` it used, ``(1, C, H, W)``.
        baseline_name: Set by the method: ``zeros``, ``median`` or ``blur``.
        complete: Set by the method: its values should sum to ``f(x) - f(x')``.
        reduction: Set by the method: how to reduce bands to the aggregate map.
        params: Set by the method: parameters for the tags.
    """

    model: nn.Module
    seed: int
    superpixels: np.ndarray | None = None
    baseline: torch.Tensor | None = None
    baseline_name: str | None = None
    complete: bool = False
    reduction: Reduction = "max_abs"
    params: dict[str, Any] = field(default_factory=dict)

    def segments(self, x: torch.Tensor, cfg: AttributeConfig) -> np.ndarray:
        """The superpixels of ``x`` (computed once with SLIC when none were given)."""
        if self.superpixels is None:
            self.superpixels = slic_superpixels(x, cfg.n_superpixels, cfg.slic_compactness)
            self.params["slic_compactness"] = cfg.slic_compactness
        self.superpixels = check_superpixels(self.superpixels, (x.shape[-2], x.shape[-1]))
        self.params["n_superpixels"] = int(self.superpixels.max()) + 1
        return self.superpixels

    def use_baseline(self, name: str, x: torch.Tensor, cfg: AttributeConfig) -> torch.Tensor:
        self.baseline_name = name
        self.baseline = make_baseline(name, x, blur_sigma=cfg.blur_sigma)
        if name == "blur":
            self.params["blur_sigma"] = cfg.blur_sigma
        return self.baseline


class MethodFn(Protocol):
    def __call__(
        self, forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, ctx: MethodContext
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class AttributionResult:
    """One attribution of one target.

    Attributes:
        values: ``(C, H, W)`` float32 per-band attribution, on CPU.
        aggregate: ``(H, W)`` the reduced map (channel-max ``|grad|`` for saliency, the signed
            band sum for additive methods).
        method: Method name (a key of :data:`METHODS`).
        target: What was explained.
        score: ``f(x)``, the target's value on the input (logit units).
        baseline_score: ``f(x')`` on the method's baseline, or ``None`` without a baseline.
        completeness_gap: ``|sum(values) - (f(x) - f(x'))|`` for methods whose values should
            add up (IG, Shapley family), else ``None``.
        params: Method parameters (steps, budget, baseline, reduction, ...), for tags.
    """

    values: torch.Tensor
    aggregate: torch.Tensor
    method: str
    target: Target
    score: float
    baseline_score: float | None
    completeness_gap: float | None
    params: dict[str, Any]

    @property
    def gap_ratio(self) -> float | None:
        """Completeness gap over ``|f(x) - f(x')|`` (``None`` where undefined)."""
        if self.completeness_gap is None or self.baseline_score is None:
            return None
        return self.completeness_gap / max(abs(self.score - self.baseline_score), 1e-12)


def reduce_channels(attr: torch.Tensor, how: Reduction) -> torch.Tensor:
    """Reduce the band axis (``-3``) of ``(C, H, W)`` or ``(B, C, H, W)`` attributions.

    ``max_abs``: ``max_j |a_j|`` (the channel-max saliency map M(x)); ``sum``: signed total
    (additive methods); ``sum_abs``: ``sum_j |a_j|``.

    Raises:
        AttributionError: unknown reduction or fewer than 3 dimensions.
    """
    if attr.ndim < 3:
        raise AttributionError(
            f"reduce_channels needs (C, H, W) or (B, C, H, W), got {tuple(attr.shape)}"
        )
    if how == "max_abs":
        return attr.abs().amax(dim=-3)
    if how == "sum":
        return attr.sum(dim=-3)
    if how == "sum_abs":
        return attr.abs().sum(dim=-3)
    raise AttributionError(f"unknown reduction {how!r}; use max_abs, sum or sum_abs")


@contextmanager
def _no_inplace_relu(model: nn.Module) -> Iterator[None]:
    """Temporarily turn in-place ReLUs off (captum's backward hooks cannot see through them)."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU) and m.inplace]
    for m in relus:
        m.inplace = False
    try:
        yield
    finally:
        for m in relus:
            m.inplace = True


# gradient methods --------------------------------------------------------------------------
def saliency(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, ctx: MethodContext
) -> torch.Tensor:
    """Per-band ``|d f / d x|``; aggregate M(x) = max over bands."""
    from captum.attr import Saliency

    ctx.reduction = "max_abs"
    return Saliency(forward).attribute(x, abs=True)


def input_x_gradient(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, ctx: MethodContext
) -> torch.Tensor:
    """``x * d f / d x`` (signed; aggregate = band sum)."""
    from captum.attr import InputXGradient

    ctx.reduction = "sum"
    return InputXGradient(forward).attribute(x)


def integrated_gradients(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, ctx: MethodContext
) -> torch.Tensor:
    """Integrated Gradients (Gauss-Legendre), ``cfg.ig_steps`` steps in batches of
    ``cfg.batch_size``; baseline ``cfg.ig_baseline``. Values sum to ``f(x) - f(x')``."""
    from captum.attr import IntegratedGradients

    baseline = ctx.use_baseline(cfg.ig_baseline, x, cfg)
    ctx.complete, ctx.reduction = True, "sum"
    ctx.params.update(
        steps=cfg.ig_steps, internal_batch_size=cfg.batch_size, integration="gausslegendre"
    )
    return IntegratedGradients(forward).attribute(
        x, baselines=baseline, n_steps=cfg.ig_steps, internal_batch_size=cfg.batch_size
    )


def smoothgrad(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, ctx: MethodContext
) -> torch.Tensor:
    """SmoothGrad: the gradient averaged over Gaussian-noised copies of ``x`` (NoiseTunnel)."""
    from captum.attr import NoiseTunnel, Saliency

    ctx.reduction = "max_abs"
    ctx.params.update(samples=cfg.smoothgrad_samples, stdev=cfg.smoothgrad_stdev)
    return NoiseTunnel(Saliency(forward)).attribute(
        x,
        nt_type="smoothgrad",
        nt_samples=cfg.smoothgrad_samples,
        nt_samples_batch_size=cfg.batch_size,
        stdevs=cfg.smoothgrad_stdev,
        abs=False,
    )


def guided_backprop(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, ctx: MethodContext
) -> torch.Tensor:
    """Guided backpropagation. Known to be insensitive to the model's weights (Adebayo et al.
    2018); kept as the unfaithful comparison for the sanity checks."""
    from captum.attr import GuidedBackprop

    ctx.reduction = "max_abs"
    with _no_inplace_relu(forward):
        return GuidedBackprop(forward).attribute(x)


def _resolve_layer(model: nn.Module, path: str) -> nn.Module:
    if path == "auto":
        blocks = getattr(getattr(model, "decoder", None), "blocks", None)
        if isinstance(blocks, nn.ModuleList) and len(blocks) >= 2:
            return blocks[-2]
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise AttributionError(
                "gradcam: the model has no Conv2d layer; set "
                "attribute.gradcam_layer to a module path"
            )
        return convs[-1]
    module: nn.Module = model
    for part in path.split("."):
        try:
            module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part)  # type: ignore[index]
        except (AttributeError, IndexError, TypeError) as err:
            names = [n for n, _ in model.named_modules() if n][:30]
            raise AttributionError(
                f"attribute.gradcam_layer = {path!r}: no module {part!r} there. Valid paths "
                f"include {', '.join(names)}; or use 'auto'"
            ) from err
    return module


def gradcam(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, ctx: MethodContext
) -> torch.Tensor:
    """Grad-CAM on a decoder layer (ReLU applied), bilinearly upsampled to the patch and
    repeated over the bands (Grad-CAM has no per-band information)."""
    from captum.attr import LayerAttribution, LayerGradCam

    layer = _resolve_layer(forward.model, cfg.gradcam_layer)
    ctx.reduction = "sum"
    ctx.params.update(layer=cfg.gradcam_layer, per_band=False)
    with _no_inplace_relu(forward):
        cam = LayerGradCam(forward, layer).attribute(x, relu_attributions=True)
    cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return (cam / x.shape[1]).expand_as(x).contiguous()


# perturbation methods ----------------------------------------------------------------------
def occlusion(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, ctx: MethodContext
) -> torch.Tensor:
    """Occlusion: ``f(x) - f(x with a window at the median baseline)``, averaged over the
    windows covering each pixel; the value is spread evenly over the bands."""
    from captum.attr import Occlusion

    baseline = ctx.use_baseline("median", x, cfg)
    c = x.shape[1]
    ctx.reduction = "sum"
    ctx.params.update(window=cfg.occlusion_window, stride=cfg.occlusion_stride, per_band=False)
    window = min(cfg.occlusion_window, *x.shape[-2:])
    stride = min(cfg.occlusion_stride, window)
    attr = Occlusion(forward).attribute(
        x,
        sliding_window_shapes=(c, window, window),
        strides=(c, stride, stride),
        baselines=baseline,
        perturbations_per_eval=cfg.batch_size,
    )
    return attr / c


class _WeightedLeastSquares:
    """Captum interpretable model: exact weighted least squares with intercept (no sklearn)."""

    def __init__(self) -> None:
        self.weight: torch.Tensor | None = None

    def fit(self, train_data: DataLoader, **kwargs: Any) -> dict[str, float]:
        xs, ys, ws = zip(*[(b[0], b[1], b[2]) for b in train_data], strict=True)
        a = torch.cat(xs).double().reshape(-1, xs[0].shape[-1])
        y = torch.cat(ys).double().reshape(-1, 1)
        w = torch.cat(ws).double().reshape(-1, 1).sqrt()
        design = torch.cat([a, torch.ones_like(y)], dim=1)
        solution = torch.linalg.lstsq(design * w, y * w, driver="gelsd").solution
        self.weight = solution[:-1, 0][None].float()
        return {}

    def representation(self) -> torch.Tensor:
        if self.weight is None:
            raise AttributionError("kernel_shap: the linear model was never fitted")
        return self.weight


def _superpixel_mask(x: torch.Tensor, cfg: AttributeConfig, ctx: MethodContext) -> torch.Tensor:
    labels = ctx.segments(x, cfg)
    return torch.as_tensor(labels, device=x.device)[None, None]


def _to_density(attr: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Captum repeats a group's value on every element; divide by the group's element count."""
    full = mask.expand_as(attr)
    counts = torch.bincount(full.reshape(-1)).to(attr.dtype)
    return attr / counts[full]


def kernel_shap(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, ctx: MethodContext
) -> torch.Tensor:
    """KernelShap over SLIC superpixels (median baseline), ``cfg.shap_samples`` coalitions
    (the full and empty ones included) fitted by exact weighted least squares.

    Raises:
        AttributionError: the budget is below ``n_superpixels + 2`` (underdetermined fit).
    """
    from captum.attr import KernelShap

    mask = _superpixel_mask(x, cfg, ctx)
    n = int(mask.max()) + 1
    if cfg.shap_samples < n + 2:
        raise AttributionError(
            f"kernel_shap: attribute.shap_samples = {cfg.shap_samples} is too small for {n} "
            f"superpixels (a fit needs at least {n + 2}, a useful one ~10x). Raise "
            "attribute.shap_samples or lower attribute.n_superpixels"
        )
    baseline = ctx.use_baseline("median", x, cfg)
    ctx.complete, ctx.reduction = True, "sum"
    ctx.params.update(samples=cfg.shap_samples, per_band=False)
    explainer = KernelShap(forward)
    explainer.interpretable_model = _WeightedLeastSquares()  # type: ignore[assignment]
    attr = explainer.attribute(
        x,
        baselines=baseline,
        feature_mask=mask,
        n_samples=cfg.shap_samples,
        perturbations_per_eval=cfg.batch_size,
    )
    return _to_density(attr, mask)


def shapley_sampling(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, ctx: MethodContext
) -> torch.Tensor:
    """ShapleyValueSampling over SLIC superpixels (median baseline); the budget buys
    ``shap_samples // (n + 1)`` random permutations.

    Raises:
        AttributionError: the budget does not buy one permutation.
    """
    from captum.attr import ShapleyValueSampling

    mask = _superpixel_mask(x, cfg, ctx)
    n = int(mask.max()) + 1
    permutations = cfg.shap_samples // (n + 1)
    if permutations < 1:
        raise AttributionError(
            f"shapley_sampling: attribute.shap_samples = {cfg.shap_samples} does not buy one "
            f"permutation of {n} superpixels ({n + 1} evaluations). Raise "
            "attribute.shap_samples or lower attribute.n_superpixels"
        )
    baseline = ctx.use_baseline("median", x, cfg)
    ctx.complete, ctx.reduction = True, "sum"
    ctx.params.update(samples=cfg.shap_samples, permutations=permutations, per_band=False)
    attr = ShapleyValueSampling(forward).attribute(
        x,
        baselines=baseline,
        feature_mask=mask,
        n_samples=permutations,
        perturbations_per_eval=cfg.batch_size,
    )
    return _to_density(attr, mask)


def band_players(
    groups: Literal["bands", "groups"], n_bands: int
) -> tuple[list[str], torch.Tensor]:
    """Player names and the ``(C, 1, 1)`` player id of each band.

    Raises:
        AttributionError: band groups asked for an input that is not :data:`BANDS`.
    """
    if groups == "bands":
        names = list(BANDS) if n_bands == len(BANDS) else [f"band{i}" for i in range(n_bands)]
        return names, torch.arange(n_bands)[:, None, None]
    if n_bands != len(BANDS):
        raise AttributionError(
            f"band groups need the {len(BANDS)} bands {', '.join(BANDS)}; "
            f"the input has {n_bands}. Set attribute.band_players: bands"
        )
    names = list(BAND_GROUPS)
    ids = [next(g for g, name in enumerate(names) if band in BAND_GROUPS[name]) for band in BANDS]
    return names, torch.tensor(ids)[:, None, None]


def band_shapley(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, ctx: MethodContext
) -> torch.Tensor:
    """Exact Shapley values of the bands (or band groups): all ``2^n`` coalitions of bands,
    absent bands at their scene median over the whole patch. Each band's value is spread
    evenly over its pixels, so a band's map sums to its Shapley value."""
    baseline = ctx.use_baseline("median", x, cfg)
    names, index = band_players(cfg.band_players, x.shape[1])
    game = CoalitionGame(forward, x, baseline, index, cfg.batch_size)
    phi = exact_shapley(game)
    ctx.complete, ctx.reduction = True, "sum"
    ctx.params.update(
        players=cfg.band_players,
        evaluations=game.n_evaluations,
        spatial=False,
        shapley={name: float(v) for name, v in zip(names, phi, strict=True)},
    )
    phi_t = torch.as_tensor(phi, dtype=x.dtype, device=x.device)
    return spread_over_players(phi_t, index.to(x.device), (x.shape[1], x.shape[2], x.shape[3]))


def lshapley(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, ctx: MethodContext
) -> torch.Tensor:
    """L-Shapley over SLIC superpixels and their ``cfg.lshapley_hops``-hop neighbourhoods
    (see :mod:`pipeline.attribution.lshapley`); median baseline."""
    labels = ctx.segments(x, cfg)
    baseline = ctx.use_baseline("median", x, cfg)
    index = torch.as_tensor(labels, device=x.device)[None]
    game = CoalitionGame(forward, x, baseline, index, cfg.batch_size)
    hoods = k_hop_neighbourhoods(adjacency(labels), cfg.lshapley_hops)
    phi, stats = lshapley_values(
        game,
        hoods,
        max_exact=cfg.lshapley_max_exact,
        permutations=cfg.lshapley_permutations,
        seed=ctx.seed,
    )
    ctx.complete = all(len(h) == len(hoods) for h in hoods)  # efficiency only on the full graph
    ctx.reduction = "sum"
    ctx.params.update(
        hops=cfg.lshapley_hops,
        max_exact=cfg.lshapley_max_exact,
        permutations=cfg.lshapley_permutations,
        per_band=False,
        max_neighbourhood=max(len(h) for h in hoods),
        **stats,
    )
    phi_t = torch.as_tensor(phi, dtype=x.dtype, device=x.device)
    return spread_over_players(phi_t, index, (x.shape[1], x.shape[2], x.shape[3]))


METHODS: dict[str, MethodFn] = {
    "saliency": saliency,
    "input_x_gradient": input_x_gradient,
    "integrated_gradients": integrated_gradients,
    "smoothgrad": smoothgrad,
    "kernel_shap": kernel_shap,
    "shapley_sampling": shapley_sampling,
    "band_shapley": band_shapley,
    "occlusion": occlusion,
    "gradcam": gradcam,
    "guided_backprop": guided_backprop,
    "lshapley": lshapley,
}


def _check_inputs(method: str, x: torch.Tensor, target: Target) -> MethodFn:
    if method not in METHODS:
        raise AttributionError(
            f"unknown attribution method {method!r}; choose one of "
            f"{', '.join(sorted(METHODS))} (attribute.methods)"
        )
    if x.ndim != 4 or x.shape[0] != 1:
        raise AttributionError(
            f"explain needs one normalized patch of shape (1, C, H, W), got "
            f"{tuple(x.shape)}; add a batch axis with x[None]"
        )
    if tuple(target.mask.shape) != tuple(x.shape[-2:]):
        raise AttributionError(
            f"target {target.name}/{target.target_id} has a {tuple(target.mask.shape)} mask but "
            f"the patch is {tuple(x.shape[-2:])}; build the target on the patch grid"
        )
    return METHODS[method]


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def explain(
    method: str,
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    cfg: AttributeConfig,
    *,
    seed: int,
    superpixels: np.ndarray | None = None,
) -> AttributionResult:
    """Explain ``target`` of ``model`` at ``x`` with ``method``.

    Args:
        method: A key of :data:`METHODS`.
        model: Emits logits ``(B, 1, H, W)`` from normalized input; eval mode; on ``x``'s device.
        x: ``(1, C, H, W)`` normalized input (see :func:`pipeline.model.io.normalize`).
        target: The frozen region whose logits are reduced to a scalar.
        cfg: Budgets and baselines.
        seed: Seeds every random draw (SHAP sampling, SmoothGrad noise, L-Shapley orders).
        superpixels: ``(H, W)`` integer labels for the superpixel methods (SLIC when ``None``).

    Returns:
        An :class:`AttributionResult` with values on CPU.

    Raises:
        AttributionError: unknown method, wrong shapes, a budget too small for the feature
            count, or non-finite attributions.
    """
    fn = _check_inputs(method, x, target)
    forward = TargetForward(model, target).to(x.device)
    ctx = MethodContext(model=model, seed=seed, superpixels=superpixels)
    with _seeded(seed, x.device), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
        warnings.filterwarnings("ignore", message=".*Setting backward hooks on ReLU.*")
        attr = fn(forward, x.detach(), cfg=cfg, ctx=ctx)
    attr = attr.detach().to(torch.float32)
    if not bool(torch.isfinite(attr).all()):
        raise AttributionError(
            f"{method} produced non-finite attributions for target "
            f"{target.name}/{target.target_id}; check the input for NaN"
        )
    with torch.no_grad():
        score = float(forward(x)[0])
        baseline_score = float(forward(ctx.baseline)[0]) if ctx.baseline is not None else None
    gap = None
    if ctx.complete and baseline_score is not None:
        gap = abs(float(attr.double().sum()) - (score - baseline_score))
    params = dict(
        ctx.params,
        reduction=ctx.reduction,
        baseline=ctx.baseline_name,
        seed=seed,
        all_zero=not bool(attr.any()),
    )
    values = attr[0].cpu()
    return AttributionResult(
        values=values,
        aggregate=reduce_channels(values, ctx.reduction),
        method=method,
        target=target,
        score=score,
        baseline_score=baseline_score,
        completeness_gap=gap,
        params=params,
    )


__all__ = [
    "METHODS",
    "AttributionResult",
    "MethodContext",
    "MethodFn",
    "explain",
    "reduce_channels",
]
