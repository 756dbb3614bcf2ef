"""Attribution methods behind one signature, and :func:`explain`, the one entry point.

Every method is ``fn(forward, x, *, cfg, inputs) -> MethodOutput`` where ``forward`` is a
:class:`~pipeline.attribution.targets.TargetForward` (the model's logits reduced over a frozen
target mask), ``x`` the normalized input and ``inputs`` the :class:`MethodInputs` (seed, baseline,
superpixels) that :func:`explain` prepares from the method's :class:`MethodSpec`. The fixed facts
of a method (its reduction to one map, whether its values add up to ``f(x) - f(x')``, its
baseline, whether it uses superpixels, whether its map is signed) are declared once, in
:data:`METHODS`; a call returns only per-call values (the attribution and its parameters).
Captum does the work inside.

Values are in logit units (the target's reduction) per element of the normalized input.
Perturbation methods over groups of elements (superpixels, bands) spread each group's value
evenly over its elements, so the map sums to the sum of the group values and the attribution
mass inside any region is meaningful.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pipeline.attribution.baselines import make_baseline
from pipeline.attribution.lshapley import lshapley_values
from pipeline.attribution.shapley import CoalitionGame, exact_shapley, spread_over_players
from pipeline.attribution.superpixel_shap import superpixel_shapley
from pipeline.attribution.superpixels import (
    adjacency,
    check_superpixels,
    k_hop_neighbourhoods,
    slic_superpixels,
)
from pipeline.attribution.targets import Target, TargetForward
from pipeline.attribution.temporal import TemporalReference
from pipeline.bands import BAND_GROUPS, BANDS
from pipeline.config.attribute import AttributeConfig
from pipeline.errors import AttributionError

Reduction = Literal["max_abs", "sum", "sum_abs"]
#: ``configured``: the baseline named by ``attribute.ig_baseline``.
BaselineRule = Literal["median", "configured"]
#: ``always``: values add up to ``f(x) - f(x')``; ``never``; ``whole_graph``: only when every
#: superpixel's neighbourhood is the whole superpixel graph (see :attr:`MethodOutput.whole_graph`).
Completeness = Literal["always", "never", "whole_graph"]


@dataclass(frozen=True)
class MethodInputs:
    """What a method reads besides the forward, the input and the config.

    Attributes:
        seed: Seed of every random draw of the method (already applied to torch's generator).
        baseline: The reference input ``x'`` ``(1, C, H, W)`` of the method's
            :attr:`MethodSpec.baseline`, or ``None`` for methods without one.
        superpixels: ``(H, W)`` int labels ``0..n-1`` for superpixel methods, else ``None``.
    """

    seed: int
    baseline: torch.Tensor | None = None
    superpixels: np.ndarray | None = None

    def need_baseline(self, method: str) -> torch.Tensor:
        """The baseline; raises for a method registered without one.

        Raises:
            AttributionError: no baseline was prepared (a registry error).
        """
        if self.baseline is None:
            raise AttributionError(f"{method}: no baseline; declare one in METHODS[{method!r}]")
        return self.baseline

    def need_superpixels(self, method: str) -> np.ndarray:
        """The superpixels; raises for a method registered without them.

        Raises:
            AttributionError: no superpixels were prepared (a registry error).
        """
        if self.superpixels is None:
            raise AttributionError(
                f"{method}: no superpixels; declare superpixels=True in METHODS[{method!r}]"
            )
        return self.superpixels


@dataclass(frozen=True)
class MethodOutput:
    """What one call of a method returns.

    Attributes:
        values: ``(1, C, H, W)`` attribution of every input element (logit units).
        params: Per-call parameters for the raster tags (steps, budgets, counts).
        whole_graph: For :attr:`MethodSpec.complete` ``whole_graph``: every neighbourhood
            was the whole graph in this call, so the values add up.
        std_error: ``(H, W)`` standard error of the aggregate map (same units), for
            estimators that have one; ``None`` otherwise.
    """

    values: torch.Tensor
    params: dict[str, Any] = field(default_factory=dict)
    whole_graph: bool = False
    std_error: torch.Tensor | None = None


class MethodFn(Protocol):
    def __call__(
        self, forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, inputs: MethodInputs
    ) -> MethodOutput: ...


@dataclass(frozen=True)
class MethodSpec:
    """An attribution method and its fixed properties, declared once in :data:`METHODS`.

    Attributes:
        fn: The method.
        reduction: How its bands reduce to the aggregate map (:func:`reduce_channels`).
        complete: Whether its values add up to ``f(x) - f(x')`` (completeness / efficiency);
            a completeness gap is measured only then.
        baseline: The reference input it perturbs towards, or ``None`` (gradient methods).
        superpixels: Whether its players are SLIC superpixels.
        signed: Whether the aggregate map's sign means something (diverging colour map);
            unsigned maps are non-negative.
        temporal: Whether ``attribute.baseline: temporal`` replaces its baseline with the
            patch on a cue-free date (:mod:`pipeline.attribution.temporal`).
    """

    fn: MethodFn
    reduction: Reduction
    complete: Completeness
    baseline: BaselineRule | None
    superpixels: bool
    signed: bool
    temporal: bool = False


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
        std_error: ``(H, W)`` float32 standard error of ``aggregate`` (same units) for
            estimators that report one (``superpixel_shap``: 0 where exact), else ``None``.
    """

    values: torch.Tensor
    aggregate: torch.Tensor
    method: str
    target: Target
    score: float
    baseline_score: float | None
    completeness_gap: float | None
    params: dict[str, Any]
    std_error: torch.Tensor | None = None

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
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, inputs: MethodInputs
) -> MethodOutput:
    """Per-band ``|d f / d x|``; aggregate M(x) = max over bands."""
    from captum.attr import Saliency

    return MethodOutput(Saliency(forward).attribute(x, abs=True))


def input_x_gradient(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, inputs: MethodInputs
) -> MethodOutput:
    """``x * d f / d x`` (signed; aggregate = band sum)."""
    from captum.attr import InputXGradient

    return MethodOutput(InputXGradient(forward).attribute(x))


def integrated_gradients(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, inputs: MethodInputs
) -> MethodOutput:
    """Integrated Gradients (Gauss-Legendre), ``cfg.ig_steps`` steps in batches of
    ``cfg.batch_size``; baseline ``cfg.ig_baseline``. Values sum to ``f(x) - f(x')``."""
    from captum.attr import IntegratedGradients

    values = IntegratedGradients(forward).attribute(
        x,
        baselines=inputs.need_baseline("integrated_gradients"),
        n_steps=cfg.ig_steps,
        internal_batch_size=cfg.batch_size,
    )
    params = {
        "steps": cfg.ig_steps,
        "internal_batch_size": cfg.batch_size,
        "integration": "gausslegendre",
    }
    return MethodOutput(values, params)


def smoothgrad(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, inputs: MethodInputs
) -> MethodOutput:
    """SmoothGrad: the gradient averaged over Gaussian-noised copies of ``x`` (NoiseTunnel)."""
    from captum.attr import NoiseTunnel, Saliency

    values = NoiseTunnel(Saliency(forward)).attribute(
        x,
        nt_type="smoothgrad",
        nt_samples=cfg.smoothgrad_samples,
        nt_samples_batch_size=cfg.batch_size,
        stdevs=cfg.smoothgrad_stdev,
        abs=False,
    )
    return MethodOutput(values, {"samples": cfg.smoothgrad_samples, "stdev": cfg.smoothgrad_stdev})


def guided_backprop(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, inputs: MethodInputs
) -> MethodOutput:
    """Guided backpropagation. Known to be insensitive to the model's weights (Adebayo et al.
    2018); kept as the unfaithful comparison for the sanity checks."""
    from captum.attr import GuidedBackprop

    with _no_inplace_relu(forward):
        return MethodOutput(GuidedBackprop(forward).attribute(x))


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
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, inputs: MethodInputs
) -> MethodOutput:
    """Grad-CAM on a decoder layer (ReLU applied), bilinearly upsampled to the patch and
    repeated over the bands (Grad-CAM has no per-band information)."""
    from captum.attr import LayerAttribution, LayerGradCam

    layer = _resolve_layer(forward.model, cfg.gradcam_layer)
    with _no_inplace_relu(forward):
        cam = LayerGradCam(forward, layer).attribute(x, relu_attributions=True)
    cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    values = (cam / x.shape[1]).expand_as(x).contiguous()
    return MethodOutput(values, {"layer": cfg.gradcam_layer, "per_band": False})


# perturbation methods ----------------------------------------------------------------------
def occlusion(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, inputs: MethodInputs
) -> MethodOutput:
    """Occlusion: ``f(x) - f(x with a window at the median baseline)``, averaged over the
    windows covering each pixel; the value is spread evenly over the bands."""
    from captum.attr import Occlusion

    c = x.shape[1]
    window = min(cfg.occlusion_window, *x.shape[-2:])
    stride = min(cfg.occlusion_stride, window)
    attr = Occlusion(forward).attribute(
        x,
        sliding_window_shapes=(c, window, window),
        strides=(c, stride, stride),
        baselines=inputs.need_baseline("occlusion"),
        perturbations_per_eval=cfg.batch_size,
    )
    params = {"window": cfg.occlusion_window, "stride": cfg.occlusion_stride, "per_band": False}
    return MethodOutput(attr / c, params)


class _WeightedLeastSquares:
    """Captum interpretable model: exact weighted least squares with intercept (no sklearn)."""

    def __init__(self) -> None:
        self.weight: torch.Tensor | None = None

    def fit(self, train_data: DataLoader, **kwargs: Any) -> dict[str, float]:
        xs, ys, ws = zip(*[(b[0], b[1], b[2]) for b in train_data], strict=True)
        # A small system solved on the CPU (gelsd has no CUDA kernel; captum hands the
        # coalitions and weights over on the CPU and the model outputs on the model's device).
        a = torch.cat([v.cpu() for v in xs]).double().reshape(-1, xs[0].shape[-1])
        y = torch.cat([v.cpu() for v in ys]).double().reshape(-1, 1)
        w = torch.cat([v.cpu() for v in ws]).double().reshape(-1, 1).sqrt()
        design = torch.cat([a, torch.ones_like(y)], dim=1)
        solution = torch.linalg.lstsq(design * w, y * w, driver="gelsd").solution
        self.weight = solution[:-1, 0][None].float().to(ys[0].device)
        return {}

    def representation(self) -> torch.Tensor:
        if self.weight is None:
            raise AttributionError("kernel_shap: the linear model was never fitted")
        return self.weight


def _to_density(attr: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Captum repeats a group's value on every element; divide by the group's element count."""
    full = mask.expand_as(attr)
    counts = torch.bincount(full.reshape(-1)).to(attr.dtype)
    return attr / counts[full]


def kernel_shap(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, inputs: MethodInputs
) -> MethodOutput:
    """KernelShap over SLIC superpixels (median baseline), ``cfg.shap_samples`` coalitions
    (the full and empty ones included) fitted by exact weighted least squares.

    Raises:
        AttributionError: the budget is below ``n_superpixels + 2`` (underdetermined fit).
    """
    from captum.attr import KernelShap

    mask = torch.as_tensor(inputs.need_superpixels("kernel_shap"), device=x.device)[None, None]
    n = int(mask.max()) + 1
    if cfg.shap_samples < n + 2:
        raise AttributionError(
            f"kernel_shap: attribute.shap_samples = {cfg.shap_samples} is too small for {n} "
            f"superpixels (a fit needs at least {n + 2}, a useful one ~10x). Raise "
            "attribute.shap_samples or lower attribute.n_superpixels"
        )
    explainer = KernelShap(forward)
    explainer.interpretable_model = _WeightedLeastSquares()  # type: ignore[assignment]
    attr = explainer.attribute(
        x,
        baselines=inputs.need_baseline("kernel_shap"),
        feature_mask=mask,
        n_samples=cfg.shap_samples,
        perturbations_per_eval=cfg.batch_size,
    )
    return MethodOutput(_to_density(attr, mask), {"samples": cfg.shap_samples, "per_band": False})


def shapley_sampling(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, inputs: MethodInputs
) -> MethodOutput:
    """ShapleyValueSampling over SLIC superpixels (median baseline); the budget buys
    ``shap_samples // (n + 1)`` random permutations.

    Raises:
        AttributionError: the budget does not buy one permutation.
    """
    from captum.attr import ShapleyValueSampling

    mask = torch.as_tensor(inputs.need_superpixels("shapley_sampling"), device=x.device)
    mask = mask[None, None]
    n = int(mask.max()) + 1
    permutations = cfg.shap_samples // (n + 1)
    if permutations < 1:
        raise AttributionError(
            f"shapley_sampling: attribute.shap_samples = {cfg.shap_samples} does not buy one "
            f"permutation of {n} superpixels ({n + 1} evaluations). Raise "
            "attribute.shap_samples or lower attribute.n_superpixels"
        )
    attr = ShapleyValueSampling(forward).attribute(
        x,
        baselines=inputs.need_baseline("shapley_sampling"),
        feature_mask=mask,
        n_samples=permutations,
        perturbations_per_eval=cfg.batch_size,
    )
    params = {"samples": cfg.shap_samples, "permutations": permutations, "per_band": False}
    return MethodOutput(_to_density(attr, mask), params)


def superpixel_shap(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, inputs: MethodInputs
) -> MethodOutput:
    """Shapley values of SLIC superpixels (median baseline) within ``cfg.shap_samples``
    evaluations: exact by enumeration when ``2^n`` fits, else antithetic permutation sampling
    with efficiency kept (:mod:`pipeline.attribution.superpixel_shap`). Also returns each
    superpixel's standard error spread over its pixels like its value (aggregate-map units).

    Raises:
        AttributionError: the budget buys neither all coalitions nor two permutation pairs.
    """
    labels = inputs.need_superpixels("superpixel_shap")
    index = torch.as_tensor(labels, device=x.device)[None]
    baseline = inputs.need_baseline("superpixel_shap")
    game = CoalitionGame(forward, x, baseline, index, cfg.batch_size)
    estimate = superpixel_shapley(game, cfg.shap_samples, seed=inputs.seed)
    phi = torch.as_tensor(estimate.values, dtype=torch.float64, device=x.device)
    error = torch.as_tensor(estimate.std_error, dtype=torch.float64, device=x.device)
    values = spread_over_players(phi, index, (x.shape[1], x.shape[2], x.shape[3]))
    std_error = spread_over_players(error, index, (1, x.shape[2], x.shape[3]))[0, 0]
    params = {**estimate.tags(cfg.shap_samples), "per_band": False}
    return MethodOutput(values, params, std_error=std_error.to(torch.float32))


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
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, inputs: MethodInputs
) -> MethodOutput:
    """Exact Shapley values of the bands (or band groups): all ``2^n`` coalitions of bands,
    absent bands at their scene median over the whole patch. Each band's value is spread
    evenly over its pixels, so a band's map sums to its Shapley value."""
    names, index = band_players(cfg.band_players, x.shape[1])
    baseline = inputs.need_baseline("band_shapley")
    game = CoalitionGame(forward, x, baseline, index, cfg.batch_size)
    phi = exact_shapley(game)
    params = {
        "players": cfg.band_players,
        "evaluations": game.n_evaluations,
        "spatial": False,
        "shapley": {name: float(v) for name, v in zip(names, phi, strict=True)},
    }
    phi_t = torch.as_tensor(phi, dtype=x.dtype, device=x.device)
    shape = (x.shape[1], x.shape[2], x.shape[3])
    return MethodOutput(spread_over_players(phi_t, index.to(x.device), shape), params)


def lshapley(
    forward: TargetForward, x: torch.Tensor, *, cfg: AttributeConfig, inputs: MethodInputs
) -> MethodOutput:
    """L-Shapley over SLIC superpixels and their ``cfg.lshapley_hops``-hop neighbourhoods
    (see :mod:`pipeline.attribution.lshapley`); median baseline. Efficiency holds only when
    every neighbourhood is the whole graph (then L-Shapley is the Shapley value)."""
    labels = inputs.need_superpixels("lshapley")
    index = torch.as_tensor(labels, device=x.device)[None]
    game = CoalitionGame(forward, x, inputs.need_baseline("lshapley"), index, cfg.batch_size)
    hoods = k_hop_neighbourhoods(adjacency(labels), cfg.lshapley_hops)
    phi, stats = lshapley_values(
        game,
        hoods,
        max_exact=cfg.lshapley_max_exact,
        permutations=cfg.lshapley_permutations,
        seed=inputs.seed,
    )
    params = {
        "hops": cfg.lshapley_hops,
        "max_exact": cfg.lshapley_max_exact,
        "permutations": cfg.lshapley_permutations,
        "per_band": False,
        "max_neighbourhood": max(len(h) for h in hoods),
        **stats,
    }
    phi_t = torch.as_tensor(phi, dtype=x.dtype, device=x.device)
    values = spread_over_players(phi_t, index, (x.shape[1], x.shape[2], x.shape[3]))
    return MethodOutput(values, params, whole_graph=all(len(h) == len(hoods) for h in hoods))


#: Every method with its fixed properties; ``attribute.methods`` names keys of this mapping.
METHODS: dict[str, MethodSpec] = {
    "saliency": MethodSpec(saliency, "max_abs", "never", None, False, False),
    "input_x_gradient": MethodSpec(input_x_gradient, "sum", "never", None, False, True),
    "integrated_gradients": MethodSpec(
        integrated_gradients, "sum", "always", "configured", False, True, temporal=True
    ),
    "smoothgrad": MethodSpec(smoothgrad, "max_abs", "never", None, False, False),
    "kernel_shap": MethodSpec(kernel_shap, "sum", "always", "median", True, True),
    "shapley_sampling": MethodSpec(shapley_sampling, "sum", "always", "median", True, True),
    "superpixel_shap": MethodSpec(
        superpixel_shap, "sum", "always", "median", True, True, temporal=True
    ),
    "band_shapley": MethodSpec(band_shapley, "sum", "always", "median", False, True),
    "occlusion": MethodSpec(occlusion, "sum", "never", "median", False, True),
    # Grad-CAM's map is ReLU'd (non-negative) and repeated over bands: summed, but unsigned
    "gradcam": MethodSpec(gradcam, "sum", "never", None, False, False),
    "guided_backprop": MethodSpec(guided_backprop, "max_abs", "never", None, False, False),
    "lshapley": MethodSpec(lshapley, "sum", "whole_graph", "median", True, True),
}


def superpixel_methods(methods: Iterable[str]) -> tuple[str, ...]:
    """The methods of ``methods`` whose players are superpixels (they share one SLIC)."""
    return tuple(m for m in methods if m in METHODS and METHODS[m].superpixels)


def _check_inputs(method: str, x: torch.Tensor, target: Target) -> MethodSpec:
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


def baseline_name(spec: MethodSpec, cfg: AttributeConfig) -> str | None:
    """The baseline ``spec`` uses under ``cfg`` (``zeros``, ``median``, ``blur``) or ``None``."""
    if spec.baseline == "configured":
        return cfg.ig_baseline
    return spec.baseline


def method_inputs(
    spec: MethodSpec,
    x: torch.Tensor,
    cfg: AttributeConfig,
    seed: int,
    superpixels: np.ndarray | None,
    reference: TemporalReference | None = None,
) -> tuple[MethodInputs, dict[str, Any]]:
    """The baseline and superpixels ``spec`` declares, and their parameters for the tags
    (``baseline``: the one used; with ``attribute.baseline: temporal``, ``baseline_item`` and
    ``baseline_datetime``, or ``baseline_fallback``: why the default was used instead).

    Args:
        spec: The method.
        x: ``(1, C, H, W)`` normalized input.
        cfg: Baseline blur and SLIC settings.
        seed: The method's seed.
        superpixels: ``(H, W)`` labels to use, or ``None`` to run SLIC when needed.
        reference: The patch on a cue-free date (``attribute.baseline: temporal``).

    Raises:
        AttributionError: the superpixels do not fit ``x`` or are not labels ``0..n-1``.
    """
    params: dict[str, Any] = {}
    segments = None
    if spec.superpixels:
        if superpixels is None:
            superpixels = slic_superpixels(x, cfg.n_superpixels, cfg.slic_compactness)
            params["slic_compactness"] = cfg.slic_compactness
        segments = check_superpixels(superpixels, (x.shape[-2], x.shape[-1]))
        params["n_superpixels"] = int(segments.max()) + 1
    name = baseline_name(spec, cfg)
    if spec.temporal and cfg.baseline == "temporal":
        if reference is not None and reference.x is not None:
            params.update(baseline_item=reference.item_id, baseline_datetime=reference.datetime)
            params["baseline"] = "temporal"
            return MethodInputs(seed, reference.x.to(x.device, x.dtype), segments), params
        why = reference.reason if reference is not None else "no temporal reference was loaded"
        params["baseline_fallback"] = f"{name} instead of temporal: {why}"
    baseline = None if name is None else make_baseline(name, x, blur_sigma=cfg.blur_sigma)
    if name == "blur":
        params["blur_sigma"] = cfg.blur_sigma
    params["baseline"] = name
    return MethodInputs(seed, baseline, segments), params


def is_complete(spec: MethodSpec, output: MethodOutput) -> bool:
    """Whether this call's values should add up to ``f(x) - f(x')``."""
    return spec.complete == "always" or (spec.complete == "whole_graph" and output.whole_graph)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _run_method(
    spec: MethodSpec,
    forward: TargetForward,
    x: torch.Tensor,
    cfg: AttributeConfig,
    inputs: MethodInputs,
) -> MethodOutput:
    """Call the method seeded, with captum's harmless warnings silenced; values float32."""
    with _seeded(inputs.seed, x.device), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
        warnings.filterwarnings("ignore", message=".*Setting backward hooks on ReLU.*")
        out = spec.fn(forward, x.detach(), cfg=cfg, inputs=inputs)
    return replace(out, values=out.values.detach().to(torch.float32))


def _finite(attr: torch.Tensor, method: str, target: Target) -> torch.Tensor:
    if not bool(torch.isfinite(attr).all()):
        raise AttributionError(
            f"{method} produced non-finite attributions for target "
            f"{target.name}/{target.target_id}; check the input for NaN"
        )
    return attr


def _scores(
    forward: TargetForward, x: torch.Tensor, baseline: torch.Tensor | None
) -> tuple[float, float | None]:
    """``f(x)`` and ``f(x')`` (``None`` without a baseline), logit units."""
    with torch.no_grad():
        score = float(forward(x)[0])
        return score, None if baseline is None else float(forward(baseline)[0])


def explain(
    method: str,
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    cfg: AttributeConfig,
    *,
    seed: int,
    superpixels: np.ndarray | None = None,
    reference: TemporalReference | None = None,
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
        reference: The patch on a cue-free date, the baseline of the methods declared
            ``temporal`` under ``attribute.baseline: temporal``.

    Returns:
        An :class:`AttributionResult` with values on CPU.

    Raises:
        AttributionError: unknown method, wrong shapes, a budget too small for the feature
            count, or non-finite attributions.
    """
    spec = _check_inputs(method, x, target)
    forward = TargetForward(model, target).to(x.device)
    inputs, input_params = method_inputs(spec, x.detach(), cfg, seed, superpixels, reference)
    out = _run_method(spec, forward, x, cfg, inputs)
    attr = _finite(out.values, method, target)
    score, baseline_score = _scores(forward, x, inputs.baseline)
    gap = None
    if is_complete(spec, out) and baseline_score is not None:
        gap = abs(float(attr.double().sum()) - (score - baseline_score))
    params = {
        **input_params,
        **out.params,
        "reduction": spec.reduction,
        "baseline": input_params["baseline"],
        "seed": seed,
        "all_zero": not bool(attr.any()),
    }
    values = attr[0].cpu()
    std_error = None if out.std_error is None else out.std_error.detach().float().cpu()
    return AttributionResult(
        values=values,
        aggregate=reduce_channels(values, spec.reduction),
        method=method,
        target=target,
        score=score,
        baseline_score=baseline_score,
        completeness_gap=gap,
        params=params,
        std_error=std_error,
    )


__all__ = [
    "METHODS",
    "AttributionResult",
    "MethodFn",
    "MethodInputs",
    "MethodOutput",
    "MethodSpec",
    "explain",
    "reduce_channels",
    "superpixel_methods",
]
