"""Predicting rasters beyond the tiles index (``predict.rasters``): probability, mask, farms.

A :class:`PredictJob` holds what every prediction of a run shares (the model wrapper, the
window settings, the expected CRS, the tags); :func:`predict_scene` runs it over one raster
of any size and writes the three outputs :class:`~pipeline.paths.RunPaths` names for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS

from pipeline.errors import RasterError
from pipeline.geo.raster import read_raster
from pipeline.geo.styles import mask_style, probability_style, write_style
from pipeline.model.polygons import mask_to_polygons, to_wgs84, write_polygons
from pipeline.model.scoring import ScoringRules
from pipeline.model.window import (
    Predictor,
    RasterPrediction,
    WindowSpec,
    predict_raster,
    threshold_raster,
)
from pipeline.paths import RunPaths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictJob:
    """What every prediction of a run shares.

    Attributes:
        predictor: The model behind its batching and out-of-memory guard.
        spec: Window, overlap, blend and batch size.
        expected_crs: Refuse rasters in another CRS (``None``: any CRS).
        tags: Written into every probability raster.
    """

    predictor: Predictor
    spec: WindowSpec
    expected_crs: CRS | None = None
    tags: dict[str, Any] = field(default_factory=dict)

    def probability(self, src: Path, dst: Path) -> RasterPrediction:
        """Write the probability COG of ``src`` to ``dst`` (see :func:`predict_raster`) and
        its QGIS style."""
        info = predict_raster(
            src, dst, self.predictor, self.spec, expected_crs=self.expected_crs, tags=self.tags
        )
        write_style(dst, probability_style())
        return info

    @staticmethod
    def mask(prob: Path, dst: Path, threshold: float) -> int:
        """Write the mask COG of probability raster ``prob`` (see :func:`threshold_raster`) and
        its QGIS style; returns its positive pixels."""
        positives = threshold_raster(prob, dst, threshold)
        write_style(dst, mask_style("farm (predicted)"))
        return positives


def predict_scene(src: Path, paths: RunPaths, job: PredictJob, rules: ScoringRules) -> int:
    """Probability, mask and farm polygons (EPSG:4326) of one extra raster.

    Args:
        src: A 10-band uint16 raster in the model's band order.
        paths: Where the outputs go (``raster_probability/raster_mask/raster_farms(src.stem)``).
        job: The run's prediction settings.
        rules: Threshold and minimum polygon area.

    Returns:
        Number of predicted farm polygons.

    Raises:
        RasterError: the raster is missing or unreadable (names the config key to fix).
    """
    if not src.is_file():
        raise RasterError(
            f"predict.rasters lists {src}, which does not exist; fix the path or remove it"
        )
    prob_path, mask_path = paths.raster_probability(src.stem), paths.raster_mask(src.stem)
    info = job.probability(src, prob_path)
    job.mask(prob_path, mask_path, rules.threshold)
    prob, grid, _ = read_raster(prob_path)
    pred = np.nan_to_num(prob[0], nan=0.0) >= rules.threshold
    polys, _ = mask_to_polygons(
        pred, grid, patch_id=src.stem, prob=prob[0], min_area_m2=rules.min_area_m2
    )
    write_polygons(to_wgs84([polys]), paths.raster_farms(src.stem), "farms")
    log.info("predicted %s: %d windows, %d farm polygons", src, info.windows, len(polys))
    return len(polys)
