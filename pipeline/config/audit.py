"""``audit:`` section: cues, reliance thresholds and counterfactuals."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.config.base import Section


class AuditConfig(Section):
    """Spurious-cue audit.

    Attributes:
        cues: Cue masks to compute per patch.
        ndsi_threshold: NDSI above which a bright pixel is snow (when no SCL).
        enrichment_threshold: Flag when attribution on the cue is this many times its area share.
        min_effect: ...and the cue holds at least this share of positive attribution.
        counterfactual_threshold: Relative change of the target score that confirms a flag.
        buffer_m: Ring around a farm excluded from "outside the farm".
    """

    cues: tuple[Literal["snow", "cloud", "water"], ...] = ("snow", "cloud", "water")
    ndsi_threshold: float = Field(default=0.42, ge=-1, le=1)
    enrichment_threshold: float = Field(default=2.0, gt=0)
    min_effect: float = Field(default=0.05, ge=0, le=1)
    counterfactual_threshold: float = Field(default=0.1, ge=0)
    buffer_m: float = Field(default=100.0, ge=0)
    bootstrap: int = Field(default=1000, ge=0)
