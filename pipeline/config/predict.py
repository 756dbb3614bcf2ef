"""``predict:`` section: sliding-window inference, polygonization and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import Section


class PredictConfig(Section):
    """Sliding window, blending, thresholds and evaluation.

    Attributes:
        window: Window side in pixels (a multiple of ``2 ** encoder_depth`` of the model).
        overlap: Overlap between neighbouring windows in pixels (less than ``window``).
        blend: Window weighting; ``hann`` (a Hann window kept above zero at the edges) hides
            seams, ``uniform`` averages.
        batch_size: Windows per forward pass; halved automatically when memory runs out.
        threshold: Probability threshold: a number, ``model`` (the one exported with the
            model, validation-optimal by default) or ``auto`` (re-derived here from the
            validation split's predictions, maximizing pixel IoU).
        min_polygon_area_m2: Predicted polygons smaller than this are dropped (and not
            counted as predicted objects).
        match_iou: A predicted object matches a label object at this IoU or more.
        device: ``auto`` (the GPU when there is one), ``cpu`` or ``cuda[:N]``.
        expected_epsg: When set, every input raster must be in this CRS.
        rasters: Extra rasters of any size (a mosaic, a whole 10980 x 10980 scene) with the
            model's bands, predicted window by window into ``predict/rasters/<stem>_*.tif`` and
            polygonized into ``<stem>_farms.gpkg``.
    """

    window: int = Field(default=256, ge=32)
    overlap: int = Field(default=64, ge=0)
    blend: Literal["hann", "uniform"] = "hann"
    batch_size: int = Field(default=8, ge=1)
    threshold: float | Literal["model", "auto"] = "model"
    min_polygon_area_m2: float = Field(default=5000.0, ge=0)
    match_iou: float = Field(default=0.5, gt=0, le=1)
    device: str = "auto"
    expected_epsg: int | None = Field(default=None, ge=1024)
    rasters: tuple[Path, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> PredictConfig:
        if self.overlap >= self.window:
            raise ValueError(
                f"predict.overlap {self.overlap} must be smaller than predict.window "
                f"{self.window}; use e.g. overlap {self.window // 4}"
            )
        if isinstance(self.threshold, float) and not 0.0 < self.threshold < 1.0:
            raise ValueError(
                f"predict.threshold {self.threshold} must be in (0, 1), 'model' or 'auto'"
            )
        return self
