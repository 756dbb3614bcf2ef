"""``attribute:`` section: which methods explain which targets, with which budgets."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import Section

#: The keys of :data:`pipeline.attribution.methods.METHODS` (the registry imports this config, so
#: the names are repeated here; a test checks both lists agree).
MethodName = Literal[
    "saliency",
    "input_x_gradient",
    "integrated_gradients",
    "smoothgrad",
    "kernel_shap",
    "shapley_sampling",
    "superpixel_shap",
    "band_shapley",
    "occlusion",
    "gradcam",
    "guided_backprop",
    "lshapley",
]
TargetName = Literal[
    "predicted_mask",
    "patch",
    "predicted_farms",
    "label_farms",
    "false_positives",
    "missed_farms",
    "mapped_farms",
]
SplitName = Literal["train", "val", "test"]


class AttributeConfig(Section):
    """Methods, targets and budgets.

    Attributes:
        methods: Attribution methods to run (see :data:`pipeline.attribution.methods.METHODS`).
        targets: What each attribution explains; the mask is frozen from the unperturbed input.
            ``mapped_farms`` explains every farm of ``map/farms.gpkg`` on the composite patch
            the map stage cut around it (``map/patches/``); those patches get no other target.
        analyst_polygons: Optional vector file (any OGR format, any CRS) of polygons to explain;
            each polygon overlapping a patch becomes a ``polygon`` target (id from an ``id``
            column when present, else ``a<row>``).
        splits: Which splits of ``tiles/index.gpkg`` to explain.
        max_patches: Explain at most this many patches (in index order); ``None`` for all.
        max_objects_per_patch: Cap on object targets (farms, FPs, ...) per patch and kind.
        max_targets: Per-method cap on targets over the whole run, e.g.
            ``{integrated_gradients: 12}``: expensive methods explain the first targets (by patch
            id) and the rest are recorded as skips; methods not named, or set to ``null`` (how
            ``--set`` lifts a cap a config file sets), are uncapped.
        ig_steps: Integrated Gradients steps (50-200 advised).
        ig_baseline: ``zeros`` (in normalized space), ``median`` (per-band scene median), ``blur``.
        blur_sigma: Gaussian sigma in pixels of the ``blur`` baseline.
        baseline: ``default``: each method's own baseline (``ig_baseline`` for Integrated
            Gradients, the median for superpixel SHAP). ``temporal``: Integrated Gradients and
            superpixel SHAP start from the same patch on a date clear of snow and cloud (one of
            its other acquisitions, ``fetch.alternates``, scaled to its radiometry); a patch
            with none falls back to the default, and the raster's tags say so
            (``baseline_fallback``).
        temporal_max_cue_share: Largest share of a patch's pixels that may be snow, cloud,
            shadow or nodata by SCL on the acquisition taken as its temporal baseline.
        gap_tolerance: Completeness gap flagged above this share of ``|f(x) - f(x')|``.
        n_superpixels: SLIC segment count for superpixel SHAP and L-Shapley.
        slic_compactness: SLIC compactness on the standardized bands.
        shap_samples: Model-evaluation budget of KernelShap / ShapleyValueSampling /
            superpixel_shap (which enumerates all coalitions when ``2^n_superpixels`` fits).
        batch_size: Internal batch for IG steps and every perturbation method.
        smoothgrad_samples: Noisy samples of SmoothGrad.
        smoothgrad_stdev: Noise standard deviation (normalized units) of SmoothGrad.
        band_players: ``bands`` (10 players) or ``groups`` (:data:`pipeline.bands.BAND_GROUPS`).
        occlusion_window: Occlusion window side in pixels.
        occlusion_stride: Occlusion stride in pixels.
        gradcam_layer: Dotted module path inside the model (negative list indices allowed), or
            ``auto`` for the second-to-last decoder block (the last conv layer otherwise).
        lshapley_hops: Neighbourhood radius ``k`` of L-Shapley in the superpixel graph.
        lshapley_max_exact: Neighbourhoods up to this many superpixels are enumerated exactly;
            larger ones are estimated with ``lshapley_permutations`` sampled permutations.
        lshapley_permutations: Permutations per superpixel for large neighbourhoods.
        buffer_m: Ring width around each farm for the per-farm mass table.
        quicklooks: Write PNG quicklooks for the report.
        max_quicklooks: At most this many quicklooks per (method, target).
        stitch: Also stitch patch-level attributions onto one grid per UTM zone.
        stitch_max_pixels: Skip (and record) a mosaic larger than this many pixels.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """

    methods: tuple[MethodName, ...] = ("saliency",)
    targets: tuple[TargetName, ...] = ("predicted_mask",)
    analyst_polygons: Path | None = None
    splits: tuple[SplitName, ...] = ("train", "val", "test")
    max_patches: int | None = Field(default=None, ge=1)
    max_objects_per_patch: int = Field(default=20, ge=1)
    max_targets: dict[MethodName, int | None] = Field(default_factory=dict)
    ig_steps: int = Field(default=50, ge=2, le=1000)
    ig_baseline: Literal["zeros", "median", "blur"] = "zeros"
    blur_sigma: float = Field(default=8.0, gt=0)
    baseline: Literal["default", "temporal"] = "default"
    temporal_max_cue_share: float = Field(default=0.01, ge=0, le=1)
    gap_tolerance: float = Field(default=0.01, gt=0)
    n_superpixels: int = Field(default=64, ge=2)
    slic_compactness: float = Field(default=1.0, gt=0)
    shap_samples: int = Field(default=256, ge=1)
    batch_size: int = Field(default=16, ge=1)
    smoothgrad_samples: int = Field(default=16, ge=1)
    smoothgrad_stdev: float = Field(default=0.15, gt=0)
    band_players: Literal["bands", "groups"] = "bands"
    occlusion_window: int = Field(default=32, ge=1)
    occlusion_stride: int = Field(default=16, ge=1)
    gradcam_layer: str = "auto"
    lshapley_hops: int = Field(default=1, ge=1)
    lshapley_max_exact: int = Field(default=8, ge=1, le=16)
    lshapley_permutations: int = Field(default=16, ge=1)
    buffer_m: float = Field(default=100.0, ge=0)
    quicklooks: bool = True
    max_quicklooks: int = Field(default=20, ge=0)
    stitch: bool = False
    stitch_max_pixels: int = Field(default=4096 * 4096, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _check(self) -> AttributeConfig:
        if self.occlusion_stride > self.occlusion_window:
            raise ValueError(
                f"attribute.occlusion_stride = {self.occlusion_stride} exceeds "
                f"attribute.occlusion_window = {self.occlusion_window}: pixels between windows "
                "would never be occluded. Set the stride to at most the window"
            )
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(
                f"attribute.methods = {list(self.methods)} repeats a method; list each method once"
            )
        return self
