"""``attribute:`` section: which methods explain which targets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.config.base import Section

MethodName = Literal[
    "saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "kernel_shap",
    "shapley_sampling", "band_shapley", "occlusion", "gradcam", "guided_backprop", "lshapley",
]
TargetName = Literal[
    "predicted_mask", "patch", "predicted_farms", "label_farms", "false_positives",
    "missed_farms",
]


class AttributeConfig(Section):
    """Methods, targets and budgets.

    Attributes:
        methods: Attribution methods to run (see :data:`pipeline.attribution.METHODS`).
        targets: What each attribution explains; the mask is frozen from the unperturbed input.
        ig_steps: Integrated Gradients steps (50-200 advised).
        ig_baseline: ``zeros`` (in normalized space), ``median`` (per-band scene median), ``blur``.
        n_superpixels: SLIC segment count for superpixel SHAP.
        shap_samples: KernelShap / ShapleyValueSampling budget.
        batch_size: Internal batch for IG steps and SHAP evaluations.
    """

    methods: tuple[MethodName, ...] = ("saliency",)
    targets: tuple[TargetName, ...] = ("predicted_mask",)
    ig_steps: int = Field(default=50, ge=2, le=1000)
    ig_baseline: Literal["zeros", "median", "blur"] = "zeros"
    n_superpixels: int = Field(default=64, ge=2)
    shap_samples: int = Field(default=256, ge=1)
    batch_size: int = Field(default=16, ge=1)
    buffer_m: float = Field(default=100.0, ge=0)
