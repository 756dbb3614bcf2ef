"""``predict:`` section: sliding-window inference and polygonization."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.config.base import Section


class PredictConfig(Section):
    """Sliding window, blending and thresholds.

    Attributes:
        window: Window side in pixels.
        overlap: Overlap between neighbouring windows in pixels.
        blend: Window weighting; ``hann`` hides seams.
        threshold: Probability threshold, or ``auto`` for the validation-optimal one.
        min_polygon_area_m2: Predicted polygons smaller than this are dropped.
    """

    window: int = Field(default=256, ge=32)
    overlap: int = Field(default=64, ge=0)
    blend: Literal["hann", "uniform"] = "hann"
    batch_size: int = Field(default=8, ge=1)
    threshold: float | Literal["auto"] = 0.5
    min_polygon_area_m2: float = Field(default=5000.0, ge=0)
