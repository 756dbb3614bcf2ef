"""Attribution rasters: float32 COGs on the patch grid with the provenance in their tags."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from pipeline.attribution.methods import METHODS, AttributionResult
from pipeline.bands import BANDS
from pipeline.errors import GeoMismatchError
from pipeline.geo.raster import Grid, write_cog
from pipeline.geo.styles import attribution_style, write_style

#: Band descriptions of every attribution raster: one per input band, then the reduced map.
ATTRIBUTION_BANDS: Final[tuple[str, ...]] = (*BANDS, "aggregate")

#: Band descriptions of an attribution raster with a standard error (``superpixel_shap``): the
#: standard error of the aggregate comes before it, so the aggregate stays the last band.
STD_ERROR_BANDS: Final[tuple[str, ...]] = (*BANDS, "std_error", "aggregate")

#: Units written into every attribution raster.
UNITS: Final[str] = (
    "target logit (sum over the target mask, or mean for 'patch') per element "
    "of the normalized input"
)


def gap_flag(result: AttributionResult, tolerance: float) -> bool | None:
    """True when the completeness gap exceeds ``tolerance`` x ``|f(x) - f(x')|``."""
    ratio = result.gap_ratio
    return None if ratio is None else bool(ratio > tolerance)


def attribution_array(result: AttributionResult, valid: np.ndarray | None = None) -> np.ndarray:
    """``(C + 1, H, W)`` float32: per-band values then the aggregate (``(C + 2, H, W)`` with the
    standard error before the aggregate when the result has one); NaN where not ``valid``."""
    extra = [] if result.std_error is None else [result.std_error.numpy()[None]]
    array = np.concatenate([result.values.numpy(), *extra, result.aggregate.numpy()[None]])
    array = array.astype(np.float32)
    if valid is not None:
        array[:, ~valid] = np.nan
    return array


def band_names(n_bands: int, std_error: bool) -> tuple[str, ...]:
    """Descriptions of an attribution raster's ``n_bands`` bands (generic for other inputs)."""
    named = STD_ERROR_BANDS if std_error else ATTRIBUTION_BANDS
    if n_bands == len(named):
        return named
    tail = ["std_error", "aggregate"] if std_error else ["aggregate"]
    return tuple([f"band{i}" for i in range(n_bands - len(tail))] + tail)


def std_error_tags(result: AttributionResult) -> dict[str, str]:
    """Tags of a result with a standard error: how it was estimated and the largest error."""
    if result.std_error is None:
        return {}
    params = result.params
    return {
        "std_error_band": "std_error",
        "shapley_estimate": str(params.get("estimate", "")),
        "shapley_samples": str(params.get("samples", "")),
        "shapley_permutations": str(params.get("permutations", "")),
        "max_std_error": repr(float(params.get("max_std_error", 0.0))),
        "std_error_units": "standard error of the superpixel value, spread like the aggregate",
    }


#: Parameters of a temporal baseline (or its fallback) written as tags of their own.
BASELINE_TAGS = ("baseline_item", "baseline_datetime", "baseline_fallback")


def attribution_tags(
    result: AttributionResult,
    *,
    patch_id: str,
    model_sha256: str,
    stac_item_ids: Sequence[str],
    gap_tolerance: float,
) -> dict[str, Any]:
    """Tags of one attribution raster (JSON-encoded where not strings)."""
    params = {k: v for k, v in result.params.items() if k not in ("baseline", "reduction")}
    return {
        "patch_id": patch_id,
        "method": result.method,
        "method_params": json.dumps(params, sort_keys=True, default=str),
        "target": result.target.name,
        "target_id": result.target.target_id,
        "target_reduce": result.target.reduce,
        "target_pixels": int(result.target.mask.sum()),
        "baseline": result.params.get("baseline") or "none",
        "reduction": result.params.get("reduction", ""),
        "score": repr(result.score),
        "baseline_score": "none" if result.baseline_score is None else repr(result.baseline_score),
        "completeness_gap": (
            "none" if result.completeness_gap is None else repr(result.completeness_gap)
        ),
        "gap_flag": json.dumps(gap_flag(result, gap_tolerance)),
        "gap_tolerance": repr(gap_tolerance),
        "model_sha256": model_sha256,
        "stac_item_ids": json.dumps(list(stac_item_ids)),
        "units": UNITS,
        **{k: str(result.params[k]) for k in BASELINE_TAGS if k in result.params},
        **std_error_tags(result),
    }


def write_attribution(
    path: str | Path,
    result: AttributionResult,
    grid: Grid,
    *,
    tags: dict[str, Any],
    valid: np.ndarray | None = None,
) -> Path:
    """Write ``result`` as a float32 COG on ``grid`` (the input patch's exact grid), and beside
    it the QGIS style of its ``aggregate`` band scaled to its values.

    Bands are :data:`ATTRIBUTION_BANDS` (:data:`STD_ERROR_BANDS` for results with a standard
    error), nodata NaN (pixels outside ``valid``), overviews when
    the grid is larger than one block.

    Raises:
        GeoMismatchError: the attribution's shape is not the grid's.
    """
    if tuple(result.values.shape[-2:]) != grid.shape:
        raise GeoMismatchError(
            f"attribution of shape {tuple(result.values.shape)} does not fit "
            f"the patch grid {grid.shape}; explain the patch as read"
        )
    array = attribution_array(result, valid)
    names = band_names(array.shape[0], result.std_error is not None)
    write_cog(path, array, grid, band_names=names, nodata=float("nan"), tags=tags)
    signed = METHODS[result.method].signed if result.method in METHODS else True
    write_style(path, attribution_style(array[-1], signed=signed, band=array.shape[0]))
    return Path(path)
