"""``audit:`` section: cues, reliance thresholds, counterfactuals and explanation checks."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.attribute import MethodName
from pipeline.config.base import Section

CueName = Literal["snow", "cloud", "water"]


class AuditConfig(Section):
    """Spurious-cue audit.

    Reflectance thresholds are in reflectance units (0-1); patches store reflectance x 10000.

    Attributes:
        cues: Built-in cue masks to compute per patch (snow, cloud incl. cloud shadow, water).
        cue_files: Analyst-supplied cues: name -> GeoTIFF (non-zero = cue; reprojected nearest
            onto each patch grid) or vector file (.gpkg/.geojson/.shp polygons, rasterized).
        ndsi_threshold: NDSI = (B03 - B11) / (B03 + B11) above which a bright pixel is snow
            (used when the patch has no SCL).
        snow_nir_min: B08 reflectance a snow pixel must exceed (no-SCL test).
        snow_green_min: B03 reflectance a snow pixel must exceed (no-SCL test).
        cloud_blue_min: B02 reflectance above which a non-snow pixel is cloud (no-SCL test).
        shadow_nir_max: B08 reflectance below which a non-water pixel is cloud shadow (no-SCL).
        ndwi_threshold: NDWI = (B03 - B08) / (B03 + B08) above which a pixel is water.
        enrichment_threshold: Flag when the cue's share of positive attribution (outside farms)
            is at least this many times its share of that area.
        min_effect: ...and the cue holds at least this share of the target's whole positive
            attribution (effect size, 0-1).
        buffer_m: Ring around farms (label and predicted) excluded from "outside the farm", m.
        bootstrap: Bootstrap resamples for confidence intervals (0 disables CIs).
        ci_level: Two-sided confidence level of the intervals.
        block_px: Block size (pixels) of the spatial block bootstrap used for a farm that
            lies in a single patch.
        counterfactual_scope: Re-predict for ``flagged`` targets only, or ``all`` farm targets
            whose cue is present (for experiments).
        counterfactual_threshold: Absolute change of the target's mean probability (0-1) that
            confirms a flag.
        counterfactual_iou: ...or a predicted-mask IoU (near the target) at or below this.
        counterfactual_logit: ...or an absolute change of the target's mean logit (log-odds,
            nats) at least this: 1.0 means the cue was worth a factor e in the odds of "farm".
            Probability saturates on confident farms (0.95 -> 0.85 is a three-fold fall of
            the odds); the log-odds do not. ``.inf`` turns this test off.
        placebo_ratio: The control of each counterfactual: the same blobs are moved onto
            ordinary background at the same distance from the target (turned about its centre)
            and removed there too. A flag is confirmed only when removing the cue moves the
            target's log-odds at least this many times as much as removing the placebo does,
            so a model that reacts to any edit of its context is not taken to rely on the cue.
            0 turns the control off.
        background_radius_m: Ring around each cue blob whose non-cue pixels give the
            replacement (per-band median) in the counterfactual, m.
        temporal_counterfactual: Also confirm each flag on real background: the cue's pixels
            are replaced with the same pixels on another acquisition of the patch
            (``fetch.alternates``) where SCL shows them clear of the cue and of cloud (matched
            to the patch's radiometry per band), with the same placebo control. A farm whose
            patches have no such acquisition gets the inpainting counterfactual only, marked
            ``inpainting_only`` in ``counterfactuals``.
        temporal_min_clear: Share of the cue's pixels the other acquisition must show clear;
            the rest (at most ``1 - temporal_min_clear``) is inpainted as before.
        concepts: Concept tests (TCAV, ``audit/concepts.json``): whether the model as a whole
            uses each cue as a concept for the farm output (see :mod:`pipeline.audit.concepts`).
        concept_layers: Dotted module paths of the model's layers to test (two or more advised);
            ``auto`` takes the encoder's last two stages.
        concept_crop: Side (pixels) of every concept example and tested input crop.
        concept_examples: Crops per concept (cue crops, and each random concept's crops).
        concept_min_examples: Fewer cue crops than this and the concept is ``not_testable``.
        concept_random: Random concepts (plain background crops) to test against (>= 10).
        concept_inputs: Farm crops whose farm output is differentiated (training farms first).
        concept_alpha: Significance level of the two-sided t-test (Bonferroni over layers).
        sanity_methods: Methods checked by model/data randomization (guided backpropagation is
            the known-unfaithful reference).
        sanity_patches: Patches used by the sanity checks.
        sanity_crop: Side (pixels) of the window around the target used by sanity and
            faithfulness checks (keeps them cheap).
        cascade_steps: Steps of the model-randomization cascade (head first).
        max_similarity: A method passes a randomization test when the Spearman rank correlation
            of |maps| at the last step is below this.
        data_randomization_steps: Optimizer steps of the shuffled-label model (0 disables).
        sanity_ig_steps: Integrated Gradients steps used inside the checks.
        faithfulness_methods: Methods scored for faithfulness (empty: the attribute methods).
        faithfulness_patches: Patches used by the faithfulness scores.
        faithfulness_steps: Points on the deletion/insertion curves.
        faithfulness_superpixels: SLIC segments removed/restored by the curves.
        infidelity_samples: Perturbations for captum ``infidelity``.
        sensitivity_samples: Perturbations for captum ``sensitivity_max``.
    """

    cues: tuple[CueName, ...] = ("snow", "cloud", "water")
    cue_files: dict[str, Path] = Field(default_factory=dict)
    ndsi_threshold: float = Field(default=0.42, ge=-1, le=1)
    snow_nir_min: float = Field(default=0.11, ge=0, le=1)
    snow_green_min: float = Field(default=0.10, ge=0, le=1)
    cloud_blue_min: float = Field(default=0.20, ge=0, le=1)
    shadow_nir_max: float = Field(default=0.04, ge=0, le=1)
    ndwi_threshold: float = Field(default=0.2, ge=-1, le=1)
    enrichment_threshold: float = Field(default=2.0, gt=0)
    min_effect: float = Field(default=0.05, ge=0, le=1)
    buffer_m: float = Field(default=20.0, ge=0)
    bootstrap: int = Field(default=1000, ge=0, le=100_000)
    ci_level: float = Field(default=0.95, gt=0, lt=1)
    block_px: int = Field(default=32, ge=4)
    counterfactual_scope: Literal["flagged", "all"] = "flagged"
    counterfactual_threshold: float = Field(default=0.1, gt=0, le=1)
    counterfactual_iou: float = Field(default=0.5, ge=0, le=1)
    counterfactual_logit: float = Field(default=1.0, gt=0)
    background_radius_m: float = Field(default=100.0, gt=0)
    placebo_ratio: float = Field(default=2.0, ge=0)
    temporal_counterfactual: bool = True
    temporal_min_clear: float = Field(default=0.95, gt=0, le=1)
    concepts: bool = False
    concept_layers: tuple[str, ...] = ("auto",)
    concept_crop: int = Field(default=32, ge=16)
    concept_examples: int = Field(default=24, ge=2)
    concept_min_examples: int = Field(default=8, ge=2)
    concept_random: int = Field(default=10, ge=2)
    concept_inputs: int = Field(default=24, ge=1)
    concept_alpha: float = Field(default=0.05, gt=0, lt=1)
    sanity_methods: tuple[MethodName, ...] = (
        "saliency",
        "integrated_gradients",
        "guided_backprop",
    )
    sanity_patches: int = Field(default=2, ge=0)
    sanity_crop: int = Field(default=128, ge=16)
    cascade_steps: int = Field(default=3, ge=1)
    max_similarity: float = Field(default=0.5, gt=-1, le=1)
    data_randomization_steps: int = Field(default=30, ge=0)
    sanity_ig_steps: int = Field(default=16, ge=2, le=1000)
    faithfulness_methods: tuple[MethodName, ...] = ()
    faithfulness_patches: int = Field(default=2, ge=0)
    faithfulness_steps: int = Field(default=10, ge=2)
    faithfulness_superpixels: int = Field(default=32, ge=2)
    infidelity_samples: int = Field(default=8, ge=1)
    sensitivity_samples: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _check_cue_files(self) -> AuditConfig:
        for name, path in self.cue_files.items():
            if name in ("snow", "cloud", "water"):
                raise ValueError(
                    f"audit.cue_files key {name!r} shadows a built-in cue; "
                    "name analyst cues differently (e.g. 'analyst_snow')"
                )
            if path.suffix.lower() not in (
                ".tif",
                ".tiff",
                ".gpkg",
                ".geojson",
                ".json",
                ".shp",
                ".fgb",
            ):
                raise ValueError(
                    f"audit.cue_files[{name!r}] = {str(path)!r} is neither a "
                    "GeoTIFF nor a vector file; give a .tif or a .gpkg/.geojson"
                )
        return self
